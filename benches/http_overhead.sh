#!/usr/bin/env bash
# The HTTP layer's own cost: the same seeded chat workload through Enclave's engine in process
# and through `enclave serve` over HTTP, both driven by `enclave bench` (a Rust client, so no
# Python competes for the cores), alternated at each concurrency level so both see the same
# machine. Prints output tokens/s of each and their ratio (HTTP / in process).
#
# Usage: benches/http_overhead.sh [MODEL_DIR]
#   MODEL_DIR defaults to $BENCH_DATA/qwen2.5-0.5b-random-bf16 (see benches/llamacpp_baseline.sh);
#   any model folder works.
# env: BENCH_DATA CONCURRENCY REQUESTS_PER_SLOT PORT ROUNDS
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DATA=${BENCH_DATA:-$REPO/../bench-data}
MODEL=${1:-$BENCH_DATA/qwen2.5-0.5b-random-bf16}
CONCURRENCY=${CONCURRENCY:-"1 4 16"}
REQUESTS_PER_SLOT=${REQUESTS_PER_SLOT:-3}
ROUNDS=${ROUNDS:-4}
PORT=${PORT:-8091}
[[ -d $MODEL ]] || { echo "error: $MODEL missing; give a model folder" >&2; exit 1; }

cd "$REPO"
cargo build --release -q
ENCLAVE=$REPO/target/release/enclave
SHAPE=(--prompt-words 128 --output-len 64 --warmup 4)
DATA=$(mktemp -d)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$DATA"' EXIT

"$ENCLAVE" --data-dir "$DATA" serve --model "$MODEL" --port "$PORT" --log-format json \
    >"$DATA/serve.out" 2>"$DATA/serve.err" &
SERVER_PID=$!
until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do
    kill -0 $SERVER_PID 2>/dev/null || { cat "$DATA/serve.err" >&2; exit 1; }
    sleep 0.5
done
NAME=$(basename "$MODEL")

rate() { awk '/^throughput/ { print $(NF - 1); exit }'; }

printf "%-12s %-6s %14s %14s %8s\n" concurrency round in-process http ratio
for c in $CONCURRENCY; do
    n=$((c * REQUESTS_PER_SLOT))
    for r in $(seq "$ROUNDS"); do
        # A fresh seed per run: the server's prefix cache has never seen these prompts, just
        # as the in-process engine (a new process each run) has not.
        seed=$((c * 1000 + r))
        # The idle server only holds memory while the in-process run measures. The order
        # alternates so that neither side always runs first on a warming machine.
        local_run() {
            "$ENCLAVE" --data-dir "$DATA" bench --model "$MODEL" "${SHAPE[@]}" \
                --seed "$seed" --num-requests "$n" --concurrency "$c" 2>/dev/null | rate
        }
        http_run() {
            "$ENCLAVE" bench --url "http://127.0.0.1:$PORT" --served-model-name "$NAME" \
                "${SHAPE[@]}" --seed "$seed" --num-requests "$n" --concurrency "$c" 2>/dev/null | rate
        }
        if ((r % 2)); then
            local_rate=$(local_run)
            http_rate=$(http_run)
        else
            http_rate=$(http_run)
            local_rate=$(local_run)
        fi
        ratio=$(awk -v a="$http_rate" -v b="$local_rate" 'BEGIN { printf "%.3f", a / b }')
        printf "%-12s %-6s %14s %14s %8s\n" "$c" "$r" "$local_rate" "$http_rate" "$ratio"
        echo "$c $local_rate $http_rate" >>"$DATA/rates"
    done
done
echo
echo "sums over rounds (HTTP / in process):"
awk '{ l[$1] += $2; h[$1] += $3 } END { for (c in l) printf "  concurrency %-4s %.1f vs %.1f tok/s  ratio %.3f\n", c, l[c], h[c], h[c] / l[c] }' "$DATA/rates" | sort -k2 -n
