//! One customer turn: measure the message (escalation topics, a request for a human, language,
//! loops, intent), let the policy decide, and carry the decision out: clarify, collect a
//! triage detail, or retrieve, generate in full, and check grounding and confidence before a
//! word reaches the customer. Handoffs are returned to the caller, which queues them.
//!
//! The turn loop is where tool calls will slot in (between retrieval and the final answer);
//! nothing here depends on how the reply is delivered. Depends on the other agent modules and
//! the `Generator` trait; never on the engine or the API.

use std::sync::Arc;

use serde_json::json;

use super::definition::Definition;
use super::details;
use super::escalation::EscalationMatcher;
use super::generator::{Generation, GenerationError, GenerationRequest, Generator};
use super::intent::{dot, IntentError, IntentIndex, IntentMatch};
use super::memory::{Attempt, Memory, TriageProgress};
use super::policy::{self, Action, ClarifyKind, Confidence, Decision, HandoffReason, Signals};
use super::prompt::answer_prompt;
use super::retrieval::{Passage, RetrievalError, Retriever};
use super::store::{Citation, MessageRecord, UnansweredRecord};
use super::text::{self, clip, jaccard, words};

/// Near-duplicate thresholds: word-set overlap, or cosine similarity of embeddings.
const REPEAT_JACCARD: f32 = 0.8;
const REPEAT_COSINE: f32 = 0.95;
/// Earlier customer messages a new one is compared with.
const REPEAT_LOOKBACK: usize = 8;
/// Shorter messages ("ok", "yes") are never counted as repeats.
const REPEAT_MIN_WORDS: usize = 3;
/// Times an answer prompt is shortened to fit the model's context before giving up.
const FIT_ATTEMPTS: usize = 4;

/// How the agent's fixed replies begin: the policy's words, never the model's, so a transcript
/// a client sends back can be read for what the agent did.
pub const CLARIFY_SCOPE: &str = "I want to be sure I help with the right thing.";
pub const CLARIFY_GROUNDING: &str = "I couldn't find that in our help articles.";
pub const CLARIFY_CONFIDENCE: &str = "Just to be sure I answer the right question:";
pub const LANGUAGE_NOTICE: &str = "I'm sorry, I can only help in English at the moment. Could \
     you write your question in English? If you'd rather, just ask and I'll connect you with a \
     colleague.";
pub const ACKNOWLEDGEMENT: &str = "Glad that sorted it. Is there anything else I can help with?";

/// An agent ready to take turns.
pub struct AgentRuntime {
    pub def: Definition,
    /// The definition's file text, as served by the admin API.
    pub source: String,
    pub intents: IntentIndex,
    pub escalations: EscalationMatcher,
    pub retriever: Option<Arc<dyn Retriever>>,
    /// Every passage, when the agent puts its whole knowledge in the prompt.
    pub full_context: Option<Vec<Passage>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Intent(#[from] IntentError),
    #[error(transparent)]
    Retrieval(#[from] RetrievalError),
}

#[derive(Debug, Clone)]
pub struct Reply {
    /// `answer`, `clarify`, `collect`, `notice`; a handoff's reply is written by the caller.
    pub kind: &'static str,
    pub text: String,
    pub citations: Vec<Citation>,
}

/// What the model did for an answer, for the record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationInfo {
    pub model: String,
    pub num_tokens: usize,
    pub num_cached_tokens: usize,
    pub likelihood: f32,
}

pub struct TurnResult {
    pub memory: Memory,
    /// `None` when the turn ends in a handoff.
    pub reply: Option<Reply>,
    pub decisions: Vec<Decision>,
    pub handoff: Option<(HandoffReason, Decision)>,
    pub intent: Option<IntentMatch>,
    pub unanswered: Option<UnansweredRecord>,
    pub generation: Option<GenerationInfo>,
}

pub struct TurnInput<'a> {
    pub message: &'a str,
    /// The conversation so far, oldest first, without this message.
    pub history: &'a [MessageRecord],
    pub memory: Memory,
    pub now: i64,
}

struct Turn<'a> {
    rt: &'a AgentRuntime,
    generator: &'a dyn Generator,
    message: &'a str,
    history: &'a [MessageRecord],
    memory: Memory,
    decisions: Vec<Decision>,
    vector: Option<Vec<f32>>,
    intent: Option<IntentMatch>,
    now: i64,
}

pub fn run_turn(
    rt: &AgentRuntime,
    generator: &dyn Generator,
    input: TurnInput<'_>,
) -> Result<TurnResult, TurnError> {
    let mut turn = Turn {
        rt,
        generator,
        message: input.message,
        history: input.history,
        memory: input.memory,
        decisions: Vec::new(),
        vector: None,
        intent: None,
        now: input.now,
    };
    let (reply, handoff, unanswered, generation) = turn.run()?;
    Ok(TurnResult {
        memory: turn.memory,
        reply,
        decisions: turn.decisions,
        handoff,
        intent: turn.intent,
        unanswered,
        generation,
    })
}

type Outcome = (
    Option<Reply>,
    Option<(HandoffReason, Decision)>,
    Option<UnansweredRecord>,
    Option<GenerationInfo>,
);

fn handoff_outcome(reason: HandoffReason, d: Decision) -> Outcome {
    (None, Some((reason, d)), None, None)
}

impl Turn<'_> {
    fn def(&self) -> &Definition {
        &self.rt.def
    }

    fn run(&mut self) -> Result<Outcome, TurnError> {
        let signals = self.signals()?;
        self.memory.customer_turns += 1;
        for (k, v) in details::scan(self.message) {
            self.memory.details.entry(k.to_string()).or_insert(v);
        }
        let floor = *self.def().thresholds.intent_floor.get_ref();
        if let Some(i) = signals.intent.in_scope(floor) {
            let c = signals.intent.confidence();
            self.memory.note_intent(i, c);
        }
        let decision = if signals.escalation.is_none() && signals.human_request.is_none() {
            self.answer_triage_question();
            match &self.memory.triage {
                Some(t) if t.next_missing(self.def()).is_none() => {
                    Some(policy::triage_complete(&t.intent, &json!(t.collected)))
                }
                _ => None,
            }
        } else {
            None
        };
        let decision = decision
            .unwrap_or_else(|| policy::before_generation(self.def(), &self.memory, &signals));
        self.intent = Some(signals.intent.clone());
        self.act(decision)
    }

    fn signals(&mut self) -> Result<Signals, TurnError> {
        let w = words(self.message);
        self.vector = self.rt.intents.embed(self.message)?;
        let escalation = self
            .rt
            .escalations
            .check(self.message, self.vector.as_deref())?;
        let intent = self
            .rt
            .intents
            .classify(self.message, self.vector.as_deref())?;
        Ok(Signals {
            escalation,
            human_request: text::asks_for_human(&w),
            language: text::detect_language(self.message),
            not_helped: text::says_not_helped(&w),
            repeat_of: self.repeat_of(&w)?,
            confirms: text::confirms_resolution(&w),
            intent,
        })
    }

    /// The earlier customer message this one repeats, if any. Answers to a triage question
    /// are exempt: "yes" twice is not a loop.
    fn repeat_of(&self, w: &[String]) -> Result<Option<(String, f32)>, TurnError> {
        if w.len() < REPEAT_MIN_WORDS
            || self
                .memory
                .triage
                .as_ref()
                .is_some_and(|t| t.asking.is_some())
        {
            return Ok(None);
        }
        let earlier: Vec<String> = self
            .history
            .iter()
            .rev()
            .filter(|m| m.role == "customer")
            .take(REPEAT_LOOKBACK)
            .map(|m| m.text.clone())
            .collect();
        // One batch for all the earlier messages, not one forward each.
        let vectors = match &self.vector {
            Some(_) => self.rt.intents.embed_many(&earlier)?,
            None => None,
        };
        for (i, text) in earlier.iter().enumerate() {
            let j = jaccard(w, &words(text));
            if j >= REPEAT_JACCARD {
                return Ok(Some((text.clone(), j)));
            }
            if let (Some(v), Some(prev)) = (&self.vector, vectors.as_ref().and_then(|vs| vs.get(i)))
            {
                let c = dot(v, prev);
                if c >= REPEAT_COSINE {
                    return Ok(Some((text.clone(), c)));
                }
            }
        }
        Ok(None)
    }

    /// Reads this message as the answer to the triage detail asked for last.
    fn answer_triage_question(&mut self) {
        let Some(t) = self.memory.triage.as_mut() else {
            return;
        };
        let Some(asking) = t.asking.clone() else {
            return;
        };
        match details::parse(&asking, self.message) {
            Some(v) => {
                t.collected.insert(asking.clone(), v.clone());
                t.asking = None;
                t.retries = 0;
                self.memory.details.insert(asking, v);
            }
            None if t.retries >= 1 => {
                // Asked twice: the human will ask again; keep what the customer said.
                t.collected.insert(
                    asking,
                    format!("not given (\"{}\")", clip(self.message, 80)),
                );
                t.asking = None;
                t.retries = 0;
            }
            None => t.retries += 1,
        }
    }

    fn act(&mut self, d: Decision) -> Result<Outcome, TurnError> {
        let action = d.action.clone();
        match action {
            Action::Handoff { reason } => Ok(handoff_outcome(reason, d)),
            Action::Clarify { kind } => Ok(self.clarify(kind, d)),
            Action::UnsupportedLanguage { .. } => {
                self.memory.clarifications += 1;
                self.decisions.push(d);
                Ok(self.reply("notice", LANGUAGE_NOTICE.into(), Vec::new()))
            }
            Action::Acknowledge => {
                self.memory.note_confirmation();
                self.decisions.push(d);
                Ok(self.reply("notice", ACKNOWLEDGEMENT.into(), Vec::new()))
            }
            Action::Collect { intent, detail } => {
                let retry = self
                    .memory
                    .triage
                    .as_ref()
                    .is_some_and(|t| t.retries > 0 && t.intent == intent);
                let t = self.memory.triage.get_or_insert_with(|| TriageProgress {
                    intent: intent.clone(),
                    ..TriageProgress::default()
                });
                t.asking = Some(detail.clone());
                self.decisions.push(d);
                let q = details::question(&detail);
                let text = if retry {
                    format!("Sorry, I didn't catch that. {q}")
                } else if self
                    .memory
                    .triage
                    .as_ref()
                    .is_some_and(|t| t.collected.is_empty())
                {
                    format!(
                        "I can get this to the right colleague. First, a detail they'll need: {q}"
                    )
                } else {
                    format!("Thanks. {q}")
                };
                Ok(self.reply("collect", text, Vec::new()))
            }
            Action::Answer { intent } => self.answer(&intent, d),
        }
    }

    fn reply(&mut self, kind: &'static str, text: String, citations: Vec<Citation>) -> Outcome {
        self.memory.agent_replies += 1;
        (
            Some(Reply {
                kind,
                text,
                citations,
            }),
            None,
            None,
            None,
        )
    }

    fn clarify(&mut self, kind: ClarifyKind, d: Decision) -> Outcome {
        self.memory.clarifications += 1;
        let text = self.clarify_text(kind);
        let unanswered = self.unanswered(match kind {
            ClarifyKind::OutOfScope => "out_of_scope",
            ClarifyKind::NoGrounding => "no_grounding",
            ClarifyKind::LowConfidence => "low_confidence",
        });
        self.decisions.push(d);
        let (reply, _, _, _) = self.reply("clarify", text, Vec::new());
        (reply, None, Some(unanswered), None)
    }

    pub(crate) fn unanswered(&self, reason: &str) -> UnansweredRecord {
        UnansweredRecord {
            text: clip(self.message, 500),
            nearest_intent: self.intent.as_ref().and_then(|m| m.intent.clone()),
            reason: reason.to_string(),
            created_at: self.now,
            vector: self.vector.clone(),
        }
    }

    fn describe(&self, intent: &str) -> String {
        let def = self.def();
        let d = def
            .intents
            .iter()
            .find(|i| i.name.get_ref() == intent)
            .map(|i| i.description.clone())
            .or_else(|| def.triage_intent(intent).map(|t| t.description.clone()))
            .unwrap_or_default();
        if d.is_empty() {
            intent.replace('_', " ")
        } else {
            d.trim_end_matches('.').to_string()
        }
    }

    fn clarify_text(&self, kind: ClarifyKind) -> String {
        let m = self.intent.as_ref();
        match kind {
            ClarifyKind::OutOfScope => {
                let mut names: Vec<String> = Vec::new();
                for (n, _) in m.map(|m| m.neighbours.as_slice()).unwrap_or(&[]) {
                    if !names.contains(n) && names.len() < 2 {
                        names.push(n.clone());
                    }
                }
                match names.as_slice() {
                    [a, b] => format!(
                        "{CLARIFY_SCOPE} Is this about {}, or {}? A little more detail would help.",
                        self.describe(a).to_lowercase(),
                        self.describe(b).to_lowercase()
                    ),
                    _ => format!(
                        "{CLARIFY_SCOPE} Could you tell me a little more about what you need?"
                    ),
                }
            }
            ClarifyKind::NoGrounding => format!(
                "{CLARIFY_GROUNDING} Could you tell me a bit more, for example which product or \
                 which step you're stuck on?"
            ),
            ClarifyKind::LowConfidence => {
                let about = m
                    .and_then(|m| m.intent.as_deref())
                    .map(|i| self.describe(i).to_lowercase())
                    .unwrap_or_else(|| "your request".into());
                format!(
                    "{CLARIFY_CONFIDENCE} is this about {about}? Could you add a detail or two?"
                )
            }
        }
    }

    fn answer(&mut self, intent: &str, d: Decision) -> Result<Outcome, TurnError> {
        self.decisions.push(d);
        let top_k = *self.def().knowledge.top_k.get_ref();
        let searched = match &self.rt.retriever {
            Some(r) => r.search(self.message, top_k)?,
            None => Vec::new(),
        };
        let best = searched
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .map(|p| (p.score, p.title.as_str()));
        let retrieval = best.map(|b| b.0).unwrap_or(0.0);
        if let Some(g) = policy::grounding(self.def(), &self.memory, best) {
            self.decisions.pop();
            return Ok(self.redirect(g));
        }
        let passages = self
            .rt
            .full_context
            .clone()
            .unwrap_or_else(|| searched.clone());
        let generation = match self.generate(intent, passages.clone()) {
            Ok(g) => g,
            Err(e) => {
                let d = Decision {
                    action: Action::Handoff {
                        reason: HandoffReason::GenerationFailed,
                    },
                    reason: format!("no model could write the answer: {e}"),
                    detail: json!({ "error": e.to_string() }),
                };
                return Ok(handoff_outcome(HandoffReason::GenerationFailed, d));
            }
        };
        let (gen, used) = generation;
        let intent_conf = self
            .intent
            .as_ref()
            .map(IntentMatch::confidence)
            .unwrap_or(0.0);
        let confidence = Confidence::new(intent_conf, retrieval, gen.likelihood);
        let info = GenerationInfo {
            model: gen.model.clone(),
            num_tokens: gen.num_tokens,
            num_cached_tokens: gen.num_cached_tokens,
            likelihood: gen.likelihood,
        };
        if let Some(low) = policy::after_generation(self.def(), &self.memory, &confidence) {
            let mut out = self.redirect(low);
            out.3 = Some(info);
            return Ok(out);
        }
        let cited = citations(&gen.text, &used, &searched);
        self.decisions.push(Decision {
            action: Action::Answer {
                intent: intent.to_string(),
            },
            reason: format!(
                "answered with confidence {:.2} (intent {:.2}, retrieval {:.2}, likelihood {:.2})",
                confidence.combined, confidence.intent, confidence.retrieval, confidence.likelihood
            ),
            detail: json!({ "confidence": confidence, "generation": info, "citations": cited }),
        });
        self.memory.note_answer(Attempt {
            intent: intent.to_string(),
            answer: clip(&gen.text, 300),
            sources: cited.iter().map(|c| c.title.clone()).collect(),
        });
        let mut out = self.reply("answer", gen.text.trim().to_string(), cited);
        out.3 = Some(info);
        Ok(out)
    }

    /// Carries out a clarify-or-handoff decision taken after the answer path began.
    fn redirect(&mut self, d: Decision) -> Outcome {
        match d.action.clone() {
            Action::Clarify { kind } => self.clarify(kind, d),
            Action::Handoff { reason } => {
                let mut out = handoff_outcome(reason, d);
                let why = match out.1.as_ref().map(|h| &h.0) {
                    Some(HandoffReason::NoGrounding) => "no_grounding",
                    _ => "low_confidence",
                };
                out.2 = Some(self.unanswered(why));
                out
            }
            _ => (None, None, None, None),
        }
    }

    /// Generates with the routed model, then the fallbacks in order, shortening the passages
    /// when the prompt does not fit. Returns the generation and the passages its prompt held.
    fn generate(
        &self,
        intent: &str,
        mut passages: Vec<Passage>,
    ) -> Result<(Generation, Vec<Passage>), GenerationError> {
        let def = self.def();
        let mut models: Vec<Option<String>> = vec![def.model_for(Some(intent)).map(str::to_string)];
        models.extend(
            def.models
                .fallback
                .iter()
                .map(|m| Some(m.get_ref().clone())),
        );
        let max_tokens = *def.models.max_answer_tokens.get_ref();
        let mut last = GenerationError::Unavailable("no model configured".into());
        for model in models {
            for _ in 0..FIT_ATTEMPTS {
                let request = GenerationRequest {
                    model: model.clone(),
                    messages: answer_prompt(def, &passages, self.history, self.message),
                    max_tokens,
                };
                match self.generator.generate(&request) {
                    Ok(g) if !g.text.trim().is_empty() => return Ok((g, passages)),
                    Ok(_) => {
                        last = GenerationError::Failed("the model wrote an empty answer".into());
                        break;
                    }
                    Err(e @ GenerationError::TooLong { .. }) => {
                        last = e;
                        shorten(&mut passages);
                    }
                    Err(e) => {
                        last = e;
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// Halves the passages' text, keeping their order and at least the best one.
fn shorten(passages: &mut Vec<Passage>) {
    if passages.len() > 1 {
        passages.truncate(passages.len().div_ceil(2));
    } else if let Some(p) = passages.first_mut() {
        let keep = p.text.chars().count() / 2;
        p.text = p.text.chars().take(keep).collect();
    }
}

/// The passages an answer cites: those it names as `[n]`, else the best retrieved one.
fn citations(answer: &str, used: &[Passage], searched: &[Passage]) -> Vec<Citation> {
    let mut cited: Vec<Citation> = Vec::new();
    for (i, p) in used.iter().enumerate() {
        if answer.contains(&format!("[{}]", i + 1)) {
            cited.push(citation(cited.len() + 1, p));
        }
    }
    if cited.is_empty() {
        let best = searched
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .or(used.first());
        cited.extend(best.map(|p| citation(1, p)));
    }
    cited
}

fn citation(index: usize, p: &Passage) -> Citation {
    Citation {
        index,
        title: p.title.clone(),
        source: p.source.clone(),
        heading: p.heading.clone(),
        span: p.span,
        score: p.score,
    }
}
