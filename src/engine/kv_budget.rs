//! Sizing the KV cache from a memory budget: a byte count, a share of the memory that is free
//! when the engine starts, or (the default) a rule per device: a fifth of free host memory on
//! the CPU, and on a GPU whatever `--gpu-memory-utilization` of its memory leaves once the
//! weights are loaded and room for one step's activations is set aside.
//!
//! Depends on nothing in the crate but the engine error; reads `/proc/meminfo` on Linux.

use std::str::FromStr;

use super::error::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum KvCacheMemory {
    /// The device's rule: `HOST_SHARE` of free host memory, or the GPU utilization rule.
    #[default]
    Auto,
    Bytes(u64),
    /// A share, in (0, 1], of the memory available at start (on a GPU: once weights are loaded).
    FractionOfFree(f64),
}

/// The share of free host memory a CPU engine's KV cache takes when no size is given.
pub const HOST_SHARE: f64 = 0.2;

/// A GPU's memory as the driver reports it once the weights are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    pub total: u64,
    pub free: u64,
}

/// Bytes for a GPU's KV cache. `Auto` follows vLLM's rule: of `utilization × total`, take away
/// what is already in use (weights, the CUDA context, other processes) and `reserve` (one step's
/// activations), and the rest is the cache. A share takes that share of free memory after
/// `reserve`; bytes are taken as given.
pub fn gpu_kv_bytes(
    memory: KvCacheMemory,
    gpu: GpuMemory,
    utilization: f64,
    reserve: u64,
) -> Result<u64, EngineError> {
    let used = gpu.total.saturating_sub(gpu.free);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let bytes = match memory {
        KvCacheMemory::Bytes(b) => return Ok(b),
        KvCacheMemory::FractionOfFree(f) => (gpu.free.saturating_sub(reserve) as f64 * f) as u64,
        KvCacheMemory::Auto => {
            if !(utilization > 0.0 && utilization <= 1.0) {
                return Err(EngineError::Config(format!(
                    "--gpu-memory-utilization must be in (0, 1], got {utilization}"
                )));
            }
            let budget = (gpu.total as f64 * utilization) as u64;
            budget.saturating_sub(used).saturating_sub(reserve)
        }
    };
    if bytes == 0 {
        return Err(EngineError::Config(format!(
            "no GPU memory is left for the KV cache: {:.2} of {:.2} GiB are in use after loading and {:.2} GiB are kept for activations; raise --gpu-memory-utilization (now {utilization}), lower --max-num-batched-tokens, or serve a smaller model",
            gib(used),
            gib(gpu.total),
            gib(reserve)
        )));
    }
    Ok(bytes)
}

impl FromStr for KvCacheMemory {
    type Err = String;

    /// `0.3` is a share of free memory; `4GiB`, `512MiB`, `2GB` or a plain integer are bytes.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!("'{s}' is not a KV cache size: give bytes (e.g. 4GiB, 512MiB, 1000000) or a share of free memory (e.g. 0.3)")
        };
        if t.contains('.') && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            let f: f64 = t.parse().map_err(|_| bad())?;
            if !(f > 0.0 && f <= 1.0) {
                return Err(format!(
                    "a KV cache share of free memory must be in (0, 1], got {f}"
                ));
            }
            return Ok(Self::FractionOfFree(f));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        let bytes = n.checked_mul(mult).ok_or_else(bad)?;
        if bytes == 0 {
            return Err("the KV cache needs more than 0 bytes".into());
        }
        Ok(Self::Bytes(bytes))
    }
}

/// Bytes of memory the system can still give out, if the platform says.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Blocks that fit the budget, capped at `max_useful` (more could never be used).
pub fn num_blocks(
    memory: KvCacheMemory,
    bytes_per_block: usize,
    available: Option<u64>,
    max_useful: usize,
) -> Result<usize, EngineError> {
    let share = |f: f64| -> Result<u64, EngineError> {
        let free = available.ok_or_else(|| {
            EngineError::Config(
                "free memory is unknown on this system; give --kv-cache-memory in bytes".into(),
            )
        })?;
        Ok((free as f64 * f) as u64)
    };
    let bytes = match memory {
        KvCacheMemory::Bytes(b) => b,
        KvCacheMemory::Auto => share(HOST_SHARE)?,
        KvCacheMemory::FractionOfFree(f) => share(f)?,
    };
    let blocks = (bytes / bytes_per_block.max(1) as u64) as usize;
    if blocks == 0 {
        return Err(EngineError::Config(format!(
            "a KV cache of {bytes} bytes holds no block of {bytes_per_block} bytes; give it more memory (--kv-cache-memory)"
        )));
    }
    Ok(blocks.min(max_useful.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_bytes_or_a_share() {
        assert_eq!("0.25".parse(), Ok(KvCacheMemory::FractionOfFree(0.25)));
        assert_eq!("4GiB".parse(), Ok(KvCacheMemory::Bytes(4 << 30)));
        assert_eq!("512MiB".parse(), Ok(KvCacheMemory::Bytes(512 << 20)));
        assert_eq!("2GB".parse(), Ok(KvCacheMemory::Bytes(2_000_000_000)));
        assert_eq!("1000".parse(), Ok(KvCacheMemory::Bytes(1000)));
        for bad in ["1.5", "0", "abc", "12XB", "0.0", ""] {
            assert!(
                bad.parse::<KvCacheMemory>().is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn blocks_follow_the_budget_and_the_cap() {
        assert_eq!(
            num_blocks(KvCacheMemory::Bytes(10_000), 1000, None, 100).ok(),
            Some(10)
        );
        assert_eq!(
            num_blocks(KvCacheMemory::Bytes(10_000), 1000, None, 4).ok(),
            Some(4)
        );
        let share = num_blocks(KvCacheMemory::FractionOfFree(0.5), 1000, Some(8000), 100);
        assert_eq!(share.ok(), Some(4));
        assert!(num_blocks(KvCacheMemory::FractionOfFree(0.5), 1000, None, 100).is_err());
        assert!(num_blocks(KvCacheMemory::Bytes(999), 1000, None, 100).is_err());
        // Auto on the host is a fifth of what is free.
        let auto = num_blocks(KvCacheMemory::Auto, 1000, Some(50_000), 100);
        assert_eq!(auto.ok(), Some(10));
    }

    #[test]
    fn gpu_budget_leaves_the_weights_and_the_reserve_out() {
        const GIB: u64 = 1 << 30;
        // 80 GiB card, 17 GiB in use after loading an 8B model, 1 GiB for activations.
        let gpu = GpuMemory {
            total: 80 * GIB,
            free: 63 * GIB,
        };
        let auto = gpu_kv_bytes(KvCacheMemory::Auto, gpu, 0.9, GIB).unwrap();
        assert_eq!(auto, (80.0 * 0.9 * GIB as f64) as u64 - 18 * GIB);
        // A lower utilization shrinks the cache by exactly the difference.
        let less = gpu_kv_bytes(KvCacheMemory::Auto, gpu, 0.5, GIB).unwrap();
        assert_eq!(auto - less, (80.0 * 0.4 * GIB as f64) as u64);
        assert_eq!(
            gpu_kv_bytes(KvCacheMemory::FractionOfFree(0.5), gpu, 0.9, GIB).unwrap(),
            31 * GIB
        );
        assert_eq!(
            gpu_kv_bytes(KvCacheMemory::Bytes(5), gpu, 0.9, GIB).unwrap(),
            5
        );
        // Weights past the budget: an error naming the numbers and the fixes.
        let err = gpu_kv_bytes(KvCacheMemory::Auto, gpu, 0.2, GIB)
            .unwrap_err()
            .to_string();
        assert!(err.contains("17.00 of 80.00 GiB"), "{err}");
        assert!(err.contains("--gpu-memory-utilization"), "{err}");
        assert!(gpu_kv_bytes(KvCacheMemory::Auto, gpu, 1.5, GIB).is_err());
        assert!(gpu_kv_bytes(KvCacheMemory::Auto, gpu, 0.0, GIB).is_err());
    }
}
