//! The encoder's linear layers. On CPUs with AVX-512 the weights are packed once at load for
//! `cpu::packed`, whose kernel suits the encoder's thousands of rows per batch; elsewhere the
//! shared `Linear` runs them. Several layers that read the same input (query, key and value)
//! can load as one, so the input is read once and the output is one `[rows, Σ out]` block.
//! Must not depend on anything above `model`.

use candle_core::Device;
use rayon::prelude::*;

use super::super::error::Result;
use super::super::layers::{load_vector, with_f32, Linear};
use super::super::weights::Weights;

enum Kind {
    #[cfg(target_arch = "x86_64")]
    /// The bias is folded into the packed weight.
    Packed {
        weight: crate::model::cpu::packed::PackedB,
    },
    /// One `Linear` per part, outputs side by side.
    Plain(Vec<Linear>),
}

pub(super) struct Dense {
    kind: Kind,
    n_in: usize,
    /// Output columns of each part.
    n_out: usize,
}

impl Dense {
    /// The layers `{prefix}.weight` (`[n_out, n_in]`) and `{prefix}.bias` for each prefix,
    /// computed as one.
    pub fn load(
        w: &Weights,
        prefixes: &[String],
        n_in: usize,
        n_out: usize,
        device: &Device,
    ) -> Result<Self> {
        #[cfg(target_arch = "x86_64")]
        if device.is_cpu() && crate::model::cpu::packed::available() {
            let mut weight = Vec::with_capacity(prefixes.len() * n_out * n_in);
            let mut bias = Vec::with_capacity(prefixes.len() * n_out);
            for p in prefixes {
                let view = w.get(&format!("{p}.weight"))?;
                view.expect_shape(&[n_out, n_in])?;
                weight.extend(view.to_f32_vec());
                let b = load_vector(w, &format!("{p}.bias"), n_out, device)?;
                with_f32(&b, |b| bias.extend_from_slice(b))?;
            }
            let packed =
                crate::model::cpu::packed::PackedB::new(&weight, prefixes.len() * n_out, n_in)
                    .with_bias(&bias);
            return Ok(Self {
                kind: Kind::Packed { weight: packed },
                n_in,
                n_out,
            });
        }
        let parts = prefixes
            .iter()
            .map(|p| Linear::load(w, p, n_in, n_out, true, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kind: Kind::Plain(parts),
            n_in,
            n_out,
        })
    }

    /// `xs` `[rows, n_in]` → `[rows, parts · n_out]`.
    pub fn forward_rows(&self, xs: &[f32], rows: usize) -> Result<Vec<f32>> {
        match &self.kind {
            #[cfg(target_arch = "x86_64")]
            Kind::Packed { weight } => Ok(crate::model::cpu::packed::gemm_parallel(
                xs, rows, self.n_in, weight,
            )),
            Kind::Plain(parts) if parts.len() == 1 => parts[0].forward_rows(xs, rows),
            Kind::Plain(parts) => {
                let outs = parts
                    .iter()
                    .map(|p| p.forward_rows(xs, rows))
                    .collect::<Result<Vec<_>>>()?;
                let width = parts.len() * self.n_out;
                let mut out = vec![0f32; rows * width];
                out.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
                    for (part, o) in row.chunks_mut(self.n_out).zip(&outs) {
                        part.copy_from_slice(&o[r * self.n_out..(r + 1) * self.n_out]);
                    }
                });
                Ok(out)
            }
        }
    }
}
