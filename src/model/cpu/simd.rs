//! Dot products and axpy over f32 activations and f32/f16/bf16 data, with AVX-512 paths chosen
//! at run time and portable fallbacks.
//!
//! Invariant: every path returns the same value up to float reassociation; callers may not
//! depend on the summation order.

use half::{bf16, f16};

/// Element types stored in weights or the KV cache, widened to f32 for arithmetic.
pub trait Element: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// `Σ a[i] * b[i]` with `a` in f32.
    fn dot(a: &[f32], b: &[Self]) -> f32;
    /// `out[i] += w * b[i]`.
    fn axpy(out: &mut [f32], w: f32, b: &[Self]);
}

fn dot_scalar<T: Element>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l].to_f32();
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i].to_f32();
    }
    s
}

fn axpy_scalar<T: Element>(out: &mut [f32], w: f32, b: &[T]) {
    for (o, v) in out.iter_mut().zip(b) {
        *o += w * v.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn has_avx512() -> bool {
    false
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::dot_f32(a, b) };
        }
        dot_scalar(a, b)
    }
    fn axpy(out: &mut [f32], w: f32, b: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: as above.
            return unsafe { x86::axpy_f32(out, w, b) };
        }
        axpy_scalar(out, w, b)
    }
}

impl Element for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn dot(a: &[f32], b: &[bf16]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: as above.
            return unsafe { x86::dot_bf16(a, b) };
        }
        dot_scalar(a, b)
    }
    fn axpy(out: &mut [f32], w: f32, b: &[bf16]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: as above.
            return unsafe { x86::axpy_bf16(out, w, b) };
        }
        axpy_scalar(out, w, b)
    }
}

impl Element for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: as above.
            return unsafe { x86::dot_f16(a, b) };
        }
        dot_scalar(a, b)
    }
    fn axpy(out: &mut [f32], w: f32, b: &[f16]) {
        axpy_scalar(out, w, b)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// Widens 16 bf16 values to f32: bf16 is the top half of an f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn load_bf16x16(p: *const bf16) -> __m512 {
        let h = _mm256_loadu_si256(p.cast());
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn load_f16x16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }

    macro_rules! dot_impl {
        ($name:ident, $t:ty, $load:expr) => {
            #[target_feature(enable = "avx512f")]
            pub unsafe fn $name(a: &[f32], b: &[$t]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut acc0 = _mm512_setzero_ps();
                let mut acc1 = _mm512_setzero_ps();
                let mut i = 0;
                while i + 32 <= n {
                    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), $load(pb.add(i)), acc0);
                    acc1 = _mm512_fmadd_ps(
                        _mm512_loadu_ps(pa.add(i + 16)),
                        $load(pb.add(i + 16)),
                        acc1,
                    );
                    i += 32;
                }
                if i + 16 <= n {
                    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), $load(pb.add(i)), acc0);
                    i += 16;
                }
                let mut s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
                while i < n {
                    s += *pa.add(i) * super::Element::to_f32(*pb.add(i));
                    i += 1;
                }
                s
            }
        };
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_f32x16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }

    dot_impl!(dot_f32, f32, load_f32x16);
    dot_impl!(dot_bf16, bf16, load_bf16x16);
    dot_impl!(dot_f16, f16, load_f16x16);

    macro_rules! axpy_impl {
        ($name:ident, $t:ty, $load:expr) => {
            #[target_feature(enable = "avx512f")]
            pub unsafe fn $name(out: &mut [f32], w: f32, b: &[$t]) {
                let n = out.len().min(b.len());
                let (po, pb) = (out.as_mut_ptr(), b.as_ptr());
                let wv = _mm512_set1_ps(w);
                let mut i = 0;
                while i + 16 <= n {
                    let o = _mm512_loadu_ps(po.add(i));
                    _mm512_storeu_ps(po.add(i), _mm512_fmadd_ps(wv, $load(pb.add(i)), o));
                    i += 16;
                }
                while i < n {
                    *po.add(i) += w * super::Element::to_f32(*pb.add(i));
                    i += 1;
                }
            }
        };
    }

    axpy_impl!(axpy_f32, f32, load_f32x16);
    axpy_impl!(axpy_bf16, bf16, load_bf16x16);
}
