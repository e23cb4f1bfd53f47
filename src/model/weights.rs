//! Memory-mapped safetensors weights: one file or a sharded set, looked up by tensor name.
//!
//! Owns the mappings and the validation of every header against its file. Tensors are views
//! into the mapping, never copies, so a model costs its file size in page cache and not twice
//! that in RAM. Depends on nothing above `model`. Invariant: every `WeightView` lies entirely
//! inside its file and its byte length equals `numel * dtype size`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;

use super::error::{ModelError, Result};

/// Element types the forward pass reads directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    F16,
    Bf16,
}

impl WeightDtype {
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    tensors: HashMap<String, TensorInfo>,
    data_start: usize,
}

/// A read-only view of one tensor inside a mapped file.
#[derive(Clone)]
pub struct WeightView {
    file: Arc<MappedFile>,
    name: String,
    pub dtype: WeightDtype,
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for WeightView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WeightView({} {:?} {})",
            self.name,
            self.shape,
            self.dtype.name()
        )
    }
}

impl WeightView {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.file.mmap[self.start..self.end]
    }

    /// Fails with a message naming the file and tensor unless the shape is exactly `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(ModelError::TensorShape {
                path: self.path().to_path_buf(),
                name: self.name.clone(),
                expected: expected.to_vec(),
                actual: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// The elements widened to f32 (a copy; for small tensors such as norms and biases).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = self.bytes();
        match self.dtype {
            WeightDtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            WeightDtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            WeightDtype::Bf16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }

    /// Row `row` of a 2-D tensor, widened to f32 into `out`.
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let cols = out.len();
        let esz = self.dtype.size_in_bytes();
        let b = &self.bytes()[row * cols * esz..(row + 1) * cols * esz];
        match self.dtype {
            WeightDtype::F32 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            WeightDtype::F16 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            WeightDtype::Bf16 => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        }
    }

    /// Drops the pages of bytes `from..to` of this tensor from the process's mapping (they
    /// stay in the page cache and come back on the next read), so a copy made elsewhere does
    /// not count twice in RSS. Only whole pages inside the range are dropped.
    pub fn release_pages(&self, from: usize, to: usize) {
        const PAGE: usize = 4096;
        let start = (self.start + from).div_ceil(PAGE) * PAGE;
        let end = (self.start + to.min(self.end - self.start)) / PAGE * PAGE;
        if end > start {
            // SAFETY: the mapping is private and read-only, so dropping its pages discards
            // nothing: later reads fault them back in from the file.
            let _ = unsafe {
                self.file.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

/// `bytes` as a slice of `T`, when aligned for it; a trailing partial element is ignored.
pub fn typed_slice<T: MappedElement>(bytes: &[u8]) -> Option<&[T]> {
    if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    // SAFETY: alignment was checked above, the length is rounded down to whole elements,
    // every bit pattern is a valid T (MappedElement's contract), and the borrow of `bytes`
    // bounds the result's lifetime.
    Some(unsafe {
        std::slice::from_raw_parts(
            bytes.as_ptr().cast::<T>(),
            bytes.len() / std::mem::size_of::<T>(),
        )
    })
}

/// Where the large matrices live while the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightResidency {
    /// Read in place from the file mapping (4 KiB pages; shared with the page cache).
    Mapped,
    /// Copied once from the mapping into transparent huge pages, releasing the mapped pages
    /// as each matrix is copied. Decode streams every weight per token, and with 4 KiB pages
    /// the TLB misses, not DRAM, set the pace; peak memory stays one model's size.
    HugePages,
}

impl Default for WeightResidency {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Self::HugePages
        } else {
            Self::Mapped
        }
    }
}

/// Element types that can be read straight out of a mapping: plain little-endian numbers with
/// no invalid bit patterns.
pub trait MappedElement: Copy + Send + Sync + 'static {}
impl MappedElement for f32 {}
impl MappedElement for f16 {}
impl MappedElement for bf16 {}
impl MappedElement for u8 {}
impl MappedElement for u16 {}

/// Every safetensors file of one model, indexed by tensor name.
pub struct Weights {
    dir: PathBuf,
    by_name: HashMap<String, Arc<MappedFile>>,
    residency: WeightResidency,
}

impl Weights {
    /// Maps `model.safetensors.index.json`'s shards, else `model.safetensors`, else every
    /// `*.safetensors` in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open_dir_with(dir, WeightResidency::default())
    }

    pub fn open_dir_with(dir: &Path, residency: WeightResidency) -> Result<Self> {
        let files = weight_files(dir)?;
        let mut by_name = HashMap::new();
        for path in files {
            let file = Arc::new(map_file(&path)?);
            for name in file.tensors.keys() {
                by_name.insert(name.clone(), Arc::clone(&file));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            by_name,
            residency,
        })
    }

    pub fn residency(&self) -> WeightResidency {
        self.residency
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<WeightView> {
        let file = self
            .by_name
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let info = &file.tensors[name];
        let dtype = match info.dtype {
            Dtype::F32 => WeightDtype::F32,
            Dtype::F16 => WeightDtype::F16,
            Dtype::BF16 => WeightDtype::Bf16,
            other => {
                return Err(ModelError::TensorDtype {
                    path: file.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(WeightView {
            file: Arc::clone(file),
            name: name.to_string(),
            dtype,
            shape: info.shape.clone(),
            start: file.data_start + info.data_offsets.0,
            end: file.data_start + info.data_offsets.1,
        })
    }

    /// The dtype most of the weights are stored in (the first large tensor decides).
    /// Every tensor name across the files, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn dominant_dtype(&self) -> Option<WeightDtype> {
        self.tensor_names()
            .into_iter()
            .filter_map(|n| self.get(n).ok())
            .max_by_key(|v| v.numel())
            .map(|v| v.dtype)
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return shard_files(&index, dir);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

fn shard_files(index: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: index.to_path_buf(),
            source,
        })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Field {
            path: index.to_path_buf(),
            field: "weight_map".into(),
            problem: "missing or not an object".into(),
        })?;
    let mut files = Vec::new();
    for (tensor, file) in map {
        let name = file.as_str().ok_or_else(|| ModelError::Field {
            path: index.to_path_buf(),
            field: format!("weight_map.{tensor}"),
            problem: "expected a file name".into(),
        })?;
        let path = dir.join(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn map_file(path: &Path) -> Result<MappedFile> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the mapping is read-only; a model file changed underneath a running server is
    // outside what we can defend against, as for every mmap-based loader.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |problem: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        problem,
    };
    if mmap.len() < 8 {
        return Err(bad(format!(
            "file is {} bytes, too short for a header",
            mmap.len()
        )));
    }
    let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
        .map_err(|e| bad(format!("{e} (is the file truncated?)")))?;
    let data_start = 8 + header_len;
    let data_len = metadata.data_len();
    if data_start + data_len > mmap.len() {
        return Err(bad(format!(
            "header describes {data_len} bytes of data but the file holds {}; the file is truncated",
            mmap.len().saturating_sub(data_start)
        )));
    }
    let mut tensors = HashMap::new();
    for (name, info) in metadata.tensors() {
        let numel: usize = info.shape.iter().product();
        let (a, b) = info.data_offsets;
        if b < a || b - a != numel * info.dtype.bitsize() / 8 {
            return Err(bad(format!(
                "tensor `{name}`: byte range {a}..{b} does not match shape {:?}",
                info.shape
            )));
        }
        tensors.insert(name, info.clone());
    }
    Ok(MappedFile {
        path: path.to_path_buf(),
        mmap,
        tensors,
        data_start,
    })
}
