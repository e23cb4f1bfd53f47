//! An exclusive, advisory lock on the knowledge directory, so that two processes never write
//! the same store and index files. Released when the holder exits, even by `kill -9`.
//! Depends on libc only.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::{KnowledgeError, Result};

pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("kb.lock");
        let file = File::create(&path).map_err(|source| KnowledgeError::Io {
            path: path.clone(),
            source,
        })?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(KnowledgeError::Locked {
                path: dir.to_path_buf(),
            });
        }
        Ok(Self { _file: file })
    }
}
