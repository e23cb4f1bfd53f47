#!/usr/bin/env bash
# Serving throughput of Enclave and llama.cpp's llama-server on the same machine: the same
# client (`enclave bench` over each server's streamed OpenAI chat endpoint), the same seeded
# prompts and `ignore_eos`. Each round runs both servers back to back, in alternating order,
# and only the server being measured is running, so neither shares the cores with the other.
# This host's memory bandwidth drifts by half from one minute to the next, so the summary
# compares the two over all rounds and shows the spread of the per-round ratios.
#
# Run benches/llamacpp_baseline.sh once first: it builds llama-server and converts the random
# Qwen2.5-0.5B-shaped model to GGUF in $BENCH_DATA.
#
# Usage: benches/compare_llamacpp_server.sh [chat|prefix]
#   chat    128-word chat prompts, 64 output tokens, concurrency 1 4 16 (default)
#   prefix  a 1600-word shared system prefix (~2000 tokens), a 40-word question, 128 output
# env: BENCH_DATA DTYPE CONCURRENCY REQUESTS_PER_SLOT ROUNDS PORT
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DATA=${BENCH_DATA:-$REPO/../bench-data}
DTYPE=${DTYPE:-bf16}
CONCURRENCY=${CONCURRENCY:-"1 4 16"}
REQUESTS_PER_SLOT=${REQUESTS_PER_SLOT:-3}
ROUNDS=${ROUNDS:-3}
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
NAME=$(basename "$MODEL")
LOGS=$(mktemp -d)
SERVER_PID=
trap '[[ -n $SERVER_PID ]] && kill $SERVER_PID 2>/dev/null; rm -rf "$LOGS/data"' EXIT
echo "full outputs: $LOGS"

wait_ready() {
    for _ in $(seq 240); do
        curl -sf "http://127.0.0.1:$PORT/$1" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.5
    done
    echo "error: the server did not start; see $LOGS/$2.server.log" >&2
    exit 1
}

start() {
    case $1 in
        llama)
            OMP_NUM_THREADS=2 "$SERVER" -m "$MODEL.gguf" -t 2 -tb 2 -np 16 -c 65536 --jinja \
                --host 127.0.0.1 --port "$PORT" >"$LOGS/llama.server.log" 2>&1 &
            SERVER_PID=$!
            wait_ready health llama
            ;;
        enclave)
            "$ENCLAVE" --data-dir "$LOGS/data" serve --model "$MODEL" --port "$PORT" \
                --kv-cache-memory 4GiB >"$LOGS/enclave.server.log" 2>&1 &
            SERVER_PID=$!
            wait_ready ready enclave
            ;;
    esac
}

stop() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# One measured run; prints "output_tok_s ttft_p50_ms".
measure() {
    local side=$1 c=$2 seed=$3 out="$LOGS/$1.c$2.s$3.txt"
    start "$side"
    "$ENCLAVE" bench --url "http://127.0.0.1:$PORT" --served-model-name "$NAME" \
        --server-pid "$SERVER_PID" --seed "$seed" --num-requests $((c * REQUESTS_PER_SLOT)) \
        --concurrency "$c" "${SHAPE[@]}" --warmup 1 >"$out" 2>&1
    stop
    awk '/^throughput/ { rate = $(NF - 1) } /^TTFT +p50/ { ttft = $3 } END { print rate, ttft }' "$out"
}

printf "%-5s %-5s %-7s %14s %14s %9s %20s\n" conc round first llama enclave ratio "TTFT p50 ms l / e"
for c in $CONCURRENCY; do
    for r in $(seq "$ROUNDS"); do
        seed=$((c * 1000 + r))
        if ((r % 2)); then
            read -r lr lt < <(measure llama "$c" "$seed")
            read -r er et < <(measure enclave "$c" "$seed")
            first=llama
        else
            read -r er et < <(measure enclave "$c" "$seed")
            read -r lr lt < <(measure llama "$c" "$seed")
            first=enclave
        fi
        ratio=$(awk -v e="$er" -v l="$lr" 'BEGIN { printf "%.2f", e / l }')
        printf "%-5s %-5s %-7s %14s %14s %9s %20s\n" "$c" "$r" "$first" "$lr" "$er" "$ratio" "$lt / $et"
        echo "$c $lr $er $ratio" >>"$LOGS/rates"
    done
done
echo
echo "output tok/s summed over rounds (Enclave / llama-server), and the per-round spread:"
awk '{ l[$1] += $2; e[$1] += $3; if (!($1 in lo) || $4 < lo[$1]) lo[$1] = $4; if ($4 > hi[$1]) hi[$1] = $4 }
     END { for (c in l) printf "  concurrency %-4s %8.1f vs %8.1f  ratio %.2f  (rounds %.2f to %.2f)\n", c, e[c], l[c], e[c] / l[c], lo[c], hi[c] }' \
    "$LOGS/rates" | sort -k2 -n
