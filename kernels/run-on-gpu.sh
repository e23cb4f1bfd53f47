#!/usr/bin/env bash
# Runs, on a GPU machine, what kernels/build-cuda.sh packed into .carry/ (no Rust needed):
#
#   .carry/run-on-gpu.sh test                 # the CUDA kernel and model tests
#   .carry/run-on-gpu.sh bench [SHAPE]        # batch-1 decode, then 64 and 256 concurrent
#                                             # sequences (input 512, output 256); SHAPE is
#                                             # qwen2.5-0.5b (default) or llama-3.1-8b
#   .carry/run-on-gpu.sh torch [SHAPE]        # the same shapes through transformers' generate()
#
# The random-weight models are written on the GPU machine (they are too big to carry), into
# ENCLAVE_BENCH_DIR (default /tmp/enclave-bench). Results also go to $OUT when it is set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export ENCLAVE_SOURCE_DIR="$root"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
# The binaries travel xz-compressed; unpack them once into a writable folder (python's lzma
# where xz is missing).
bins=${ENCLAVE_BIN_DIR:-/tmp/enclave-carry}
mkdir -p "$bins"
for packed in "$here"/*.xz; do
  [ -e "$packed" ] || continue
  bin="$bins/$(basename "${packed%.xz}")"
  if [ ! -x "$bin" ] || [ "$packed" -nt "$bin" ]; then
    if command -v xz >/dev/null; then
      xz -dkc "$packed" > "$bin"
    else
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$packed" "$bin"
    fi
    chmod +x "$bin"
  fi
done
out=${OUT:-/tmp/enclave-gpu-out}
mkdir -p "$out"
bench_dir=${ENCLAVE_BENCH_DIR:-/tmp/enclave-bench}
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
else
  echo "nvidia-smi not found; the tests will say whether a GPU answers" | tee "$out/gpu.txt"
fi

model_dir() {
  local shape=$1 dir="$bench_dir/$1"
  if [ ! -f "$dir/model.safetensors" ]; then
    "$bins/enclave" write-test-model "$dir" --shape "$shape" --dtype bf16 >&2
  fi
  echo "$dir"
}

case "${1:-test}" in
  test)
    # Both run even when the first fails; the exit status says whether either failed.
    status=0
    "$bins/cuda_kernels" --test-threads=1 2>&1 | tee "$out/cuda_kernels.txt" || status=1
    "$bins/cuda_model" --test-threads=1 --nocapture 2>&1 | tee "$out/cuda_model.txt" || status=1
    exit $status
    ;;
  bench)
    shape=${2:-qwen2.5-0.5b}
    dir=$(model_dir "$shape")
    common=(--model "$dir" --device cuda --input-len 512 --output-len 256 --warmup 2)
    "$bins/enclave" bench "${common[@]}" --num-requests 4 --concurrency 1 \
      --max-num-seqs 1 2>&1 | tee "$out/bench-$shape-c1.txt"
    for c in 64 256; do
      "$bins/enclave" bench "${common[@]}" --num-requests "$c" --concurrency "$c" \
        --max-num-seqs "$c" --max-num-batched-tokens 8192 2>&1 | tee "$out/bench-$shape-c$c.txt"
    done
    ;;
  torch)
    shape=${2:-qwen2.5-0.5b}
    dir=$(model_dir "$shape")
    python3 "$root/benches/torch_generate.py" "$dir" 2>&1 | tee "$out/torch-$shape.txt"
    ;;
  *) echo "usage: run-on-gpu.sh test | bench [SHAPE] | torch [SHAPE]" >&2; exit 2 ;;
esac
