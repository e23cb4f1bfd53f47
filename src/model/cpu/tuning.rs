//! Process-wide tuning for the CPU forward pass: the allocator, and candle's own thread pool.
//! Called once by the binaries at start, before any tensor exists; never by library code.
//!
//! Allocator:
//! glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with
//! a fresh mapping and unmaps it on free, so each layer's activation buffers are faulted in and
//! zeroed by the kernel again: a third of a prefill's time, measured. Raising the thresholds
//! keeps freed buffers in the heap for the next layer.
//!
//! Threads: candle's element-wise ops run on a pool of their own whose idle workers spin,
//! beside rayon's pool that runs our kernels; on a small machine the two fight for the same
//! cores (a quarter of a 16-sequence decode step, measured). Candle's ops are cheap next to
//! the matrix products, so they run on the calling thread.

/// Applies both settings; see the module doc.
pub fn apply() {
    keep_freed_buffers(256 << 20);
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Read once, when candle first builds its pool: nothing has run yet.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Keeps freed blocks up to `max_reuse_bytes` in the heap instead of returning them to the OS.
pub fn keep_freed_buffers(max_reuse_bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(max_reuse_bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only adjusts allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
            libc::mallopt(libc::M_TRIM_THRESHOLD, bytes.saturating_mul(2));
            // One heap for every thread: buffers freed on one thread are reused on another,
            // and trimming at idle reaches all of them (per-thread heaps kept ratcheting up).
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = max_reuse_bytes;
}

/// Hands the heap's free memory back to the system. Called when an engine goes idle: the
/// buffers kept for the next layer are only worth keeping while requests run, and resident
/// memory should return to its idle level after a load.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
