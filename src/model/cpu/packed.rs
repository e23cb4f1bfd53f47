//! Encoder-sized f32 `C = A · Bᵀ` for AVX-512: `A` `[m, k]` activations, `B` a `[n, k]` weight
//! as the weights file stores it, packed once at load ([`PackedB`]), `C` `[m, n]`.
//!
//! BLIS style: `B` lives in panels of [`NR`] columns stored `k`-major, and the micro-kernel keeps
//! an `R × NR` block of `C` in registers, updating it by one rank-1 product per `k` step (the
//! panel's two weight vectors, times each of `R` broadcast activations). Nothing is reduced
//! horizontally, which is what lifts it above the dot-product tiles of `gemm` for the encoder's
//! thousands of rows: 94-97% of one core's FMA peak against 76-87% there.
//!
//! Numerics: every `c[i, j]` is the sequential fused dot product
//! `acc = 0; for t in 0..k { acc = fma(a[i, t], b[j, t], acc) }` whatever `m` is, wherever the
//! row sits in the batch, whichever micro-kernel or thread produced it. `k` is blocked in
//! chunks of [`KC`] for the caches, but a later chunk resumes from the partial sums in `C`, so
//! the chunking adds no rounding. A text therefore embeds to the same bits alone or in a batch.
//! `reference` is that arithmetic in scalar code, and the tests hold the kernels to it.
//!
//! Used by the encoder only: the decoder's kernels must agree bit for bit with its decode
//! rows, which follow the `gemm` tile order. x86-64 only; check [`available`] first.

#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::{column_lanes, OutPtr};

/// Columns per packed panel of `B`: two zmm vectors per `k` step.
pub const NR: usize = 32;
/// zmm vectors per panel row.
const V: usize = NR / 16;
/// Most rows of `C` per micro-kernel: `MR · V` accumulators plus the `V` weight vectors and a
/// broadcast register fit in the 32 zmm registers, and each weight vector loaded feeds `MR`
/// FMAs, so loads never limit the FMA rate.
pub const MR: usize = 12;
/// `k` elements per cache block: the `MR × KC` block of `A` a micro-kernel reads (18 KiB) stays
/// in L1 across all the panels of a block. Does not affect results.
pub const KC: usize = 384;
/// Row blocks of `MR` per L2 row block: the `C` block they update (8 · 12 rows × 16 panels ×
/// 128 B = 192 KiB) stays in L2 from one `k` chunk to the next.
const MC_BLOCKS: usize = 8;
/// Most panels per L2 block: a chunk's `KC × NR` weight slices (16 × 48 KiB = 768 KiB) stay in
/// the 1 MiB L2 while the row blocks of an L2 row block pass over them.
const NC_PANELS: usize = 16;
/// Accumulator budget for narrow row blocks (see `group`).
const TAIL_ACCS: usize = 24;
/// Most panels a narrow micro-kernel covers at once.
const MAX_GROUP: usize = 4;

/// Whether this CPU can run the kernels (AVX-512F, detected at run time).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// One zmm-sized, zmm-aligned run of floats; the packed weights are stored as these so that
/// every weight load is an aligned 64-byte load that never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A `[n, k]` weight packed for [`gemm_packed`].
///
/// Layout: `panels() = ceil(n / NR)` panels; panel `p` holds columns `p·NR .. p·NR + NR` of `C`
/// (rows of the original `B`) as `k` consecutive groups of `NR` floats, i.e. element `(j, t)`
/// of `B` lives at `(p·k + t)·NR + (j − p·NR)` with `p = j / NR`. Columns past `n` are zero. The
/// buffer is 64-byte aligned and so is every group of `NR` floats.
#[derive(Clone)]
pub struct PackedB {
    data: Vec<Line>,
    /// One float per column, zero-padded like the panels: each output starts from it.
    bias: Vec<Line>,
    n: usize,
    k: usize,
}

impl PackedB {
    /// Packs `b`, a row-major `[n, k]` weight (`b[j·k + t]`).
    ///
    /// # Panics
    /// If `b.len() != n · k`.
    pub fn new(b: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(b.len(), n * k, "weight is not [n, k]");
        let panels = n.div_ceil(NR);
        let mut data = vec![Line([0.0; 16]); panels * k * V];
        let flat = lines_as_floats_mut(&mut data);
        for (j, row) in b.chunks_exact(k.max(1)).enumerate().take(n) {
            let (p, col) = (j / NR, j % NR);
            for (t, &w) in row.iter().enumerate() {
                flat[(p * k + t) * NR + col] = w;
            }
        }
        Self {
            data,
            bias: vec![Line([0.0; 16]); panels * V],
            n,
            k,
        }
    }

    /// Every output column `j` starts its sum from `bias[j]` instead of zero, which saves the
    /// separate pass over the output that adding a bias afterwards would cost.
    ///
    /// # Panics
    /// If `bias.len() != n`.
    pub fn with_bias(mut self, bias: &[f32]) -> Self {
        assert_eq!(bias.len(), self.n, "bias is not [n]");
        lines_as_floats_mut(&mut self.bias)[..self.n].copy_from_slice(bias);
        self
    }

    /// Output columns (rows of the original weight).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of `NR`-column panels; [`gemm_packed`] takes a range of these.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// The columns of `C` that panels `panels` cover (clipped to `n`).
    pub fn columns(&self, panels: Range<usize>) -> Range<usize> {
        (panels.start * NR).min(self.n)..(panels.end * NR).min(self.n)
    }

    fn bias_ptr(&self) -> *const f32 {
        self.bias.as_ptr().cast()
    }

    fn as_ptr(&self) -> *const f32 {
        self.data.as_ptr().cast()
    }
}

fn lines_as_floats(lines: &[Line]) -> &[f32] {
    // SAFETY: as in `lines_as_floats_mut`, shared.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 16) }
}

fn lines_as_floats_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: `Line` is `repr(C)` over `[f32; 16]` with no padding (64 bytes, align 64), so a
    // run of lines is a run of `16 · len` initialised floats with the same lifetime and borrow.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

/// Computes columns [`PackedB::columns`]`(panels)` of `c = a · bᵀ` for all `m` rows; other
/// columns of `c` are left untouched. `a` is `[m, k]` row-major, `c` is `[m, b.n()]` row-major.
///
/// # Panics
/// If AVX-512F is missing (check [`available`]), `k != b.k()`, `a` or `c` is too short, or the
/// panel range exceeds `b.panels()`.
pub fn gemm_packed(
    a: &[f32],
    m: usize,
    k: usize,
    b: &PackedB,
    c: &mut [f32],
    panels: Range<usize>,
) {
    check_args(a, m, k, b, c.len(), &panels);
    // SAFETY: arguments checked above; the exclusive borrow of `c` rules out concurrent writers.
    unsafe { gemm_unchecked(a, m, b, c.as_mut_ptr(), panels) }
}

/// As [`gemm_packed`], writing through a raw pointer so that several threads can fill disjoint
/// panel ranges of one output at once.
///
/// # Safety
/// `c` must be valid for reads and writes of `m · b.n()` floats, and while this runs nothing
/// else may access the columns `b.columns(panels)` of any of its `m` rows (other columns may be
/// written concurrently, e.g. by another call with a disjoint panel range).
///
/// # Panics
/// As [`gemm_packed`].
pub unsafe fn gemm_packed_raw(
    a: &[f32],
    m: usize,
    k: usize,
    b: &PackedB,
    c: *mut f32,
    panels: Range<usize>,
) {
    check_args(a, m, k, b, m * b.n, &panels);
    // SAFETY: forwarded from the caller's contract; the rest is checked above.
    unsafe { gemm_unchecked(a, m, b, c, panels) }
}

/// `a · bᵀ` (plus the bias) as a new `[m, n]` buffer, computed over rayon's pool, each task
/// filling a contiguous range of panels (disjoint columns); the split never changes a value.
/// The buffer is not zeroed first: the kernels store every element before reading it back.
pub fn gemm_parallel(a: &[f32], m: usize, k: usize, b: &PackedB) -> Vec<f32> {
    use rayon::prelude::*;
    let panels = b.panels();
    let len = m * b.n;
    check_args(a, m, k, b, len, &(0..panels));
    let mut c: Vec<f32> = Vec::with_capacity(len);
    // At least two panels per task: each task reads all of `a`.
    let tasks = rayon::current_num_threads().clamp(1, (panels / 2).max(1));
    let out = OutPtr(c.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let range = t * panels / tasks..(t + 1) * panels / tasks;
        // SAFETY: the allocation holds `m · n` floats and nothing else uses it during the
        // call; the tasks' panel ranges are disjoint, hence so are the columns they write.
        unsafe { gemm_packed_raw(a, m, k, b, out.get(), range) }
    });
    // SAFETY: the panels cover every column, so every one of the `m · n` floats was written.
    unsafe { c.set_len(len) };
    c
}

impl OutPtr {
    /// Through a method, so that closures capture the whole (`Sync`) wrapper, not the field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

fn check_args(a: &[f32], m: usize, k: usize, b: &PackedB, c_len: usize, panels: &Range<usize>) {
    assert!(available(), "AVX-512F is required");
    assert_eq!(k, b.k, "k does not match the packed weight");
    assert!(a.len() >= m * k, "a is shorter than [m, k]");
    assert!(c_len >= m * b.n, "c is shorter than [m, n]");
    assert!(
        panels.start <= panels.end && panels.end <= b.panels(),
        "panel range out of bounds"
    );
}

/// The exact arithmetic the kernels perform, one element at a time: the sequential fused dot
/// product along `k`.
#[cfg(test)]
fn reference(a: &[f32], m: usize, k: usize, b: &[f32], bias: &[f32], c: &mut [f32]) {
    let n = bias.len();
    for i in 0..m {
        let row = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let col = &b[j * k..(j + 1) * k];
            c[i * n + j] = row
                .iter()
                .zip(col)
                .fold(bias[j], |acc, (&x, &w)| x.mul_add(w, acc));
        }
    }
}

/// # Safety
/// AVX-512F present, `a` holds `m · b.k` floats, `c` is valid for `m · b.n` floats with the
/// columns of `panels` exclusively ours, and `panels.end <= b.panels()`.
unsafe fn gemm_unchecked(a: &[f32], m: usize, b: &PackedB, c: *mut f32, panels: Range<usize>) {
    if m == 0 || panels.is_empty() {
        return;
    }
    if b.k == 0 {
        // An empty sum: the kernels never run, so write the biases they would have produced.
        let cols = b.columns(panels);
        let bias = &lines_as_floats(&b.bias)[cols.clone()];
        for i in 0..m {
            // SAFETY: row `i`'s columns `cols` lie inside the `m · n` floats and are ours.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bias.as_ptr(),
                    c.add(i * b.n + cols.start),
                    cols.len(),
                )
            };
        }
        return;
    }
    // SAFETY: the caller's contract is this function's.
    unsafe { blocked(a, m, b, c, panels) }
}

/// `range` cut into the fewest pieces of at most `max` elements, as equal as possible.
fn balanced(range: Range<usize>, max: usize) -> impl Iterator<Item = Range<usize>> {
    let (start, len) = (range.start, range.len());
    let parts = len.div_ceil(max);
    (0..parts).map(move |i| start + i * len / parts..start + (i + 1) * len / parts)
}

/// The cache blocking: L2 block of panels → L2 block of rows → `k` chunk → row block of at most
/// `MR` rows → panels of the block, one micro-kernel call each.
///
/// Rows sit outside the `k` chunks (unlike BLIS's `k`-outer order) so that the partial sums of
/// `C` that the next chunk resumes from are still in L2 rather than in memory; that measured
/// ~5% faster at `k = 1536, m = 4096`.
///
/// `A` is read in place: a row block's `KC`-long slices are pulled into L1 by its first
/// micro-kernel call and reused from there by the others, which measured faster than packing
/// `A` (the packing pass costs more than the strided first touch). Row blocks are balanced
/// (`m = 13` runs as 7 + 6 rather than 12 + 1) so that no block is left with too few rows to
/// amortise its weight loads; the results do not depend on this split.
///
/// # Safety
/// As `gemm_unchecked`.
#[target_feature(enable = "avx512f")]
unsafe fn blocked(a: &[f32], m: usize, b: &PackedB, c: *mut f32, panels: Range<usize>) {
    let (n, k) = (b.n, b.k);
    let panel_stride = k * NR;
    let row_blocks: Vec<Range<usize>> = balanced(0..m, MR).collect();
    for pblock in balanced(panels, NC_PANELS) {
        for rblocks in row_blocks.chunks(MC_BLOCKS) {
            // The row blocks × k chunks of this L2 block, in order, so that each step can ask
            // for the next one's activations ahead of time.
            let steps: Vec<(&Range<usize>, usize)> = (0..k)
                .step_by(KC)
                .flat_map(|k0| rblocks.iter().map(move |r| (r, k0)))
                .collect();
            for (i, &(rows, k0)) in steps.iter().enumerate() {
                let next = steps.get(i + 1).map(|&(r, k0)| (r.start, k0)).or_else(|| {
                    let after = rblocks.last().unwrap().end;
                    (after < m).then_some((after, 0))
                });
                let call = Call {
                    a: a[rows.start * k + k0..].as_ptr(),
                    lda: k,
                    prefetch: next.map_or(std::ptr::null(), |(r, k0)| a[r * k + k0..].as_ptr()),
                    // SAFETY: the panel exists and k0 < k, so the offset is inside the buffer.
                    b: unsafe { b.as_ptr().add(pblock.start * panel_stride + k0 * NR) },
                    panel_stride,
                    // SAFETY: the panel exists, so its bias lines do.
                    bias: unsafe { b.bias_ptr().add(pblock.start * NR) },
                    kc: KC.min(k - k0),
                    // SAFETY: row < m and column < n: inside the `m · n` output.
                    c: unsafe { c.add(rows.start * n + pblock.start * NR) },
                    ldc: n,
                    cols: n - pblock.start * NR,
                    first: k0 == 0,
                };
                // SAFETY: `call` addresses existing rows of `a` and `c` (the row block lies in
                // 0..m) and existing panels (pblock lies in the caller's range).
                unsafe { run_row_block(rows.len(), pblock.len(), call) };
            }
        }
    }
}

/// Operands of one micro-kernel call: a block of `R` rows × a group of panels.
#[derive(Clone, Copy)]
struct Call {
    /// Activations at the block's first row and the chunk's first `k`, row stride `lda`.
    a: *const f32,
    lda: usize,
    /// The next row block's activations (same layout), to pull into L2 while this one
    /// computes; null when there is none or another call of the block already does it.
    prefetch: *const f32,
    /// The first panel's slice at the chunk's first `k`; panel `q` starts `q · panel_stride`
    /// floats further.
    b: *const f32,
    panel_stride: usize,
    /// The first panel's biases (64-byte aligned); panel `q`'s are `q · NR` floats further.
    bias: *const f32,
    kc: usize,
    /// `c[i0, first column]`, row stride `ldc`.
    c: *mut f32,
    ldc: usize,
    /// Valid columns from the first one on (the rest of the last panel is padding).
    cols: usize,
    /// First `k` chunk: accumulators start from zero instead of from `c`.
    first: bool,
}

impl Call {
    /// The same call moved `q` panels to the right.
    ///
    /// # Safety
    /// The moved call must still address panels that exist.
    #[inline(always)]
    unsafe fn panel(self, q: usize) -> Self {
        Self {
            // SAFETY: forwarded to the caller.
            b: unsafe { self.b.add(q * self.panel_stride) },
            c: unsafe { self.c.add(q * NR) },
            bias: unsafe { self.bias.add(q * NR) },
            cols: self.cols.saturating_sub(q * NR),
            prefetch: if q == 0 {
                self.prefetch
            } else {
                std::ptr::null()
            },
            ..self
        }
    }
}

/// Runs the micro-kernels for one block of `rows` rows over `npanels` panels.
///
/// # Safety
/// `call` must address `rows` existing rows of `a` and `c` and `npanels` existing panels.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn run_row_block(rows: usize, npanels: usize, call: Call) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match rows {
                $($r => unsafe { panels::<$r>(npanels, call) },)*
                _ => unreachable!("row block larger than MR"),
            }
        };
    }
    // One arm per block height 1..=MR.
    const _: () = assert!(MR == 12, "update the list below");
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// Panels per micro-kernel call for an `R`-row block. Narrow blocks (only when `m` itself is
/// small: row blocks are balanced) cover several panels, so that enough independent FMA chains
/// hide the FMA latency; the group's accumulators, its weight vectors and the broadcast must
/// still fit in the 32 zmm registers, or LLVM spills in the inner loop.
const fn group(r: usize) -> usize {
    let mut p = MAX_GROUP;
    while p > 1 && ((r + 1) * p * V + 1 > 32 || r * p * V > TAIL_ACCS) {
        p -= 1;
    }
    p
}

/// The dispatchers carry the target feature too: with rustc 1.95 the kernels'
/// `#[inline(never)]` was not honoured at call sites in functions without it.
///
/// # Safety
/// As `run_row_block`, with `R` rows.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn panels<const R: usize>(npanels: usize, call: Call) {
    let g = group(R);
    let mut q = 0;
    // SAFETY (all calls): q + width <= npanels, so every call stays on existing panels.
    while q + g <= npanels {
        unsafe { dispatch_group::<R>(g, call.panel(q)) };
        q += g;
    }
    while q < npanels {
        unsafe { kernel::<R, 1>(call.panel(q)) };
        q += 1;
    }
}

/// # Safety
/// As `kernel::<R, g>`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dispatch_group<const R: usize>(g: usize, call: Call) {
    // SAFETY: forwarded.
    unsafe {
        match g {
            1 => kernel::<R, 1>(call),
            2 => kernel::<R, 2>(call),
            3 => kernel::<R, 3>(call),
            _ => kernel::<R, 4>(call),
        }
    }
}

/// The micro-kernel: an `R`-row × `P`-panel block of `C` in `R · P · V` zmm accumulators,
/// updated by one rank-1 product per `k` step. Each accumulator lane is one output element's
/// running fused dot product; the per-element arithmetic does not depend on `R` or `P`.
///
/// # Safety
/// AVX-512F present; `call.a` readable for `R` rows (stride `lda`) of `kc` floats, each of the
/// `P` panels readable for `kc · NR` floats (64-byte aligned), and `c` valid for `R` rows
/// (stride `ldc`) of `min(cols, P·NR)` columns that nobody else accesses meanwhile.
// Never inlined: inlined into the blocking loop, LLVM scheduled all the broadcasts ahead of the
// FMAs and spilled accumulators to the stack (measured 20-40% slower); on its own each kernel has
// the register file to itself.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const P: usize>(call: Call) {
    let Call {
        a,
        lda,
        prefetch,
        b,
        panel_stride,
        bias,
        kc,
        c,
        ldc,
        cols,
        first,
    } = call;
    let mut acc = [[[_mm512_setzero_ps(); V]; P]; R];
    if first {
        for row in acc.iter_mut() {
            for (q, panel) in row.iter_mut().enumerate() {
                for (v, x) in panel.iter_mut().enumerate() {
                    // SAFETY: panel q exists; its bias lines are 64-byte aligned.
                    *x = unsafe { _mm512_load_ps(bias.add(q * NR + v * 16)) };
                }
            }
        }
    } else {
        for (r, row) in acc.iter_mut().enumerate() {
            for (q, panel) in row.iter_mut().enumerate() {
                for (v, x) in panel.iter_mut().enumerate() {
                    let lane = q * V + v;
                    // SAFETY: masked to the valid columns of row r, which the caller vouches for.
                    *x = unsafe {
                        _mm512_maskz_loadu_ps(column_lanes(cols, lane), c.add(r * ldc + lane * 16))
                    };
                }
            }
        }
    }
    for t in 0..kc {
        if !prefetch.is_null() {
            // One line per step covers the next block's MR rows × kc floats (MR · kc / 16
            // lines) within kc steps. A prefetch never faults, so overshooting the rows is fine.
            let line = prefetch.wrapping_add(t % MR * lda + t / MR * 16);
            _mm_prefetch::<_MM_HINT_T1>(line.cast());
        }
        let mut w = [[_mm512_setzero_ps(); V]; P];
        for (q, panel) in w.iter_mut().enumerate() {
            for (v, x) in panel.iter_mut().enumerate() {
                // SAFETY: t < kc, panel q exists; groups of NR floats are 64-byte aligned.
                *x = unsafe { _mm512_load_ps(b.add(q * panel_stride + t * NR + v * 16)) };
            }
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: t < kc and r < R: inside the block of `a`.
            let x = _mm512_set1_ps(unsafe { *a.add(r * lda + t) });
            for (panel, wp) in row.iter_mut().zip(&w) {
                for (y, wv) in panel.iter_mut().zip(wp) {
                    *y = _mm512_fmadd_ps(x, *wv, *y);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (q, panel) in row.iter().enumerate() {
            for (v, x) in panel.iter().enumerate() {
                let lane = q * V + v;
                // SAFETY: as for the loads above.
                unsafe {
                    _mm512_mask_storeu_ps(c.add(r * ldc + lane * 16), column_lanes(cols, lane), *x)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift values in [-1, 1), with varied magnitudes so that rounding differs
    /// between summation orders (a wrong order would show up as a bit difference).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            let scale = [1.0, 1e-3, 37.0, 0.1][(self.0 & 3) as usize];
            unit * scale
        }

        fn vec(&mut self, len: usize) -> Vec<f32> {
            (0..len).map(|_| self.next()).collect()
        }
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    fn skip() -> bool {
        if available() {
            return false;
        }
        eprintln!("AVX-512F missing: skipped");
        true
    }

    #[test]
    fn matches_reference_bit_for_bit() {
        if skip() {
            return;
        }
        let ms = [1, 2, 3, 8, 13, 31, 129];
        let ns = [1, 16, 17, 33, 385];
        let ks = [1, 16, 17, 257, 384, 1536];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for &k in &ks {
            for &n in &ns {
                let (b, bias) = (rng.vec(n * k), rng.vec(n));
                let packed = PackedB::new(&b, n, k).with_bias(&bias);
                for &m in &ms {
                    let a = rng.vec(m * k);
                    let mut want = vec![0.0; m * n];
                    reference(&a, m, k, &b, &bias, &mut want);
                    // Garbage in `c` must not leak into the result.
                    let mut got = vec![f32::NAN; m * n];
                    gemm_packed(&a, m, k, &packed, &mut got, 0..packed.panels());
                    assert_eq!(bits(&got), bits(&want), "m={m} n={n} k={k}");
                }
            }
        }
        // Several L2 blocks of panels and of rows, and several k chunks, at once.
        for &(m, n, k) in &[(200, 1000, 800), (97, 1536, 384), (130, 384, 1536)] {
            let (a, b) = (rng.vec(m * k), rng.vec(n * k));
            let mut want = vec![0.0; m * n];
            reference(&a, m, k, &b, &vec![0.0; n], &mut want);
            let packed = PackedB::new(&b, n, k);
            let mut got = vec![f32::NAN; m * n];
            gemm_packed(&a, m, k, &packed, &mut got, 0..packed.panels());
            assert_eq!(bits(&got), bits(&want), "m={m} n={n} k={k}");
        }
    }

    #[test]
    fn row_is_independent_of_batch() {
        if skip() {
            return;
        }
        let mut rng = Rng(42);
        for &(k, n) in &[(384, 384), (384, 1536), (1536, 384), (257, 33)] {
            let b = rng.vec(n * k);
            let packed = PackedB::new(&b, n, k);
            let m = 129;
            let a = rng.vec(m * k);
            let mut batch = vec![0.0; m * n];
            gemm_packed(&a, m, k, &packed, &mut batch, 0..packed.panels());
            for i in [0, 1, 5, MR - 1, MR, MR + 1, 64, m - 1] {
                let row = &a[i * k..(i + 1) * k];
                let mut alone = vec![0.0; n];
                gemm_packed(row, 1, k, &packed, &mut alone, 0..packed.panels());
                assert_eq!(
                    bits(&alone),
                    bits(&batch[i * n..(i + 1) * n]),
                    "row {i} alone, k={k} n={n}"
                );
                // The same row at other offsets of other batch sizes (full and tail micro-kernels).
                for (m2, at) in [(3, 2), (MR + 5, MR + 3), (2 * MR, 1), (40, 39)] {
                    let mut a2 = rng.vec(m2 * k);
                    a2[at * k..(at + 1) * k].copy_from_slice(row);
                    let mut c2 = vec![0.0; m2 * n];
                    gemm_packed(&a2, m2, k, &packed, &mut c2, 0..packed.panels());
                    assert_eq!(
                        bits(&c2[at * n..(at + 1) * n]),
                        bits(&alone),
                        "row {i} at {at} of {m2}, k={k} n={n}"
                    );
                }
            }
        }
    }

    #[test]
    fn panel_ranges_and_tasks_agree() {
        if skip() {
            return;
        }
        let mut rng = Rng(7);
        let (m, k, n) = (50, 3 * KC + 5, 5 * NR + 3);
        let b = rng.vec(n * k);
        let a = rng.vec(m * k);
        let packed = PackedB::new(&b, n, k);
        let mut whole = vec![0.0; m * n];
        gemm_packed(&a, m, k, &packed, &mut whole, 0..packed.panels());

        // Piecewise, one panel at a time, leaving other columns alone.
        let mut pieces = vec![-1.0; m * n];
        for p in (0..packed.panels()).rev() {
            gemm_packed(&a, m, k, &packed, &mut pieces, p..p + 1);
            let cols = packed.columns(p..packed.panels());
            for i in 0..m {
                assert!(pieces[i * n..i * n + cols.start].iter().all(|&x| x == -1.0));
            }
        }
        assert_eq!(bits(&pieces), bits(&whole));

        let par = gemm_parallel(&a, m, k, &packed);
        assert_eq!(bits(&par), bits(&whole), "rayon tasks");

        let mut raw = vec![0.0; m * n];
        // SAFETY: `raw` holds m·n floats and nothing else touches it during the call.
        unsafe { gemm_packed_raw(&a, m, k, &packed, raw.as_mut_ptr(), 0..packed.panels()) };
        assert_eq!(bits(&raw), bits(&whole));
    }

    #[test]
    fn empty_shapes() {
        if skip() {
            return;
        }
        // k = 0: an empty sum is the bias.
        let packed = PackedB::new(&[], 20, 0);
        let mut c = vec![f32::NAN; 3 * 20];
        gemm_packed(&[], 3, 0, &packed, &mut c, 0..packed.panels());
        assert!(c.iter().all(|&x| x == 0.0));
        let packed = PackedB::new(&[], 20, 0).with_bias(&[2.5; 20]);
        gemm_packed(&[], 3, 0, &packed, &mut c, 0..packed.panels());
        assert!(c.iter().all(|&x| x == 2.5));
        // m = 0 and n = 0 do nothing.
        let packed = PackedB::new(&[1.0; 8], 2, 4);
        gemm_packed(&[], 0, 4, &packed, &mut [], 0..1);
        let packed = PackedB::new(&[], 0, 4);
        gemm_packed(&[1.0; 4], 1, 4, &packed, &mut [], 0..0);
    }

    #[test]
    fn packed_layout() {
        let (n, k) = (NR + 3, 5);
        let b: Vec<f32> = (0..n * k).map(|x| x as f32).collect();
        let packed = PackedB::new(&b, n, k);
        assert_eq!(packed.panels(), 2);
        assert_eq!(packed.columns(1..2), NR..n);
    }
}
