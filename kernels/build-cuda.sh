#!/usr/bin/env bash
# Builds Enclave with --features cuda on a machine that has neither a GPU nor a CUDA install,
# then packs what a GPU machine needs to run it.
#
#   kernels/build-cuda.sh toolkit   # fetch the CUDA 13.0 toolkit pieces from PyPI into .cuda/
#   kernels/build-cuda.sh build     # release build of the server and of the CUDA test binaries
#   kernels/build-cuda.sh carry     # strip them into .carry/ (ignored), with a run script
#   kernels/build-cuda.sh           # all three
#
# The toolkit is CUDA 13.0 on purpose: PTX from 13.0's nvcc loads on every 13.x driver.
# The driver library (libcuda.so.1) is not on PyPI, so a link-time stub is generated from the
# entry points cudarc declares; the GPU machine's real driver is what loads at run time. Each
# stub entry returns CUDA_ERROR_NO_DEVICE (100), so on a machine without the driver the binary
# still runs on the CPU and refuses --device cuda cleanly.
# CUDA_COMPUTE_CAP picks the GPU generation (90: H100/H200, 80: A100, 89: L40S).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tk="$root/.cuda"
cuda_home="$tk/site/nvidia/cu13"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)

toolkit() {
  if [ ! -x "$cuda_home/bin/nvcc" ]; then
    python3 -m pip install --quiet --no-deps --target "$tk/site" "${wheels[@]}"
  fi
  local stubs="$cuda_home/lib/stubs"
  mkdir -p "$stubs"
  # The linker wants unversioned names; the wheels ship only the sonames.
  for lib in cublas cublasLt curand nvrtc cudart; do
    ln -sf "../lib$lib.so.$(ls "$cuda_home/lib" | sed -n "s/^lib$lib\.so\.\([0-9]*\)$/\1/p" | head -1)" \
      "$stubs/lib$lib.so"
  done
  if [ ! -f "$stubs/libcuda.so" ]; then
    cargo fetch --quiet
    local sys
    sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)
    grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$sys" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/int \1(void) { return 100; }/' |
      sort -u > "$tk/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$tk/libcuda_stub.c"
  fi
  # For running the CUDA build's CPU tests here: LD_LIBRARY_PATH="$stubs:$cuda_home/lib".
  ln -sf libcuda.so "$stubs/libcuda.so.1"
  echo "CUDA toolkit ready: $cuda_home ($("$cuda_home/bin/nvcc" --version | tail -2 | head -1))"
}

env_for_cuda() {
  export CUDA_HOME="$cuda_home"
  export PATH="$cuda_home/bin:$PATH"
}

build() {
  env_for_cuda
  cargo build --release --locked --features cuda --bin enclave
  cargo test --release --locked --features cuda --no-run --test cuda_kernels --test cuda_model
}

# Stripped, each binary is about 70 MB (candle's PTX for every dtype is embedded), so they
# travel xz-compressed (about 13 MB each) and run-on-gpu.sh unpacks them.
carry() {
  local out="$root/.carry"
  rm -rf "$out" && mkdir -p "$out"
  pack() {
    strip -o "$out/$2" "$1"
    xz -T0 -9 "$out/$2"
  }
  pack "$CARGO_TARGET_DIR/release/enclave" enclave
  for t in cuda_kernels cuda_model; do
    local bin
    bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/$t-* | grep -v '\.d$' | head -1)
    pack "$bin" "$t"
  done
  cp kernels/run-on-gpu.sh "$out/"
  du -sh "$out"/*
}

case "${1:-all}" in
  toolkit) toolkit ;;
  build) toolkit && build ;;
  carry) carry ;;
  all) toolkit && build && carry ;;
  *) echo "usage: kernels/build-cuda.sh [toolkit|build|carry]" >&2; exit 2 ;;
esac
