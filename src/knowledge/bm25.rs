//! Keyword ranking: an in-memory BM25 index over one collection's chunks, and the analysis
//! that turns chunk text and questions into the same terms.
//!
//! Like the vector index, it is derived from the store: built from the chunks' text when the
//! knowledge base opens and kept in step by the same calls that add and remove vectors, so
//! SQLite stays the only thing that must survive a crash. Scoring walks the query terms'
//! posting lists into one score per chunk (term at a time), so a query that names a word in
//! every chunk costs a pass over flat arrays, not a ranking query per row.
//!
//! Owns the analysis (Unicode words, case and accents folded, English Snowball stems) and the
//! BM25 constants. Depends on nothing else in the knowledge base.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};

use rayon::prelude::*;
use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Headings count for half of body text: a document's heading path repeats on every one of
/// its chunks, so it says less about which chunk answers.
const HEADING_WEIGHT: f32 = 0.5;
/// At most this many distinct terms of a question are scored.
const MAX_QUERY_TERMS: usize = 64;
/// Removed chunks leave holes in the posting lists until this share of slots is dead.
const COMPACT_DEAD_SHARE: usize = 4;

/// English function words: they match nearly every chunk and drown the words that carry a
/// question, so questions drop them unless nothing else is left.
const STOPWORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could",
    "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "hi", "his", "how", "i",
    "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "please", "she", "so",
    "that", "the", "their", "them", "there", "they", "this", "to", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

fn stemmer() -> &'static Stemmer {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| Stemmer::create(Algorithm::English))
}

/// Lower-cased words of `text` with accents removed (`Café` → `cafe`), before stemming.
fn folded_words(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                Cow::Borrowed(w)
            } else if w.is_ascii() {
                Cow::Owned(w.to_ascii_lowercase())
            } else {
                Cow::Owned(
                    w.nfd()
                        .filter(|c| !is_combining_mark(*c))
                        .flat_map(char::to_lowercase)
                        .collect(),
                )
            }
        })
}

/// Words seen more than once keep their stem here: text repeats its words (Zipf), and the
/// stemmer is most of the cost of indexing.
const STEM_CACHE_MAX: usize = 1 << 16;

fn stem(word: &str) -> String {
    thread_local! {
        static STEMS: std::cell::RefCell<HashMap<String, String>> = Default::default();
    }
    STEMS.with_borrow_mut(|cache| {
        if let Some(s) = cache.get(word) {
            return s.clone();
        }
        let s = stemmer().stem(word).into_owned();
        if cache.len() >= STEM_CACHE_MAX {
            cache.clear();
        }
        cache.insert(word.to_string(), s.clone());
        s
    })
}

/// Index terms of `text`, in order, repeats kept.
pub fn analyze(text: &str) -> Vec<String> {
    folded_words(text).map(|w| stem(&w)).collect()
}

/// The distinct terms a question is ranked by: its content words, or every word when it has
/// nothing but function words (`Who are you?`).
pub fn query_terms(text: &str) -> Vec<String> {
    let words: Vec<Cow<str>> = folded_words(text).collect();
    let content: Vec<&Cow<str>> = words
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_ref()))
        .collect();
    let chosen = if content.is_empty() {
        words.iter().collect()
    } else {
        content
    };
    let mut seen = HashSet::new();
    chosen
        .into_iter()
        .map(|w| stem(w))
        .filter(|t| seen.insert(t.clone()))
        .take(MAX_QUERY_TERMS)
        .collect()
}

#[derive(Clone, Copy)]
struct Posting {
    slot: u32,
    text_tf: u16,
    heading_tf: u16,
}

struct Slot {
    chunk: i64,
    text_len: u32,
    heading_len: u32,
    /// The chunk's distinct term ids, to take it out of the document frequencies; empty once
    /// removed.
    terms: Box<[u32]>,
    alive: bool,
}

#[derive(Default)]
struct Inner {
    vocab: HashMap<String, u32>,
    postings: Vec<Vec<Posting>>,
    /// Live chunks holding each term.
    df: Vec<u32>,
    slots: Vec<Slot>,
    slot_of: HashMap<i64, u32>,
    live: usize,
    total_text: u64,
    total_heading: u64,
}

/// One collection's keyword index. Safe to share: searches read in parallel, changes write.
#[derive(Default)]
pub struct Bm25Index {
    inner: RwLock<Inner>,
}

impl Bm25Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of chunks indexed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().live
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes a chunk, replacing what was indexed under the same id.
    pub fn add(&self, chunk: i64, heading: &str, text: &str) {
        let heading = analyze(heading);
        let text = analyze(text);
        self.write().add(chunk, &heading, &text);
    }

    /// Indexes many chunks as (id, heading, text), analysing them in parallel.
    pub fn add_many(&self, chunks: &[(i64, String, String)]) {
        let analysed: Vec<(i64, Vec<String>, Vec<String>)> = chunks
            .par_iter()
            .map(|(id, heading, text)| (*id, analyze(heading), analyze(text)))
            .collect();
        let mut inner = self.write();
        for (id, heading, text) in analysed {
            inner.add(id, &heading, &text);
        }
    }

    pub fn remove(&self, chunk: i64) {
        let mut inner = self.write();
        inner.remove(chunk);
        if inner.slots.len() - inner.live > inner.slots.len() / COMPACT_DEAD_SHARE + 1024 {
            inner.compact();
        }
    }

    /// The best `limit` chunks for `terms` (from [`query_terms`]), best first, as (chunk id,
    /// score). Only chunks in `allowed` count when it is given.
    pub fn search(
        &self,
        terms: &[String],
        limit: usize,
        allowed: Option<&HashSet<i64>>,
    ) -> Vec<(i64, f64)> {
        self.read().search(terms, limit, allowed)
    }
}

impl Inner {
    fn term_id(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.vocab.get(term) {
            return id;
        }
        let id = self.postings.len() as u32;
        self.vocab.insert(term.to_string(), id);
        self.postings.push(Vec::new());
        self.df.push(0);
        id
    }

    fn add(&mut self, chunk: i64, heading: &[String], text: &[String]) {
        self.remove(chunk);
        let slot = self.slots.len() as u32;
        // Occurrences of each distinct term in the text and in the heading.
        let mut tfs: HashMap<u32, (u16, u16)> = HashMap::new();
        for t in text {
            let e = tfs.entry(self.term_id(t)).or_default();
            e.0 = e.0.saturating_add(1);
        }
        for t in heading {
            let e = tfs.entry(self.term_id(t)).or_default();
            e.1 = e.1.saturating_add(1);
        }
        for (&id, &(text_tf, heading_tf)) in &tfs {
            self.postings[id as usize].push(Posting {
                slot,
                text_tf,
                heading_tf,
            });
            self.df[id as usize] += 1;
        }
        self.slots.push(Slot {
            chunk,
            text_len: text.len() as u32,
            heading_len: heading.len() as u32,
            terms: tfs.keys().copied().collect(),
            alive: true,
        });
        self.slot_of.insert(chunk, slot);
        self.live += 1;
        self.total_text += text.len() as u64;
        self.total_heading += heading.len() as u64;
    }

    fn remove(&mut self, chunk: i64) {
        let Some(slot) = self.slot_of.remove(&chunk) else {
            return;
        };
        let s = &mut self.slots[slot as usize];
        s.alive = false;
        for &t in s.terms.iter() {
            self.df[t as usize] -= 1;
        }
        s.terms = Box::new([]);
        self.live -= 1;
        self.total_text -= s.text_len as u64;
        self.total_heading -= s.heading_len as u64;
    }

    /// Drops removed chunks from the posting lists and renumbers the slots densely.
    fn compact(&mut self) {
        let mut new_slot = vec![u32::MAX; self.slots.len()];
        let mut slots = Vec::with_capacity(self.live);
        for (old, s) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            if s.alive {
                new_slot[old] = slots.len() as u32;
                slots.push(s);
            }
        }
        for list in &mut self.postings {
            list.retain_mut(|p| {
                p.slot = new_slot[p.slot as usize];
                p.slot != u32::MAX
            });
        }
        self.slot_of = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.chunk, i as u32))
            .collect();
        self.slots = slots;
    }

    fn search(
        &self,
        terms: &[String],
        limit: usize,
        allowed: Option<&HashSet<i64>>,
    ) -> Vec<(i64, f64)> {
        if self.live == 0 || limit == 0 {
            return Vec::new();
        }
        let n = self.live as f32;
        let avg_text = (self.total_text as f32 / n).max(1.0);
        let avg_heading = (self.total_heading as f32 / n).max(1.0);
        let mut scores = vec![0f32; self.slots.len()];
        for term in terms {
            let Some(&id) = self.vocab.get(term.as_str()) else {
                continue;
            };
            let df = self.df[id as usize] as f32;
            if df == 0.0 {
                continue;
            }
            // The +1 keeps a word found in most chunks slightly positive instead of negative.
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for p in &self.postings[id as usize] {
                let s = &self.slots[p.slot as usize];
                if !s.alive {
                    continue;
                }
                let part = |tf: u16, len: u32, avg: f32| {
                    if tf == 0 {
                        return 0.0;
                    }
                    let tf = tf as f32;
                    tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len as f32 / avg))
                };
                scores[p.slot as usize] += idf
                    * (part(p.text_tf, s.text_len, avg_text)
                        + HEADING_WEIGHT * part(p.heading_tf, s.heading_len, avg_heading));
            }
        }
        let mut hits: Vec<(f32, i64)> = scores
            .iter()
            .enumerate()
            .filter(|(_, &score)| score > 0.0)
            .map(|(slot, &score)| (score, self.slots[slot].chunk))
            .filter(|(_, chunk)| allowed.is_none_or(|a| a.contains(chunk)))
            .collect();
        // Ties go to the older chunk, so a ranking never depends on the order of a scan.
        let order = |a: &(f32, i64), b: &(f32, i64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit - 1, order);
            hits.truncate(limit);
        }
        hits.sort_by(order);
        hits.into_iter().map(|(s, c)| (c, s as f64)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(chunks: &[(i64, &str, &str)]) -> Bm25Index {
        let index = Bm25Index::new();
        for (id, heading, text) in chunks {
            index.add(*id, heading, text);
        }
        index
    }

    fn ids(hits: &[(i64, f64)]) -> Vec<i64> {
        hits.iter().map(|h| h.0).collect()
    }

    #[test]
    fn analysis_folds_case_accents_and_inflections() {
        assert_eq!(
            analyze("Refunds REFUNDED café, naïve!"),
            ["refund", "refund", "cafe", "naiv"]
        );
        assert_eq!(query_terms(r#"How do I reset my "PIN"?"#), ["reset", "pin"]);
        assert_eq!(query_terms("Who are you?"), ["who", "are", "you"]);
        assert_eq!(query_terms("?!"), Vec::<String>::new());
    }

    #[test]
    fn rarer_and_more_frequent_terms_rank_higher() {
        let index = index(&[
            (1, "", "the card was declined at the shop"),
            (2, "", "refund refund refund for a card"),
            (3, "", "refund policy"),
            (4, "", "opening hours of the shop"),
        ]);
        let hits = index.search(&query_terms("card refund"), 10, None);
        assert_eq!(ids(&hits), [2, 3, 1]);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(
            ids(&index.search(&query_terms("card refund"), 1, None)),
            [2]
        );
    }

    #[test]
    fn headings_count_but_less_than_text() {
        let index = index(&[
            (1, "Returns", "how to send it back"),
            (2, "", "returns desk"),
        ]);
        assert_eq!(
            ids(&index.search(&query_terms("returns"), 10, None)),
            [2, 1]
        );
    }

    #[test]
    fn removed_and_replaced_chunks_leave_no_trace() {
        let index = index(&[
            (1, "", "parcel delayed"),
            (2, "", "parcel lost"),
            (3, "", "x"),
        ]);
        index.remove(2);
        assert_eq!(ids(&index.search(&query_terms("parcel"), 10, None)), [1]);
        index.add(1, "", "invoice copy");
        assert!(index.search(&query_terms("parcel"), 10, None).is_empty());
        assert_eq!(ids(&index.search(&query_terms("invoice"), 10, None)), [1]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn compaction_keeps_every_live_score() {
        let index = Bm25Index::new();
        for i in 0..3000 {
            index.add(i, "", &format!("word{} shared", i % 7));
        }
        let before = index.search(&query_terms("shared word3"), 50, None);
        for i in (0..3000).filter(|i| i % 7 != 3) {
            index.remove(i);
        }
        assert!(index.read().slots.len() < 3000, "compacted");
        let after = index.search(&query_terms("shared word3"), 50, None);
        let kept: Vec<i64> = before.iter().map(|h| h.0).filter(|i| i % 7 == 3).collect();
        assert_eq!(ids(&after)[..10], kept[..10]);
        // The same chunks with fewer neighbours: document frequencies changed, so scores did.
        assert_eq!(index.len(), 3000 / 7 + 1);
    }

    #[test]
    fn the_allow_list_filters_before_the_cut() {
        let index = index(&[(1, "", "loan loan"), (2, "", "loan"), (3, "", "loan rate")]);
        let allowed: HashSet<i64> = [3].into();
        assert_eq!(
            ids(&index.search(&query_terms("loan"), 1, Some(&allowed))),
            [3]
        );
    }
}
