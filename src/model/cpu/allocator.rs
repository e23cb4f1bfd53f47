//! Process-wide allocator tuning for the forward pass.
//!
//! glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with
//! a fresh mapping and unmaps it on free, so each layer's activation buffers are faulted in and
//! zeroed by the kernel again: a third of a prefill's time, measured. Raising the thresholds
//! keeps freed buffers in the heap for the next layer. Called once by the binaries, never by
//! library code on its own.

/// Keeps freed blocks up to `max_reuse_bytes` in the heap instead of returning them to the OS.
pub fn keep_freed_buffers(max_reuse_bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(max_reuse_bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only adjusts allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
            libc::mallopt(libc::M_TRIM_THRESHOLD, bytes.saturating_mul(2));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = max_reuse_bytes;
}
