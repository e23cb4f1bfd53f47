#!/usr/bin/env bash
# Serving throughput of Enclave's engine and llama.cpp's llama-server on the same machine, with
# the same client (`enclave bench`), the same seeded prompts and `ignore_eos`, alternated
# concurrency level by concurrency level so both see the same machine.
#
# Enclave runs in process; llama-server is driven over its OpenAI endpoint (2 threads, 16
# slots, continuous batching). Run benches/llamacpp_baseline.sh once first: it builds
# llama-server and converts the random Qwen2.5-0.5B-shaped model to GGUF in $BENCH_DATA.
#
# Usage: benches/compare_llamacpp_server.sh [chat|prefix]
#   chat    128-word chat prompts, 64 output tokens, concurrency 1 4 16 (default)
#   prefix  a 1600-word shared system prefix (~2000 tokens), a 40-word question, 128 output
# env: BENCH_DATA DTYPE CONCURRENCY REQUESTS_PER_SLOT PORT
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DATA=${BENCH_DATA:-$REPO/../bench-data}
DTYPE=${DTYPE:-bf16}
CONCURRENCY=${CONCURRENCY:-"1 4 16"}
REQUESTS_PER_SLOT=${REQUESTS_PER_SLOT:-3}
PORT=${PORT:-8089}
WORKLOAD=${1:-chat}
MODEL=$BENCH_DATA/qwen2.5-0.5b-random-$DTYPE
SERVER=$BENCH_DATA/llama-build/bin/llama-server
[[ -x $SERVER ]] || { echo "error: $SERVER missing; run benches/llamacpp_baseline.sh first" >&2; exit 1; }
[[ -d $MODEL && -f $MODEL.gguf ]] || { echo "error: $MODEL(.gguf) missing; run benches/llamacpp_baseline.sh first" >&2; exit 1; }

case $WORKLOAD in
    chat) SHAPE=(--prompt-words 128 --output-len 64) ;;
    prefix) SHAPE=(--prompt-words 40 --shared-prefix-words 1600 --output-len 128) ;;
    *) echo "error: unknown workload '$WORKLOAD'; use chat or prefix" >&2; exit 1 ;;
esac

cd "$REPO"
cargo build --release -q
ENCLAVE=$REPO/target/release/enclave

# The server runs only while it is measured, so it never shares the cores with Enclave's run.
start_server() {
    OMP_NUM_THREADS=2 "$SERVER" -m "$MODEL.gguf" -t 2 -tb 2 -np 16 -c 65536 --jinja \
        --host 127.0.0.1 --port "$PORT" >/tmp/llama-server.log 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 120); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "error: llama-server did not start; see /tmp/llama-server.log" >&2
    exit 1
}
SERVER_PID=
trap '[[ -n $SERVER_PID ]] && kill $SERVER_PID 2>/dev/null || true' EXIT

for c in $CONCURRENCY; do
    n=$((c * REQUESTS_PER_SLOT))
    echo "## $WORKLOAD, concurrency $c, $n requests"
    echo "# llama-server"
    start_server
    "$ENCLAVE" bench --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --num-requests "$n" --concurrency "$c" "${SHAPE[@]}" --warmup 1
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    echo "# enclave"
    "$ENCLAVE" bench --model "$MODEL" --kv-cache-memory 4GiB \
        --num-requests "$n" --concurrency "$c" "${SHAPE[@]}" --warmup 1
done
