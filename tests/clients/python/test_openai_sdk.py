"""Enclave through the official `openai` Python SDK: models, chat, tools, structured output,
legacy completions, errors, rate limits and the server's own extension endpoints.

The model is random noise, so every assertion is about structure, counts and determinism
(greedy at temperature 0, or a fixed seed), never about what the text says.
"""

from __future__ import annotations

import json
import math
import time
from typing import Literal

import openai
import pytest
from pydantic import BaseModel

from conftest import assert_openai_error_body

FINISH_REASONS = {"stop", "length"}


# ---------------------------------------------------------------------------------------------
# helpers


def chat(client: openai.OpenAI, model: str, text: str = "Say something.", **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def assert_usage(usage, *, max_completion: int | None = None) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens >= 0
    if max_completion is not None:
        assert usage.completion_tokens <= max_completion
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def collect_chat_stream(stream):
    """All chunks of a chat stream, the concatenated content of choice 0, and its finish reason."""
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return chunks, text, reasons


# A function tool whose arguments are fully constrained by its schema.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome"]},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
# Room for the constrained arguments (about 30 tokens with a byte-level tokenizer) and any
# wrapping the server's tool-call format adds.
TOOL_MAX_TOKENS = 256


def assert_weather_arguments(arguments: str) -> dict:
    args = json.loads(arguments)
    assert isinstance(args, dict), arguments
    assert set(args) == {"city", "unit"}, args  # required both, additionalProperties false
    assert args["city"] in ("Paris", "Rome"), args
    assert args["unit"] in ("c", "f"), args
    return args


def forced_weather_call(client, model, **kw):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice=FORCE_WEATHER,
        max_tokens=TOOL_MAX_TOKENS,
        temperature=0,
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# models


def test_models_list_contains_the_model(client, model):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert model in ids, ids
    for m in page.data:
        assert m.object == "model"
        assert isinstance(m.owned_by, str)
        assert isinstance(m.created, int)


def test_models_retrieve(client, model):
    m = client.models.retrieve(model)
    assert m.id == model
    assert m.object == "model"


# ---------------------------------------------------------------------------------------------
# chat completions


def test_chat_plain(client, model):
    r = chat(client, model, "Hello!", max_tokens=8)
    assert r.object == "chat.completion"
    assert isinstance(r.id, str) and r.id
    assert isinstance(r.created, int)
    assert r.model == model
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.refusal is None
    assert not choice.message.tool_calls
    assert choice.finish_reason in FINISH_REASONS
    assert_usage(r.usage, max_completion=8)


def test_chat_with_system_and_multi_turn(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again?"},
        ],
        max_tokens=8,
    )
    assert r.choices[0].message.role == "assistant"
    assert_usage(r.usage, max_completion=8)


def test_chat_content_parts(client, model):
    """Text content given as a list of parts is accepted like a plain string."""
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": parts}], max_tokens=8, temperature=0
    )
    assert isinstance(r.choices[0].message.content, str)


def test_chat_max_completion_tokens(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello!"}],
        max_completion_tokens=8,
    )
    assert r.choices[0].finish_reason in FINISH_REASONS
    assert_usage(r.usage, max_completion=8)


def test_chat_ignore_eos_generates_exactly_max_tokens(client, model):
    r = chat(client, model, max_tokens=10, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 10
    assert r.choices[0].finish_reason == "length"


def test_chat_stream_matches_non_streamed_greedy(client, model):
    kw = dict(max_tokens=16, temperature=0)
    full = chat(client, model, "Tell me a story.", **kw)
    stream = chat(
        client, model, "Tell me a story.", stream=True, stream_options={"include_usage": True}, **kw
    )
    chunks, text, reasons = collect_chat_stream(stream)

    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, {c.id for c in chunks}
    assert all(c.model == model for c in chunks)

    with_choices = [c for c in chunks if c.choices]
    assert with_choices, "no chunk carried a choice"
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].index == 0 for c in with_choices)

    # Greedy decoding is deterministic: the stream spells out exactly the non-streamed text.
    assert text == full.choices[0].message.content
    assert reasons == [full.choices[0].finish_reason], reasons

    # include_usage: one final chunk with no choices and the usage; none before it.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert_usage(last.usage, max_completion=16)
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_has_no_usage_chunk(client, model):
    chunks, _, reasons = collect_chat_stream(chat(client, model, max_tokens=4, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert len(reasons) == 1 and reasons[0] in FINISH_REASONS


def test_chat_n2(client, model):
    r = chat(client, model, max_tokens=8, n=2, temperature=1.0)
    assert sorted(c.index for c in r.choices) == [0, 1]
    for c in r.choices:
        assert c.message.role == "assistant"
        assert isinstance(c.message.content, str)
        assert c.finish_reason in FINISH_REASONS
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_logprobs(client, model):
    r = chat(
        client,
        model,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = r.choices[0].logprobs.content
    assert content is not None
    assert len(content) == r.usage.completion_tokens == 8  # one entry per generated token
    for entry in content:
        assert isinstance(entry.token, str)
        assert entry.logprob <= 0.0
        assert len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True), tops
        assert all(t <= 0.0 for t in tops)
        # Greedy picks the most likely token: it is among the top logprobs (the first, unless
        # ignore_eos masks an end-of-sequence token that would have ranked first).
        assert any(math.isclose(entry.logprob, t, abs_tol=1e-4) for t in tops), (entry, tops)


def test_chat_without_logprobs_has_none(client, model):
    r = chat(client, model, max_tokens=4)
    assert r.choices[0].logprobs is None


def test_chat_seed_reproducible(client, model):
    kw = dict(max_tokens=16, temperature=1.0, seed=42)
    a = chat(client, model, "Pick words at random.", **kw).choices[0].message.content
    b = chat(client, model, "Pick words at random.", **kw).choices[0].message.content
    assert a == b
    # Seed 43 usually differs, but a 16-token sample may collide by chance: only exercise it.
    chat(client, model, "Pick words at random.", max_tokens=16, temperature=1.0, seed=43)


def test_chat_seed_reproducible_with_n2(client, model):
    kw = dict(max_tokens=16, temperature=1.0, seed=42, n=2)

    def texts():
        r = chat(client, model, "Pick words at random.", **kw)
        return [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]

    first = texts()
    assert len(first) == 2
    assert texts() == first


def test_chat_stop_strings_never_in_content(client, model):
    stops = ["a", "e", "o", " "]
    for seed in range(3):
        r = chat(client, model, max_tokens=16, temperature=1.0, seed=seed, stop=stops)
        content = r.choices[0].message.content
        assert not any(s in content for s in stops), (content, stops)
        assert r.choices[0].finish_reason in FINISH_REASONS


def test_chat_stop_single_string(client, model):
    r = chat(client, model, max_tokens=16, temperature=1.0, seed=7, stop="e")
    assert "e" not in r.choices[0].message.content


def test_chat_stop_string_is_hit_deterministically(client, model):
    """Greedy output is known in advance, so a stop string taken from it must end the next run
    right before its first occurrence, with finish_reason "stop"."""
    kw = dict(max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    for prompt in ("Tell me a story.", "Write a poem.", "List some fruit.", "Count to ten."):
        full = chat(client, model, prompt, **kw).choices[0].message.content
        # A printable ASCII character whose first occurrence is not at the very start.
        stop = next(
            (
                ch
                for ch in full
                if ch.isascii() and ch.isprintable() and not ch.isspace() and full.index(ch) >= 1
            ),
            None,
        )
        if stop is None:
            continue
        r = chat(client, model, prompt, stop=[stop, "zzzz-never-zzzz"], **kw)
        assert r.choices[0].finish_reason == "stop", (full, stop, r.choices[0])
        assert r.choices[0].message.content == full[: full.index(stop)], (full, stop)
        return
    pytest.skip("greedy outputs had no printable ASCII character to use as a stop string")


@pytest.mark.parametrize(
    "extra",
    [
        {"top_k": 5},
        {"min_p": 0.1},
        {"repetition_penalty": 1.1},
        {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05},
    ],
    ids=["top_k", "min_p", "repetition_penalty", "all"],
)
def test_chat_extension_sampling_params(client, model, extra):
    r = chat(client, model, max_tokens=8, temperature=0.8, extra_body=extra)
    assert r.choices[0].message.role == "assistant"
    assert_usage(r.usage, max_completion=8)


def test_chat_standard_sampling_params(client, model):
    r = chat(
        client,
        model,
        max_tokens=8,
        temperature=0.7,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"65": 5},
        user="client-tests",
    )
    assert r.choices[0].finish_reason in FINISH_REASONS


LONG_WORDS = (
    "the quick brown fox jumps over the lazy dog while seven wise owls watch from an old oak "
    "tree and count the stars one by one until dawn breaks over the quiet hills"
).split()


def test_chat_prefix_cache_reports_cached_tokens(client, model):
    # About 300 words, unique to this test so no other test warmed the cache with them.
    text = "Cache test. " + " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(300))
    first = chat(client, model, text, max_tokens=1, temperature=0)
    second = chat(client, model, text, max_tokens=1, temperature=0)
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    details = second.usage.prompt_tokens_details
    assert details is not None, second.usage
    assert details.cached_tokens is not None and details.cached_tokens > 0, second.usage
    assert details.cached_tokens <= second.usage.prompt_tokens


# ---------------------------------------------------------------------------------------------
# tools


def test_tool_call_forced_by_name(client, model):
    r = forced_weather_call(client, model)
    choice = r.choices[0]
    # OpenAI answers a *named* tool_choice with "stop"; Enclave says "tool_calls". Both are fine.
    assert choice.finish_reason in ("stop", "tool_calls"), choice
    calls = choice.message.tool_calls
    assert calls, choice.message
    call = calls[0]
    assert isinstance(call.id, str) and call.id
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert_weather_arguments(call.function.arguments)


def test_tool_call_forced_streamed(client, model):
    full = forced_weather_call(client, model)
    stream = forced_weather_call(client, model, stream=True)

    calls: dict[int, dict] = {}
    reasons = []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for ch in chunk.choices:
            if ch.finish_reason:
                reasons.append(ch.finish_reason)
            for tc in ch.delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    c["id"] = tc.id
                if tc.function is not None:
                    c["name"] += tc.function.name or ""
                    c["arguments"] += tc.function.arguments or ""

    assert sorted(calls) == list(range(len(calls))) and calls, calls
    call = calls[0]
    assert call["id"], call
    assert call["name"] == "get_weather", call
    args = assert_weather_arguments(call["arguments"])
    # Greedy and constrained: the streamed call has the non-streamed call's arguments.
    assert args == json.loads(full.choices[0].message.tool_calls[0].function.arguments)
    assert len(reasons) == 1 and reasons[0] in ("stop", "tool_calls"), reasons


def test_tool_choice_required(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather or time in Rome?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        max_tokens=TOOL_MAX_TOKENS,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and len(calls) >= 1, choice.message
    for call in calls:
        assert call.type == "function"
        assert isinstance(call.id, str) and call.id
        assert call.function.name in ("get_weather", "get_time"), call
        assert isinstance(json.loads(call.function.arguments), dict)
    assert len({c.id for c in calls}) == len(calls), "tool call ids must be unique"


def test_tool_result_round_trip(client, model):
    question = {"role": "user", "content": "What is the weather like in Paris?"}
    call = forced_weather_call(client, model).choices[0].message.tool_calls[0]
    r = client.chat.completions.create(
        model=model,
        messages=[
            question,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ],
        tools=[WEATHER_TOOL],
        max_tokens=8,
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert_usage(r.usage)


def test_tool_choice_unknown_function_is_rejected(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            max_tokens=8,
        )
    assert_openai_error_body(e.value.response, 400)


def test_tool_choice_none_gives_text(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_tokens=8,
    )
    assert not r.choices[0].message.tool_calls
    assert isinstance(r.choices[0].message.content, str)


# ---------------------------------------------------------------------------------------------
# structured output


class Weather(BaseModel):
    city: Literal["Paris", "Rome"]
    sunny: bool


def test_response_format_pydantic_parse(client, model):
    completion = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Weather in Rome, as JSON."}],
        response_format=Weather,
        max_tokens=256,
        temperature=0,
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Weather), message
    assert message.parsed.city in ("Paris", "Rome")
    assert completion.choices[0].finish_reason == "stop"


def test_response_format_json_object(client, model):
    r = chat(
        client,
        model,
        "Reply with a JSON object.",
        max_tokens=400,
        temperature=0,
        response_format={"type": "json_object"},
    )
    choice = r.choices[0]
    assert choice.finish_reason in FINISH_REASONS
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict), choice.message.content


# ---------------------------------------------------------------------------------------------
# legacy completions


def test_completion_plain(client, model):
    r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
    assert r.object == "text_completion"
    assert isinstance(r.id, str) and r.id
    assert r.model == model
    assert len(r.choices) == 1
    assert r.choices[0].index == 0
    assert isinstance(r.choices[0].text, str)
    assert r.choices[0].finish_reason in FINISH_REASONS
    assert_usage(r.usage, max_completion=8)


def test_completion_prompt_list_of_strings(client, model):
    r = client.completions.create(
        model=model, prompt=["First prompt", "Second prompt"], max_tokens=4, temperature=0
    )
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(isinstance(c.text, str) for c in r.choices)


def test_completion_prompt_token_ids(client, model):
    r = client.completions.create(model=model, prompt=[1, 2, 3], max_tokens=4, temperature=0)
    assert len(r.choices) == 1
    assert isinstance(r.choices[0].text, str)
    assert r.usage.prompt_tokens == 3


def test_completion_echo(client, model):
    prompt = "Hello there, friend"
    r = client.completions.create(model=model, prompt=prompt, max_tokens=4, echo=True, temperature=0)
    assert r.choices[0].text.startswith(prompt), r.choices[0].text


def test_completion_stream_matches_non_streamed_greedy(client, model):
    kw = dict(model=model, prompt="Once upon a time", max_tokens=16, temperature=0)
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert chunks
    assert all(c.object == "text_completion" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [full.choices[0].finish_reason], reasons


def test_completion_logprobs(client, model):
    r = client.completions.create(
        model=model,
        prompt="Once upon a time",
        max_tokens=8,
        temperature=0,
        logprobs=2,
        extra_body={"ignore_eos": True},
    )
    lp = r.choices[0].logprobs
    assert lp is not None
    n = r.usage.completion_tokens
    assert n == 8
    assert len(lp.tokens) == n
    assert len(lp.token_logprobs) == n
    assert all(isinstance(t, str) for t in lp.tokens)
    assert all(x <= 0.0 for x in lp.token_logprobs)
    assert lp.top_logprobs is not None and len(lp.top_logprobs) == n
    for top in lp.top_logprobs:
        # Up to logprobs entries, plus the sampled token (OpenAI's legacy API may add it);
        # two byte tokens that render the same text collapse into one key.
        assert 1 <= len(top) <= 3, top
        assert all(v <= 0.0 for v in top.values())
    if lp.text_offset is not None:
        assert len(lp.text_offset) == n


@pytest.mark.parametrize(
    "unsupported",
    [{"best_of": 2}, {"suffix": "x"}],
    ids=["best_of", "suffix"],
)
def test_completion_unsupported_field_is_rejected(client, model, unsupported):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt="Hi", max_tokens=4, **unsupported)
    assert_openai_error_body(e.value.response, 400)


# ---------------------------------------------------------------------------------------------
# errors: the SDK's own classes, and OpenAI-shaped bodies


def test_error_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, "no-such-model", max_tokens=4)
    err = assert_openai_error_body(e.value.response, 404)
    assert err["code"] == "model_not_found", err
    assert e.value.code == "model_not_found"


def test_error_prompt_over_context(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, model, "hello " * 5000, max_tokens=4)
    err = assert_openai_error_body(e.value.response, 400)
    assert err["code"] == "context_length_exceeded", err
    assert err["type"] == "invalid_request_error", err


def test_error_completion_prompt_over_context(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt="hello " * 5000, max_tokens=4)
    err = assert_openai_error_body(e.value.response, 400)
    assert err["code"] == "context_length_exceeded", err


def test_error_temperature_out_of_range(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, model, max_tokens=4, temperature=5)
    err = assert_openai_error_body(e.value.response, 400)
    assert err["param"] == "temperature", err
    assert e.value.param == "temperature"


def test_error_wrong_api_key(base_url, model):
    bad = openai.OpenAI(base_url=base_url, api_key="not-the-key", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as e:
        chat(bad, model, max_tokens=4)
    assert_openai_error_body(e.value.response, 401)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_error_missing_api_key(http, base_url, model):
    r = http.post(
        f"{base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert_openai_error_body(r, 401)
    assert_openai_error_body(http.get(f"{base_url}/models"), 401)


def test_rate_limit_per_key_and_disconnect_frees_slots(client, model, wait_for_capacity):
    """Two requests in flight per key: a third gets 429 with Retry-After. Closing the two
    streams (a client disconnect) must give both slots back."""
    long_kw = dict(
        model=model,
        messages=[{"role": "user", "content": "Talk for a long time."}],
        max_tokens=3000,
        stream=True,
        extra_body={"ignore_eos": True},
    )

    def open_stream(what: str):
        # A request that just finished may hold its slot a moment longer: retry briefly.
        deadline = time.monotonic() + 10
        while True:
            try:
                # Returns once the response headers arrive; nothing is read from the body.
                return client.chat.completions.create(**long_kw)
            except openai.RateLimitError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{what}: still 429 after 10 s")
                time.sleep(0.1)

    held = []
    try:
        held.append(open_stream("first held stream"))
        held.append(open_stream("second held stream"))
        with pytest.raises(openai.RateLimitError) as e:
            chat(client, model, max_tokens=1)
        err = assert_openai_error_body(e.value.response, 429)
        assert err["type"], err
        retry_after = e.value.response.headers.get("retry-after")
        assert retry_after is not None, dict(e.value.response.headers)
        assert retry_after.strip().isdigit(), retry_after
    finally:
        for s in held:
            s.close()  # closes the connection unread: the server sees the client go away

    # Both slots come back once the server notices the disconnects: hold one again and a
    # second request must still get through.
    again = open_stream("slot not freed within 10 s of a client disconnect")
    try:
        wait_for_capacity(10.0)
    finally:
        again.close()
    wait_for_capacity(10.0)


# ---------------------------------------------------------------------------------------------
# Enclave's extension endpoints and plain-HTTP behaviour


def test_tokenize_detokenize_round_trip(http, base_url, model, auth_headers):
    r = http.post(
        f"{base_url}/tokenize", json={"model": model, "prompt": "hello"}, headers=auth_headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    tokens = body["tokens"]
    assert isinstance(tokens, list) and tokens
    assert all(isinstance(t, int) for t in tokens)
    assert body["count"] == len(tokens)

    r = http.post(
        f"{base_url}/detokenize", json={"model": model, "tokens": tokens}, headers=auth_headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["prompt"] == "hello"


def test_health_and_ready_need_no_key(http, root_url):
    for path in ("/health", "/ready"):
        r = http.get(f"{root_url}{path}")
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_metrics(http, root_url, client, model):
    chat(client, model, max_tokens=2)  # at least one request observed
    r = http.get(f"{root_url}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    for name in (
        "enclave_requests_total",
        "enclave_time_to_first_token_seconds_bucket",
        "enclave_prompt_tokens_total",
    ):
        assert name in r.text, name


def test_openapi_document_needs_no_key(http, root_url):
    r = http.get(f"{root_url}/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3."), doc.get("openapi")
    paths = doc.get("paths", {})
    assert any(p.endswith("/chat/completions") for p in paths), list(paths)


def test_unknown_route_is_404_json(http, base_url, auth_headers):
    assert_openai_error_body(http.get(f"{base_url}/nope", headers=auth_headers), 404)


def test_wrong_method_is_405_json(http, base_url, auth_headers):
    assert_openai_error_body(http.delete(f"{base_url}/chat/completions", headers=auth_headers), 405)


def test_invalid_json_is_400(http, base_url, auth_headers):
    r = http.post(
        f"{base_url}/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={**auth_headers, "Content-Type": "application/json"},
    )
    err = assert_openai_error_body(r, 400)
    assert err["type"] == "invalid_request_error", err

