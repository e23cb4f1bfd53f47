"""Shared setup for Enclave's client-compatibility tests (official `openai` SDK, LangChain).

The server under test is found through the environment, as `tests/api_clients.rs` sets it:

    ENCLAVE_BASE_URL   http://127.0.0.1:<port>/v1   (required)
    ENCLAVE_API_KEY    the bearer key                (default: test-key-123)
    ENCLAVE_MODEL      the served model id           (default: enclave-test-model)
    ENCLAVE_EMBEDDING_MODEL  the served embedding model id (default: all-minilm-l6-v2)

To run by hand against a server you started yourself:

    ENCLAVE_BASE_URL=http://127.0.0.1:8000/v1 python3 -m pytest -q tests/clients/python

The model behind these tests is a tiny random-weight model: its text is noise. Tests assert
structure and behaviour (shapes, counts, determinism of greedy and seeded sampling), never what
the text says.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import httpx
import openai
import pytest

BASE_URL = os.environ.get("ENCLAVE_BASE_URL", "").rstrip("/")
API_KEY = os.environ.get("ENCLAVE_API_KEY", "test-key-123")
MODEL = os.environ.get("ENCLAVE_MODEL", "enclave-test-model")
EMBEDDING_MODEL = os.environ.get("ENCLAVE_EMBEDDING_MODEL", "all-minilm-l6-v2")

# Requests to the tiny model finish in well under a second; this only bounds a hung server.
REQUEST_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0


def _root_url(base_url: str) -> str:
    """`http://host:port/v1` -> `http://host:port` (where /health, /metrics and friends live)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


ROOT_URL = _root_url(BASE_URL)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail fast, with one clear line, when there is no server to test; wait for it to be ready."""
    if not BASE_URL:
        pytest.exit(
            "ENCLAVE_BASE_URL is not set: start `enclave serve` and set "
            "ENCLAVE_BASE_URL=http://127.0.0.1:<port>/v1 (tests/api_clients.rs does both)",
            returncode=2,
        )
    try:
        r = httpx.get(f"{ROOT_URL}/health", timeout=10.0)
    except httpx.HTTPError as e:
        pytest.exit(f"the Enclave server at {ROOT_URL} is not reachable: {e!r}", returncode=2)
    if r.status_code != 200:
        pytest.exit(
            f"GET {ROOT_URL}/health returned {r.status_code}, expected 200: {r.text[:500]}",
            returncode=2,
        )
    # Listening comes before the model is loaded: wait (briefly) until /ready says so.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        r = httpx.get(f"{ROOT_URL}/ready", timeout=10.0)
        if r.status_code == 200:
            return
        if time.monotonic() > deadline:
            pytest.exit(
                f"GET {ROOT_URL}/ready still {r.status_code} after {READY_TIMEOUT_S:.0f} s: "
                f"{r.text[:500]}",
                returncode=2,
            )
        time.sleep(0.2)


@pytest.fixture(scope="session")
def base_url() -> str:
    return BASE_URL


@pytest.fixture(scope="session")
def root_url() -> str:
    return ROOT_URL


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def model() -> str:
    return MODEL


@pytest.fixture(scope="session")
def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def client():
    """The official SDK, pointed at Enclave. No retries: every error must surface as raised."""
    c = openai.OpenAI(
        base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=REQUEST_TIMEOUT_S
    )
    yield c
    c.close()


@pytest.fixture
def http():
    """A plain HTTP client for what the SDK does not cover (extensions, raw error bodies)."""
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
        yield c


def assert_openai_error_body(response: httpx.Response | Any, status: int) -> dict[str, Any]:
    """The response has status `status` and an OpenAI-shaped error body; returns its `error`.

    OpenAI's shape: `{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}`.
    """
    assert response.status_code == status, (response.status_code, response.text[:1000])
    ctype = response.headers.get("content-type", "")
    assert ctype.startswith("application/json"), (ctype, response.text[:1000])
    body = response.json()
    assert isinstance(body, dict) and "error" in body, body
    err = body["error"]
    assert isinstance(err, dict), body
    for key in ("message", "type", "param", "code"):
        assert key in err, f"error body lacks {key!r}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    assert err["param"] is None or isinstance(err["param"], str), body
    assert err["code"] is None or isinstance(err["code"], str), body
    return err


@pytest.fixture
def wait_for_capacity(client: openai.OpenAI) -> Callable[[float], None]:
    """`wait_for_capacity(timeout_s)`: retry a one-token request until the key has a free slot.

    The server allows 2 requests in flight per key; a request that just finished may hold its
    slot for a moment after the client saw its last byte.
    """

    def wait(timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "ping"}],
                    max_tokens=1,
                    temperature=0,
                )
                return
            except openai.RateLimitError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    return wait
