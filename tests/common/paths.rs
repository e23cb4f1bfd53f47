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
