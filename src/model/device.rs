//! Where a model runs: `cpu`, or `cuda` / `cuda:N` for the N-th NVIDIA GPU.
//!
//! Owns parsing the device option and opening the device. Depends on nothing in the crate but
//! the model error. A build without the `cuda` feature parses `cuda` too, so the refusal names
//! the fix instead of calling the word unknown.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use super::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => return Ok(Self::Cpu),
            "cuda" | "gpu" => return Ok(Self::Cuda(0)),
            _ => {}
        }
        if let Some(n) = t.strip_prefix("cuda:") {
            if let Ok(i) = n.parse() {
                return Ok(Self::Cuda(i));
            }
        }
        Err(format!(
            "`{s}` is not a device; use cpu, cuda or cuda:N (N counts GPUs from 0)"
        ))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// Whether this build can open the device at all.
    pub fn is_built_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda(_) => cfg!(feature = "cuda"),
        }
    }

    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !self.is_built_in() => Err(ModelError::Device(format!(
                "this build of enclave has no CUDA support, so --device {self} cannot run; rebuild with kernels/build-cuda.sh (cargo build --features cuda) or use --device cpu"
            ))),
            Self::Cuda(i) => Device::new_cuda(i).map_err(|e| {
                // One line: the driver's answer without the backtrace candle may attach.
                let cause = match &e {
                    candle_core::Error::WithBacktrace { inner, .. } => inner.to_string(),
                    other => other.to_string(),
                };
                ModelError::Device(format!(
                    "cannot open GPU {i}: {cause}; check that the NVIDIA driver is loaded (nvidia-smi) and that LD_LIBRARY_PATH holds the CUDA 13 libraries"
                ))
            }),
        }
    }
}

/// `(free, total)` bytes of a GPU's memory as its driver reports them; `None` on the CPU.
pub fn free_and_total(device: &Device) -> Result<Option<(u64, u64)>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let (free, total) =
            d.cuda_stream().context().mem_get_info().map_err(|e| {
                ModelError::Device(format!("cannot read the GPU's free memory: {e}"))
            })?;
        return Ok(Some((free as u64, total as u64)));
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda(0)),
            ("gpu", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec));
            assert_eq!(spec.to_string().parse::<DeviceSpec>(), Ok(spec));
        }
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1", "metal"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains("cpu, cuda or cuda:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_build_without_cuda_names_the_fix() {
        if cfg!(feature = "cuda") {
            return;
        }
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(
            err.contains("no CUDA support") && err.contains("build-cuda.sh"),
            "{err}"
        );
        assert!(matches!(DeviceSpec::Cpu.open(), Ok(Device::Cpu)));
    }
}
