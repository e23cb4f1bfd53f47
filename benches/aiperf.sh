#!/usr/bin/env bash
# AIPerf (PyPI `aiperf`) against `enclave serve`: streamed chat completions with fixed input and
# output lengths and `ignore_eos`, at each concurrency level, on the Qwen2.5-0.5B-shaped model.
# Prints output tokens/s, TTFT p50/p99 and ITL p50/p99 per level; AIPerf's own files stay in
# target/aiperf.
#
# AIPerf runs offline from the model folder's own tokenizer files (do not set HF_HUB_OFFLINE:
# it then refuses local paths). It needs its own virtualenv: its pins differ from the client
# suites'. Note that its Python client shares the 2 cores with the server; benches/http_overhead.sh
# measures the HTTP layer without that competition.
#
# Usage: benches/aiperf.sh [MODEL_DIR]
# env: BENCH_DATA AIPERF (the aiperf executable) CONCURRENCY REQUESTS_PER_SLOT ISL OSL PORT
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DATA=${BENCH_DATA:-$REPO/../bench-data}
MODEL=${1:-$BENCH_DATA/qwen2.5-0.5b-random-bf16}
AIPERF=${AIPERF:-$BENCH_DATA/aiperf-venv/bin/aiperf}
CONCURRENCY=${CONCURRENCY:-"1 4 16"}
REQUESTS_PER_SLOT=${REQUESTS_PER_SLOT:-4}
ISL=${ISL:-128}
OSL=${OSL:-64}
PORT=${PORT:-8093}
if [[ ! -x $AIPERF ]]; then
    echo "error: $AIPERF missing: python3 -m venv $BENCH_DATA/aiperf-venv && $BENCH_DATA/aiperf-venv/bin/pip install aiperf" >&2
    exit 1
fi
[[ -d $MODEL ]] || { echo "error: $MODEL missing; give a model folder" >&2; exit 1; }

cd "$REPO"
cargo build --release -q
DATA=$(mktemp -d)
OUT=${OUT:-$REPO/target/aiperf}
rm -rf "$OUT" && mkdir -p "$OUT"
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$REPO/target/release/enclave" --data-dir "$DATA" serve --model "$MODEL" --port "$PORT" \
    --log-format json >"$DATA/serve.out" 2>"$DATA/serve.err" &
SERVER_PID=$!
until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do
    kill -0 $SERVER_PID 2>/dev/null || { cat "$DATA/serve.err" >&2; exit 1; }
    sleep 0.5
done
NAME=$(basename "$MODEL")

printf "%-12s %9s %6s %6s %12s %10s %10s %10s %10s\n" concurrency requests ISL OSL "output tok/s" "TTFT p50" "TTFT p99" "ITL p50" "ITL p99"
for c in $CONCURRENCY; do
    out=$OUT/c$c
    "$AIPERF" profile --model "$NAME" --tokenizer "$MODEL" --url "http://127.0.0.1:$PORT" \
        --endpoint-type chat --streaming --concurrency "$c" --request-count $((c * REQUESTS_PER_SLOT)) \
        --warmup-request-count "$c" --isl "$ISL" --isl-stddev 0 --osl "$OSL" --osl-stddev 0 \
        --extra-inputs ignore_eos:true --extra-inputs "max_tokens:$OSL" --random-seed 7 \
        --ui none --artifact-dir "$out" >"$out.log" 2>&1 || { tail -30 "$out.log" >&2; exit 1; }
    json=$out/profile_export_aiperf.json
    python3 - "$json" "$c" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
def get(name, stat):
    v = m.get(name, {})
    return v.get(stat) if isinstance(v, dict) else None
tps = get("output_token_throughput", "avg")
n = get("request_count", "avg")
isl = get("input_sequence_length", "avg")
osl = get("output_sequence_length", "avg")
row = [get("time_to_first_token", "p50"), get("time_to_first_token", "p99"),
       get("inter_token_latency", "p50"), get("inter_token_latency", "p99")]
fmt = lambda x: "-" if x is None else f"{x:.1f}"
print(f"{sys.argv[2]:<12} {fmt(n):>9} {fmt(isl):>6} {fmt(osl):>6} {fmt(tps):>12} " + " ".join(f"{fmt(x) + ' ms':>10}" for x in row))
PY
done
