"""The built-in demo-retail support agent through the official `openai` SDK, unchanged: a client
names the agent as `agent:demo-retail` and carries the history itself.

The server serves the real all-MiniLM-L6-v2 beside the random chat model, so the agent's
decisions (which are code, not model text) are asserted: a fraud report goes to a human before
anything is generated, and the handoff lands in the queue humans work from.
"""

from __future__ import annotations

import httpx

from conftest import API_KEY, ROOT_URL

AGENT = "agent:demo-retail"


def test_agent_hands_a_fraud_report_to_a_human(client):
    r = client.chat.completions.create(
        model=AGENT,
        messages=[{"role": "user", "content": "Someone used my credit card without my permission"}],
    )
    assert r.model == AGENT
    assert r.choices[0].message.role == "assistant"
    assert "colleague" in r.choices[0].message.content
    agent = r.model_extra["agent"]
    assert agent["handoff"]["reason"] == "hard_escalation:fraud"
    queue = httpx.get(
        f"{ROOT_URL}/admin/handoffs",
        params={"status": "waiting"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30.0,
    ).json()
    assert any(h["id"] == agent["handoff"]["id"] for h in queue["data"])


def test_agent_streams_one_reply(client):
    stream = client.chat.completions.create(
        model=AGENT,
        messages=[{"role": "user", "content": "I'd like to talk to a human please"}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "colleague" in text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_unknown_agent_is_a_404(client):
    import openai
    import pytest

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="agent:nobody", messages=[{"role": "user", "content": "hi"}])
