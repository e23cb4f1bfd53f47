#!/usr/bin/env bash
# Fuzzes a running Enclave server against its own OpenAPI document (GET /openapi.json) with
# schemathesis 4.x: generated valid and invalid requests for every documented operation, each
# response checked against the document.
#
# Usage: tests/clients/run_schemathesis.sh http://127.0.0.1:<port>
#   ENCLAVE_API_KEY     bearer key (default: test-key-123)
#   SCHEMATHESIS_SEED   generation seed (default: fixed, so a failure reproduces run to run)
#   SCHEMATHESIS_MAX_EXAMPLES  fuzzed cases per operation (default: 20)
#
# tests/api_clients.rs runs this after starting the server; install the tool with
# .ci/install-client-deps.
set -euo pipefail

base="${1:?usage: $0 http://127.0.0.1:<port>}"
base="${base%/}"
key="${ENCLAVE_API_KEY:-test-key-123}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Hooks (schemathesis loads the file named by SCHEMATHESIS_HOOKS before generating anything).
# `before_call` runs just before each request is sent, in every phase.
cat >"$work/enclave_hooks.py" <<'PY'
import os

import schemathesis

MODEL = os.environ.get("ENCLAVE_MODEL", "enclave-test-model")
EMBEDDING_MODEL = os.environ.get("ENCLAVE_EMBEDDING_MODEL", "all-minilm-l6-v2")
# Fuzzing is about the request and response documents, not throughput: a generated request may
# ask for thousands of tokens (or, with no limit, the whole context) on a 2-core machine.
# Valid values above these are lowered; invalid ones (negative, wrong type) are left alone to be
# refused.
MAX_TOKENS = 16
MAX_N = 2


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict) or "model" not in body:
        return
    # The document can only say `model` is a string, so nearly every generated name is unknown
    # and the request stops at 404 before any of the interesting validation. Name the served
    # model instead (the SDK suites test unknown models); a non-string stays, to be refused.
    if isinstance(body["model"], str):
        body["model"] = EMBEDDING_MODEL if case.operation.path == "/v1/embeddings" else MODEL
    if case.operation.path not in ("/v1/chat/completions", "/v1/completions"):
        return
    # `stream: true` answers with text/event-stream, which has no schema to check the chunks
    # against (the SDK suites check streams): ask for the single JSON document instead.
    if body.get("stream") is True:
        body["stream"] = False
        body.pop("stream_options", None)
    limits = [f for f in ("max_tokens", "max_completion_tokens") if body.get(f) is not None]
    if not limits:
        body["max_tokens"] = MAX_TOKENS
    for field in limits:
        if _int(body[field]) and body[field] > MAX_TOKENS:
            body[field] = MAX_TOKENS
    if _int(body.get("n")) and body["n"] > MAX_N:
        body["n"] = MAX_N
PY

args=(
  run "$base/openapi.json"
  # The document has no `servers`; its paths carry /v1 themselves.
  --url "$base"
  # Every /v1 route needs the key; the open routes (/health, /metrics, ...) ignore it.
  -H "Authorization: Bearer $key"
  # Exactly the checks this suite is for: no 5xx for any input, only documented status codes,
  # only documented content types, and bodies that match their documented schemas.
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
  # Valid requests (must succeed or fail in documented ways) and invalid ones (must be refused
  # with a documented 4xx, never a 5xx).
  --mode all
  # A modest number of fuzzed cases per operation keeps the run to a few minutes on 2 cores.
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-20}"
  # One request at a time: the server admits 2 in flight per key (more would be 429s that
  # prove nothing here), and the machine has 2 cores.
  --workers 1
  # A stuck request fails the run instead of hanging it.
  --request-timeout 60
  # The same cases every run, so a failure reproduces; set SCHEMATHESIS_SEED to explore.
  --seed "${SCHEMATHESIS_SEED:-20261124}"
  # No .hypothesis/ example database left behind in the checkout.
  --generation-database none
  # Plain text: the output ends up in a log file and an assertion message.
  --no-color
  # Show the failing requests whole: the default hides fields such as `tokens` and
  # `max_tokens` as if they were secrets. The only secret here is the throwaway test key.
  --output-sanitize false
)

# Run from the scratch folder so that nothing the tool writes lands in the checkout.
cd "$work"
SCHEMATHESIS_HOOKS="$work/enclave_hooks.py" python3 -m schemathesis.cli "${args[@]}"
