"""Enclave through LangChain's `ChatOpenAI` (Chat Completions API, not the Responses API).

The model is random noise: the tests check message types, usage metadata and that streaming
spells out exactly the invoked (greedy) text.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI


@pytest.fixture
def llm(base_url, api_key, model) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key,
        use_responses_api=False,
        max_tokens=8,
        temperature=0,
        max_retries=0,
        timeout=120,
    )


def assert_usage_metadata(usage, max_output: int) -> None:
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert 0 <= usage["output_tokens"] <= max_output
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_invoke(llm):
    msg = llm.invoke("hi")
    assert isinstance(msg, AIMessage)
    assert isinstance(msg.content, str)
    assert_usage_metadata(msg.usage_metadata, 8)
    assert msg.response_metadata.get("finish_reason") in ("stop", "length")


def test_invoke_messages(llm):
    msg = llm.invoke([SystemMessage("You are terse."), HumanMessage("hi")])
    assert isinstance(msg, AIMessage)
    assert isinstance(msg.content, str)


def test_stream_matches_invoke(llm):
    invoked = llm.invoke("hi")
    chunks = list(llm.stream("hi", stream_usage=True))
    assert chunks
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == invoked.content  # greedy: same text
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert_usage_metadata(merged.usage_metadata, 8)
    assert merged.usage_metadata["output_tokens"] == invoked.usage_metadata["output_tokens"]

