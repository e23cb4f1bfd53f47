#!/usr/bin/env bash
# Enclave's forward bench and llama.cpp's llama-bench, alternated back to back, so that both
# see the same machine: this host's memory bandwidth drifts between minutes, and only
# neighbouring runs compare. Run benches/llamacpp_baseline.sh once first (it builds
# llama-bench and the GGUF models into $BENCH_DATA).
#
# Usage: benches/compare_llamacpp.sh        env: BENCH_DATA ROUNDS DTYPES
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DATA=${BENCH_DATA:-$REPO/../bench-data}
ROUNDS=${ROUNDS:-2}
DTYPES=${DTYPES:-"bf16 f32"}
LLAMA_BENCH=$BENCH_DATA/llama-build/bin/llama-bench
[[ -x $LLAMA_BENCH ]] || { echo "error: $LLAMA_BENCH missing; run benches/llamacpp_baseline.sh first" >&2; exit 1; }

cd "$REPO"
cargo bench --bench forward --no-run
for round in $(seq "$ROUNDS"); do
    for dtype in $DTYPES; do
        echo "## round $round, $dtype"
        cargo bench -q --bench forward -- --dtype "$dtype" --reps 3 | grep -E '^(==|prefill|decode|ceiling|RSS)'
        OMP_NUM_THREADS=2 "$LLAMA_BENCH" -m "$BENCH_DATA/qwen2.5-0.5b-random-$dtype.gguf" -t 2 -p 512 -n 64 -r 3 2>/dev/null |
            grep -E 'pp512|tg64'
    done
done
