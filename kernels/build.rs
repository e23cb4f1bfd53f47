//! Compiles every `cuda/*.cu` to PTX with nvcc, for the compute capability in
//! `CUDA_COMPUTE_CAP` (90, the H100, when unset). The PTX is embedded by `src/lib.rs` and
//! loaded by the driver at run time, so the binary carries no CUDA toolkit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(root) = std::env::var_os(var) {
            let p = Path::new(&root).join("bin").join("nvcc");
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from("nvcc")
}

fn main() {
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_digit()) {
        panic!("CUDA_COMPUTE_CAP must be digits such as 90 (H100) or 80 (A100), got `{cap}`");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = Path::new("cuda");
    println!("cargo:rerun-if-changed=cuda");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(src)
        .expect("kernels/cuda is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu" || e == "cuh"))
        .collect();
    sources.sort();
    let nvcc = nvcc();
    for cu in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "cu")) {
        println!("cargo:rerun-if-changed={}", cu.display());
        let stem = cu.file_stem().and_then(|s| s.to_str()).expect("UTF-8 kernel names");
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "--use_fast_math"])
            .arg(format!("-arch=sm_{cap}"))
            .arg("-Icuda")
            .arg("-o")
            .arg(&ptx)
            .arg(cu)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nvcc ({}): {e}; set CUDA_HOME or NVCC, or use kernels/build-cuda.sh",
                    nvcc.display()
                )
            });
        if !status.success() {
            panic!("nvcc failed on {} ({status})", cu.display());
        }
    }
}
