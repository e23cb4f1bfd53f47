#!/usr/bin/env bash
# CPU baseline for enclave's forward bench: llama.cpp on the same Qwen2.5-0.5B-shaped
# random-weight model, plus the machine's memory bandwidth.
#
# Steps (each one skipped when its output already exists, so reruns are cheap):
#   1. fetch the llama-cpp-python 0.3.36 source package from PyPI and build its vendored
#      llama.cpp (Release, GGML_NATIVE=ON, OpenMP, no CURL, no web UI): llama-bench,
#      llama-server, llama-cli;
#   2. build ../shared/tools/membw.c;
#   3. write random-weight Qwen2.5-0.5B-Instruct-shaped models in bf16 and f32
#      (benches/make_random_qwen.py, real Qwen2.5 tokenizer);
#   4. convert both to GGUF with that tree's convert_hf_to_gguf.py;
# then prints llama-bench (prefill 512, decode 64, 2 threads) for f32 and bf16 and the
# median 2-thread read bandwidth from membw.
#
# Needs network access to PyPI once (the source package, and gguf-py's few dependencies),
# cmake, a C/C++ compiler with OpenMP, and a Python with torch, numpy, safetensors,
# transformers, sentencepiece and protobuf (default: ../venv/bin/python, else python3).
# Everything large goes to $BENCH_DATA (default: ../bench-data next to the repo).
# Builds run under `nice -n 19` with $JOBS jobs (default 1) so they stay out of the way.
#
# Usage: benches/llamacpp_baseline.sh        env: BENCH_DATA PYTHON JOBS REPS THREADS
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DATA=${BENCH_DATA:-$REPO/../bench-data}
mkdir -p "$BENCH_DATA/src"
BENCH_DATA=$(cd "$BENCH_DATA" && pwd)
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/../venv/bin/python ]]; then PYTHON=$REPO/../venv/bin/python; else PYTHON=python3; fi
fi
JOBS=${JOBS:-1}
REPS=${REPS:-5}
THREADS=${THREADS:-2}
VERSION=0.3.36
LC=$BENCH_DATA/src/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$BENCH_DATA/llama-build
MODEL=qwen2.5-0.5b-random

# 1. llama.cpp from the llama-cpp-python source package.
# (--no-binary names only this package: with ":all:" pip would also compile the build
# backend's own dependencies, cmake included, from source.)
if [[ ! -f $LC/CMakeLists.txt ]]; then
    tarball=$BENCH_DATA/src/llama_cpp_python-$VERSION.tar.gz
    [[ -f $tarball ]] || "$PYTHON" -m pip download --no-binary llama-cpp-python --no-deps \
        "llama-cpp-python==$VERSION" -d "$BENCH_DATA/src"
    tar xzf "$tarball" -C "$BENCH_DATA/src"
fi
if [[ ! -x $BUILD/bin/llama-bench || ! -x $BUILD/bin/llama-server || ! -x $BUILD/bin/llama-cli ]]; then
    start=$(date +%s)
    nice -n 19 cmake -S "$LC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF
    for target in llama-bench llama-server llama-cli; do
        nice -n 19 cmake --build "$BUILD" --config Release -j "$JOBS" --target "$target"
    done
    echo "llama.cpp build: $(( $(date +%s) - start )) s"
fi

# 2. Memory-bandwidth probe.
if [[ ! -x $BENCH_DATA/membw ]]; then
    nice -n 19 cc -O3 -march=native -fopenmp -o "$BENCH_DATA/membw" "$REPO/../shared/tools/membw.c"
fi

# 3. Random-weight models (the f32 one is the bf16 one upcast).
for dtype in bf16 f32; do
    if [[ ! -f $BENCH_DATA/$MODEL-$dtype/model.safetensors ]]; then
        nice -n 19 "$PYTHON" "$REPO/benches/make_random_qwen.py" "$BENCH_DATA/$MODEL-$dtype" "$dtype"
    fi
done

# 4. GGUF conversion (the converter uses the tree's gguf-py; installing it pulls its deps).
"$PYTHON" -c 'import gguf' 2>/dev/null || nice -n 19 "$PYTHON" -m pip install -e "$LC/gguf-py"
for dtype in f32 bf16; do
    if [[ ! -f $BENCH_DATA/$MODEL-$dtype.gguf ]]; then
        nice -n 19 "$PYTHON" "$LC/convert_hf_to_gguf.py" "$BENCH_DATA/$MODEL-$dtype" \
            --outtype "$dtype" --outfile "$BENCH_DATA/$MODEL-$dtype.gguf"
    fi
done

# Measurements.
for dtype in f32 bf16; do
    echo "== llama-bench $dtype, $THREADS threads =="
    OMP_NUM_THREADS=$THREADS "$BUILD/bin/llama-bench" -m "$BENCH_DATA/$MODEL-$dtype.gguf" \
        -t "$THREADS" -p 512 -n 64 -r "$REPS"
done
echo "== membw, OMP_NUM_THREADS=$THREADS =="
line=$(OMP_NUM_THREADS=$THREADS "$BENCH_DATA/membw" 1024 10)
echo "$line"
echo "median read bandwidth: $(sed -E 's/.*"read_gbs_median": ([0-9.]+).*/\1/' <<<"$line") GB/s"
