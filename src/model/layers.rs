//! The building blocks of a decoder: linear layers over mapped weights, RMSNorm, the token
//! embedding and the gated MLP.
//!
//! Activations are f32 candle tensors; weights stay in their file's dtype and are read by the
//! CPU kernels in place. Depends on `weights` and `cpu`, never on a sequence or a request.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use super::cpu::linear::{linear, MatRef};
use super::error::{ModelError, Result};
use super::resident::{ResidentBytes, RELEASE_CHUNK};
use super::weights::{typed_slice, WeightDtype, WeightResidency, WeightView, Weights};

/// Runs `f` on the f32 elements of a contiguous CPU tensor without copying them.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => {
            let n = layout.shape().elem_count();
            Ok(f(&v[layout.start_offset()..layout.start_offset() + n]))
        }
        _ => Err(ModelError::Candle(candle_core::Error::Msg(format!(
            "expected an f32 CPU tensor, found {:?} on {:?}",
            t.dtype(),
            t.device()
        )))),
    }
}

/// A weight matrix readable by the kernels: in place in the mapping, resident in huge pages
/// (bf16 repacked into the panel kernel's layout where that kernel runs), or (for the rare
/// misaligned file) an owned f32 copy.
enum Matrix {
    Mapped(WeightView),
    Resident {
        bytes: ResidentBytes,
        dtype: WeightDtype,
    },
    #[cfg(target_arch = "x86_64")]
    Panels {
        packed: ResidentBytes,
        shape: super::cpu::panels::PanelShape,
    },
    Owned(Vec<f32>),
}

fn mat_ref(bytes: &[u8], dtype: WeightDtype) -> Option<MatRef<'_>> {
    Some(match dtype {
        WeightDtype::F32 => MatRef::F32(typed_slice(bytes)?),
        WeightDtype::F16 => MatRef::F16(typed_slice(bytes)?),
        WeightDtype::Bf16 => MatRef::Bf16(typed_slice(bytes)?),
    })
}

impl Matrix {
    fn new(view: WeightView, residency: WeightResidency) -> Result<Self> {
        if mat_ref(view.bytes(), view.dtype).is_none() {
            return Ok(Self::Owned(view.to_f32_vec()));
        }
        Ok(match residency {
            WeightResidency::Mapped => Self::Mapped(view),
            WeightResidency::HugePages => {
                let io = |source| ModelError::Io {
                    path: view.path().to_path_buf(),
                    source,
                };
                #[cfg(target_arch = "x86_64")]
                if let Some(packed) = Self::packed(&view).map_err(io)? {
                    return Ok(packed);
                }
                let bytes = ResidentBytes::copy_of(&view).map_err(io)?;
                Self::Resident {
                    bytes,
                    dtype: view.dtype,
                }
            }
        })
    }

    /// The panel-packed copy of a 2-D bf16 matrix, when the panel kernel can run here.
    #[cfg(target_arch = "x86_64")]
    fn packed(view: &WeightView) -> std::io::Result<Option<Self>> {
        use super::cpu::panels::{self, PanelShape};
        if view.dtype != WeightDtype::Bf16 || !panels::available() {
            return Ok(None);
        }
        let (Some(src), &[n, k]) = (
            typed_slice::<half::bf16>(view.bytes()),
            view.shape.as_slice(),
        ) else {
            return Ok(None);
        };
        let shape = PanelShape { n, k };
        let packed = ResidentBytes::filled::<u16>(shape.len(), |dst| {
            let mut released = 0;
            panels::pack(src, shape, dst, |rows| {
                // Mapped pages behind us are done with; keep memory at one model's size.
                let upto = rows * k * 2;
                if upto - released >= RELEASE_CHUNK || rows == n {
                    view.release_pages(released, upto);
                    released = upto;
                }
            });
        })?;
        Ok(Some(Self::Panels { packed, shape }))
    }

    fn as_ref(&self) -> MatRef<'_> {
        // Alignment was checked in `new` (mapped) or is guaranteed (resident, huge-page
        // aligned), so the typed views exist; the empty fallbacks are unreachable.
        match self {
            Self::Owned(v) => MatRef::F32(v),
            Self::Mapped(v) => mat_ref(v.bytes(), v.dtype).unwrap_or(MatRef::F32(&[])),
            Self::Resident { bytes, dtype } => {
                mat_ref(bytes.bytes(), *dtype).unwrap_or(MatRef::F32(&[]))
            }
            #[cfg(target_arch = "x86_64")]
            Self::Panels { packed, shape } => {
                MatRef::Panels(typed_slice(packed.bytes()).unwrap_or(&[]), *shape)
            }
        }
    }

    fn dtype(&self) -> WeightDtype {
        match self {
            Self::Owned(_) => WeightDtype::F32,
            Self::Mapped(v) => v.dtype,
            Self::Resident { dtype, .. } => *dtype,
            #[cfg(target_arch = "x86_64")]
            Self::Panels { .. } => WeightDtype::Bf16,
        }
    }
}

pub struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Loads `{prefix}.weight` (`[out, in]`) and, when `bias`, `{prefix}.bias`.
    pub fn load(
        w: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Self> {
        let view = w.get(&format!("{prefix}.weight"))?;
        view.expect_shape(&[out_features, in_features])?;
        let bias = if bias {
            Some(load_vector(
                w,
                &format!("{prefix}.bias"),
                out_features,
                device,
            )?)
        } else {
            None
        };
        Self::from_view(view, bias, w.residency())
    }

    /// A linear layer over an already-checked `[out, in]` view (the tied LM head).
    pub fn from_view(
        view: WeightView,
        bias: Option<Tensor>,
        residency: WeightResidency,
    ) -> Result<Self> {
        let (out_features, in_features) = (view.shape[0], view.shape[1]);
        Ok(Self {
            weight: Matrix::new(view, residency)?,
            bias,
            in_features,
            out_features,
        })
    }

    pub fn weight_dtype(&self) -> WeightDtype {
        self.weight.dtype()
    }

    /// `x`: `[rows, in]` → `[rows, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let out = with_f32(x, |xs| self.forward_rows(xs, rows))??;
        Ok(Tensor::from_vec(
            out,
            (rows, self.out_features),
            x.device(),
        )?)
    }

    /// As `forward` on plain rows (`xs` is `[rows, in]`), for callers that fuse what follows.
    pub(crate) fn forward_rows(&self, xs: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; rows * self.out_features];
        linear(
            xs,
            rows,
            self.in_features,
            self.weight.as_ref(),
            self.out_features,
            &mut out,
        );
        if let Some(b) = &self.bias {
            with_f32(b, |bias| {
                out.par_chunks_mut(self.out_features)
                    .for_each(|row| row.iter_mut().zip(bias).for_each(|(o, b)| *o += b))
            })?;
        }
        Ok(out)
    }
}

/// A 1-D tensor of `len` elements, widened to f32.
pub fn load_vector(w: &Weights, name: &str, len: usize, device: &Device) -> Result<Tensor> {
    let view = w.get(name)?;
    view.expect_shape(&[len])?;
    Ok(Tensor::from_vec(view.to_f32_vec(), len, device)?)
}

pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(w: &Weights, name: &str, len: usize, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: load_vector(w, name, len, device)?,
            eps: eps as f32,
        })
    }

    /// Normalises over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

/// The token embedding, read row by row from the mapping (and reused as the LM head when
/// the model ties them).
pub struct Embedding {
    view: WeightView,
    hidden: usize,
}

impl Embedding {
    pub fn load(w: &Weights, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        let view = w.get(name)?;
        view.expect_shape(&[vocab, hidden])?;
        Ok(Self { view, hidden })
    }

    pub fn view(&self) -> &WeightView {
        &self.view
    }

    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.hidden];
        for (row, &id) in out.chunks_exact_mut(self.hidden).zip(ids) {
            self.view.row_to_f32(id as usize, row);
        }
        Ok(Tensor::from_vec(out, (ids.len(), self.hidden), device)?)
    }
}

/// `down(silu(gate(x)) * up(x))`.
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn load(
        w: &Weights,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::load(
                w,
                &format!("{prefix}.gate_proj"),
                hidden,
                intermediate,
                bias,
                device,
            )?,
            up_proj: Linear::load(
                w,
                &format!("{prefix}.up_proj"),
                hidden,
                intermediate,
                bias,
                device,
            )?,
            down_proj: Linear::load(
                w,
                &format!("{prefix}.down_proj"),
                intermediate,
                hidden,
                bias,
                device,
            )?,
        })
    }

    /// `silu(gate) * up` is fused and split across threads: over `[rows, intermediate]` it is
    /// the largest element-wise pass of a layer.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let (mut gate, up) = with_f32(x, |xs| -> Result<_> {
            Ok((
                self.gate_proj.forward_rows(xs, rows)?,
                self.up_proj.forward_rows(xs, rows)?,
            ))
        })??;
        const CHUNK: usize = 16 * 1024;
        gate.par_chunks_mut(CHUNK)
            .zip(up.par_chunks(CHUNK))
            .for_each(|(g, u)| {
                for (g, u) in g.iter_mut().zip(u) {
                    *g = *g / (1.0 + (-*g).exp()) * u;
                }
            });
        let inter = self.gate_proj.out_features;
        self.down_proj
            .forward(&Tensor::from_vec(gate, (rows, inter), x.device())?)
    }
}
