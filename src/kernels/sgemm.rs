//! f32 matrix products on the `gemm` crate, which picks its AVX-512, AVX2 or
//! SSE micro-kernels when the process starts (feature `x86-v4`).
//!
//! This is the one place the crate's raw-pointer interface is called: every
//! view is checked against its slice before the call.

use gemm::Parallelism;

/// A strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A dense row-major `rows` x `cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The same elements read as the transposed matrix.
    pub fn t(self) -> View<'a> {
        View { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// One past the largest index the view reads (0 when it is empty).
    fn extent(&self, name: &str) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1;
        assert!(
            last <= self.data.len(),
            "{name} view of {}x{} reads past its {} elements",
            self.rows,
            self.cols,
            self.data.len()
        );
        last
    }
}

/// Multiply-adds below which a product stays on the calling thread: waking
/// another thread costs about as much as this much arithmetic.
pub const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `c = a · b` (or `c += a · b` when `accumulate`), with `c` row-major with
/// row stride `c_rs`. With `parallel`, a large product is spread over the
/// current rayon pool; the split is over blocks of `c`, never over the
/// reduction, so the result is the same on any number of threads.
///
/// # Panics
/// When the shapes do not chain or a view reads past its slice.
pub fn sgemm(a: View<'_>, b: View<'_>, c: &mut [f32], c_rs: usize, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    if !needs_product(m, k, n, c, c_rs, accumulate) {
        return;
    }
    a.extent("lhs");
    b.extent("rhs");
    // SAFETY: `c` was checked to hold the whole product.
    unsafe { checked_product(a, b, c.as_mut_ptr(), c_rs, accumulate, parallel && worth_threads(m, k, n)) };
}

/// [`sgemm`] (`c = a · b`, on the calling thread) into a destination that
/// other products' outputs interleave with (row `i` of product `ξ` of a
/// batch kept next to row `i` of the others), so that the batch's products
/// can run on several threads at once.
///
/// # Safety
/// `dst` must be valid for reads and writes of an `a.rows` x `b.cols`
/// matrix with row stride `c_rs` (at least `b.cols`), and nothing else may
/// access those elements during the call.
///
/// # Panics
/// When the shapes do not chain or a view reads past its slice.
pub unsafe fn sgemm_into(a: View<'_>, b: View<'_>, dst: *mut f32, c_rs: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(k == b.rows && c_rs >= n, "inner dimensions differ or rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of the destination (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(dst.add(i * c_rs), n) }.fill(0.0);
        }
        return;
    }
    a.extent("lhs");
    b.extent("rhs");
    // SAFETY: the caller's contract.
    unsafe { checked_product(a, b, dst, c_rs, false, false) };
}

/// The product of two checked, non-empty views, split as [`sgemm`] splits
/// it.
///
/// # Safety
/// As [`product`]'s.
unsafe fn checked_product(a: View<'_>, b: View<'_>, dst: *mut f32, c_rs: usize, accumulate: bool, parallel: bool) {
    let (m, n) = (a.rows, b.cols);
    if m <= SMALL_M && n > SMALL_M_COLUMNS {
        // A few rows (a dense layer at a small batch) give the crate's own
        // split nothing to share: the columns are split instead.
        for_column_blocks(dst, n, parallel, |j, width, dst| {
            let b_block = View { data: &b.data[j * b.cs..], cols: width, ..b };
            // SAFETY: `dst` is this block's columns of the caller's
            // destination.
            unsafe { product(a, b_block, dst, c_rs, accumulate, Parallelism::None) };
        });
        return;
    }
    let parallelism = if parallel { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None };
    // SAFETY: the caller's contract.
    unsafe { product(a, b, dst, c_rs, accumulate, parallelism) };
}

/// Checks that `c` (row stride `c_rs`) holds an `m` x `n` product and
/// settles the products with nothing to multiply: false when the caller has
/// no more to do (an empty product, or an empty reduction, which leaves `c`
/// or zeroes it).
///
/// # Panics
/// When `c` is too small.
fn needs_product(m: usize, k: usize, n: usize, c: &mut [f32], c_rs: usize, accumulate: bool) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!(
        c_rs >= n && (m - 1) * c_rs + n <= c.len(),
        "output of {m}x{n} (row stride {c_rs}) exceeds {} elements",
        c.len()
    );
    if k == 0 && !accumulate {
        c.chunks_mut(c_rs).take(m).for_each(|row| row[..n].fill(0.0));
    }
    k > 0
}

/// Whether a product is large enough to spread over the current pool.
fn worth_threads(m: usize, k: usize, n: usize) -> bool {
    rayon::current_num_threads() > 1 && m * n * k >= PARALLEL_MIN_MACS
}

/// Runs `block(first column, width, output pointer at that column)` for
/// the columns of `c` in blocks of a fixed width, on the current pool when
/// `parallel` (on one thread too, the same blocks: the sums do not depend
/// on the thread count). `c` must point at a destination whose first row
/// holds `n` columns (checked by [`needs_product`], or the caller's
/// contract).
fn for_column_blocks(c: *mut f32, n: usize, parallel: bool, block: impl Fn(usize, usize, *mut f32) + Sync) {
    let dst = SendPtr(c);
    let each = |index: usize| {
        let j = index * SMALL_M_COLUMNS;
        // SAFETY: j < n, inside `c`'s first row.
        block(j, SMALL_M_COLUMNS.min(n - j), unsafe { dst.get().add(j) });
    };
    let blocks = n.div_ceil(SMALL_M_COLUMNS);
    if parallel {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(each);
    } else {
        (0..blocks).for_each(each);
    }
}

/// Rows up to which [`sgemm`] splits columns rather than rows.
pub const SMALL_M: usize = 8;
/// The column block width of that split.
const SMALL_M_COLUMNS: usize = 64;

/// A constant right-hand matrix [k, n] stored as its column blocks of
/// [`sgemm`]'s split, each block [k, 64] contiguous: a product with a few
/// rows then streams each block once, front to back, instead of striding
/// through every row of the matrix (dense layers at small batches are bound
/// by reading their weights).
#[derive(Debug, Clone)]
pub struct ColumnBlocks {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl ColumnBlocks {
    /// Packs `b` (any layout) once, when the model loads.
    pub fn new(b: View<'_>) -> ColumnBlocks {
        b.extent("rhs");
        let (k, n) = (b.rows, b.cols);
        let mut data = Vec::with_capacity(k * n);
        for j in (0..n).step_by(SMALL_M_COLUMNS) {
            let width = SMALL_M_COLUMNS.min(n - j);
            for p in 0..k {
                data.extend((j..j + width).map(|col| b.data[p * b.rs + col * b.cs]));
            }
        }
        ColumnBlocks { k, n, data }
    }

    /// The matrix's [k, n].
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// `c = a · b` (or `+=`) for a product with at most [`SMALL_M`] rows and a
/// packed `b`, split in the same fixed column blocks as [`sgemm`] (so the
/// result does not depend on the thread count).
///
/// # Panics
/// When `a` has more than [`SMALL_M`] rows or the shapes do not chain.
pub fn sgemm_blocks(a: View<'_>, b: &ColumnBlocks, c: &mut [f32], c_rs: usize, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.n);
    assert!(m <= SMALL_M && k == b.k, "a [{m}, {k}] does not fit packed columns [{}, {n}]", b.k);
    if !needs_product(m, k, n, c, c_rs, accumulate) {
        return;
    }
    a.extent("lhs");
    #[cfg(target_arch = "x86_64")]
    let own = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let own = false;
    for_column_blocks(c.as_mut_ptr(), n, parallel && worth_threads(m, k, n), |j, width, dst| {
        let block = &b.data[j * k..(j + width) * k];
        if own {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512F; `block` is [k, width] with width
            // <= 64, `a` a checked view, and `dst` this block's columns of
            // the checked `c`.
            unsafe {
                streamed_block(a, block, width, dst, c_rs, accumulate)
            };
            return;
        }
        // SAFETY: `dst` is this block's columns of the checked `c`.
        unsafe { product(a, View::row_major(block, k, width), dst, c_rs, accumulate, Parallelism::None) };
    });
}

/// How far ahead of its reads [`streamed_block`] prefetches, in floats.
#[cfg(target_arch = "x86_64")]
const PREFETCH_FLOATS: usize = 2048;

/// One packed column block's product for a few rows: each row's 64 sums in
/// four vectors of accumulators, one multiply-add per row of the block, in
/// order (the same for every row at any row count), so the block streams
/// through once per four rows.
///
/// # Safety
/// The CPU must have AVX-512F; `block` holds [a.cols, width] row-major with
/// `width` <= 64; `a` is a checked view; `dst` is valid for `a.rows` rows of
/// `width` at row stride `c_rs`, used by nothing else during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn streamed_block(a: View<'_>, block: &[f32], width: usize, dst: *mut f32, c_rs: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    const ROWS: usize = 4;
    let k = a.cols;
    assert!(width <= SMALL_M_COLUMNS && block.len() >= k * width);
    let mask = |u: usize| -> __mmask16 {
        let lanes = width.saturating_sub(16 * u).min(16);
        if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 }
    };
    let masks: [__mmask16; 4] = std::array::from_fn(mask);
    let vectors = width.div_ceil(16);
    for first in (0..a.rows).step_by(ROWS) {
        let rows = ROWS.min(a.rows - first);
        let mut acc = [[_mm512_setzero_ps(); 4]; ROWS];
        // SAFETY: loads read row p of the block (width elements, masked) and
        // element (first + r, p) of the checked view `a`.
        unsafe {
            for p in 0..k {
                let row = block.as_ptr().add(p * width);
                // The stream from memory: ask for the block's rows a few
                // kilobytes ahead (a hint; it never faults).
                let ahead = row.wrapping_add(PREFETCH_FLOATS);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(32).cast());
                let bv: [__m512; 4] = std::array::from_fn(|u| {
                    if u < vectors { _mm512_maskz_loadu_ps(masks[u], row.add(16 * u)) } else { _mm512_setzero_ps() }
                });
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let av = _mm512_set1_ps(*a.data.get_unchecked((first + r) * a.rs + p * a.cs));
                    for u in 0..4 {
                        acc[u] = _mm512_fmadd_ps(av, bv[u], acc[u]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (u, &sum) in acc.iter().enumerate().take(vectors) {
                // SAFETY: row first + r of `dst`, the lanes of this block's
                // width (the caller's contract).
                unsafe {
                    let out = dst.add((first + r) * c_rs + 16 * u);
                    let value = if accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(masks[u], out), sum) } else { sum };
                    _mm512_mask_storeu_ps(out, masks[u], value);
                }
            }
        }
    }
}

/// The output pointer the column blocks share.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint elements through it (see `for_column_blocks`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The call into the crate.
///
/// # Safety
/// `a` and `b` must be checked views, and `dst` must be valid for writes of
/// an `a.rows` x `b.cols` matrix with row stride `c_rs` that nothing else
/// reads or writes during the call.
unsafe fn product(a: View<'_>, b: View<'_>, dst: *mut f32, c_rs: usize, accumulate: bool, parallelism: Parallelism) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Dense layers with at most this many outputs keep their weights
/// transposed and compute each output as one dot product.
pub const FEW_COLUMNS: usize = 16;

/// A constant right-hand matrix [k, n] with few columns (a classifier's
/// last layer), kept as its transpose [n, k]: each output is then one dot
/// product of a row of `a` with a row of it, summed in an order that
/// depends on `k` alone, so a row's result is the same bits at any batch
/// size and thread count.
#[derive(Debug, Clone)]
pub struct TransposedColumns {
    k: usize,
    n: usize,
    bt: Vec<f32>,
}

impl TransposedColumns {
    /// Transposes `b` once, when the model loads.
    pub fn new(b: View<'_>) -> TransposedColumns {
        b.extent("rhs");
        let (k, n) = (b.rows, b.cols);
        let bt = (0..n).flat_map(|j| (0..k).map(move |p| (p, j))).map(|(p, j)| b.data[p * b.rs + j * b.cs]).collect();
        TransposedColumns { k, n, bt }
    }

    /// The matrix's [k, n].
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `c = a · b` (or `+=` when `accumulate`), for an `a` whose rows are
    /// contiguous, with `c` row-major with row stride `c_rs`.
    ///
    /// # Panics
    /// When the shapes do not chain or `a`'s rows are not contiguous.
    pub fn multiply(&self, a: View<'_>, c: &mut [f32], c_rs: usize, accumulate: bool, parallel: bool) {
        let (m, k, n) = (a.rows, a.cols, self.n);
        assert!(
            k == self.k && (a.cs == 1 || k <= 1),
            "a [{m}, {k}] does not fit [{}, {n}] or is not row-major",
            self.k
        );
        if !needs_product(m, k, n, c, c_rs, accumulate) {
            return;
        }
        a.extent("lhs");
        let a_row = |i: usize| &a.data[i * a.rs..i * a.rs + k];
        let store = |v: &mut f32, d: f32| *v = if accumulate { *v + d } else { d };
        // Rows by fours, each column's weights read once for the four;
        // every row's sum is computed as `dot` computes it alone.
        let rows = |(g, out): (usize, &mut [f32])| {
            let first = g * ROWS;
            let count = ROWS.min(m - first);
            if count == ROWS {
                let a4: [&[f32]; ROWS] = std::array::from_fn(|r| a_row(first + r));
                for j in 0..n {
                    let d = dot4(a4, &self.bt[j * k..(j + 1) * k]);
                    for (r, d) in d.into_iter().enumerate() {
                        store(&mut out[r * c_rs + j], d);
                    }
                }
            } else {
                for (r, out) in out.chunks_mut(c_rs).take(count).enumerate() {
                    for (j, v) in out[..n].iter_mut().enumerate() {
                        store(v, dot(a_row(first + r), &self.bt[j * k..(j + 1) * k]));
                    }
                }
            }
        };
        const ROWS: usize = 4;
        let groups = m.div_ceil(ROWS);
        if parallel && groups > 1 && worth_threads(m, k, n) {
            use rayon::prelude::*;
            c.par_chunks_mut(ROWS * c_rs).take(groups).enumerate().for_each(rows);
        } else {
            c.chunks_mut(ROWS * c_rs).take(groups).enumerate().for_each(rows);
        }
    }
}

dispatched!(dot => dot_impl(a: &[f32], b: &[f32]) -> f32);
/// Four dot products against one `b`, each summed exactly as [`dot_impl`]
/// sums it (the same lanes, the same order, a multiply then an add), with
/// each vector of `b` loaded once for the four (AVX-512; elsewhere four
/// calls of [`dot`]).
fn dot4(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let a = a.map(|row| &row[..b.len()]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; every row is as long as `b`.
        return unsafe { dot4_avx512(a, b) };
    }
    a.map(|row| dot(row, b))
}

/// [`dot4`] on AVX-512: 4 rows x 4 vectors of partial sums in registers.
///
/// # Safety
/// The CPU must have AVX-512F, and every row of `a` must be as long as `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot4_avx512(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    let whole = b.len() / (4 * LANES) * (4 * LANES);
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    // SAFETY: every load reads 16 floats below `whole` <= b.len(), and the
    // rows are as long as `b` (the caller's contract).
    unsafe {
        for start in (0..whole).step_by(4 * LANES) {
            let y: [__m512; 4] = std::array::from_fn(|u| _mm512_loadu_ps(b.as_ptr().add(start + u * LANES)));
            for (row, acc) in a.iter().zip(acc.iter_mut()) {
                for (u, lane) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(row.as_ptr().add(start + u * LANES));
                    *lane = _mm512_add_ps(*lane, _mm512_mul_ps(x, y[u]));
                }
            }
        }
    }
    std::array::from_fn(|r| {
        let mut parts = [[0.0f32; LANES]; 4];
        for (part, lane) in parts.iter_mut().zip(&acc[r]) {
            // SAFETY: 16 floats into an array of 16.
            unsafe { _mm512_storeu_ps(part.as_mut_ptr(), *lane) };
        }
        finish_dot(&parts, &a[r][whole..], &b[whole..])
    })
}

/// The end of a dot product from its 4 x 16 partial sums: combined
/// pairwise, then the tail in order.
#[inline(always)]
fn finish_dot(acc: &[[f32; 16]; 4], a_tail: &[f32], b_tail: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    for (l, v) in lanes.iter_mut().enumerate() {
        *v = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).fold(0.0, |s, (x, y)| s + x * y);
    lanes[0] + tail
}

/// The dot product of two equal-length slices: 64 lanes of partial sums
/// over the whole-64 prefix, combined pairwise, then the tail in order.
#[inline(always)]
fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [[0.0f32; LANES]; 4];
    let whole = a.len() / (4 * LANES) * (4 * LANES);
    for (x, y) in a[..whole].chunks_exact(4 * LANES).zip(b[..whole].chunks_exact(4 * LANES)) {
        for (u, lane) in acc.iter_mut().enumerate() {
            for l in 0..LANES {
                lane[l] += x[u * LANES + l] * y[u * LANES + l];
            }
        }
    }
    finish_dot(&acc, &a[whole..], &b[whole..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, random_floats};

    fn naive(a: View<'_>, b: View<'_>) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| f64::from(a.data[i * a.rs + p * a.cs]) * f64::from(b.data[p * b.rs + j * b.cs]))
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn products_match_the_definition_for_all_layouts() {
        for (m, k, n) in [(1, 1, 1), (1, 300, 10), (7, 3, 5), (40, 33, 17), (64, 576, 130), (3, 2, 1)] {
            let a = random_floats(m * k, 1);
            let b = random_floats(k * n, 2);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let av = if ta { View::row_major(&a, k, m).t() } else { View::row_major(&a, m, k) };
                let bv = if tb { View::row_major(&b, n, k).t() } else { View::row_major(&b, k, n) };
                let mut c = vec![f32::NAN; m * n];
                sgemm(av, bv, &mut c, n, false, true);
                assert_close(&c, &naive(av, bv));
                let mut acc = vec![1.0; m * n];
                sgemm(av, bv, &mut acc, n, true, false);
                let want: Vec<f32> = naive(av, bv).iter().map(|v| v + 1.0).collect();
                assert_close(&acc, &want);
            }
        }
    }

    #[test]
    fn packed_columns_give_the_plain_product_on_any_thread_count() {
        let (k, n) = (300, 150);
        let b = random_floats(k * n, 5);
        for transposed in [false, true] {
            let bv = if transposed { View::row_major(&b, n, k).t() } else { View::row_major(&b, k, n) };
            let packed = ColumnBlocks::new(bv);
            for m in [1, 3, SMALL_M] {
                let a = random_floats(m * k, 6);
                let on = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let mut c = vec![0.0; m * n];
                    pool.install(|| sgemm_blocks(View::row_major(&a, m, k), &packed, &mut c, n, false, true));
                    c
                };
                let blocks = on(2);
                assert_eq!(on(1), blocks, "m {m}, transposed {transposed}");
                assert_close(&blocks, &naive(View::row_major(&a, m, k), bv));
                // Each row alone, added to what c held: the same bits.
                for i in 0..m {
                    let mut one = vec![1.0; n];
                    sgemm_blocks(View::row_major(&a[i * k..(i + 1) * k], 1, k), &packed, &mut one, n, true, false);
                    let want: Vec<f32> = blocks[i * n..(i + 1) * n].iter().map(|v| 1.0 + v).collect();
                    assert_eq!(one, want, "row {i} of {m}");
                }
            }
        }
    }

    #[test]
    fn few_columns_give_the_product_and_the_same_bits_per_row_at_any_batch() {
        for (k, n) in [(5408, 10), (7, 3), (130, 16), (64, 1)] {
            let b = random_floats(k * n, 8);
            let packed = TransposedColumns::new(View::row_major(&b, k, n));
            let a = random_floats(9 * k, 9);
            let mut all = vec![0.0; 9 * n];
            packed.multiply(View::row_major(&a, 9, k), &mut all, n, false, true);
            assert_close(&all, &naive(View::row_major(&a, 9, k), View::row_major(&b, k, n)));
            for i in 0..9 {
                let mut one = vec![1.0; n];
                packed.multiply(View::row_major(&a[i * k..(i + 1) * k], 1, k), &mut one, n, true, false);
                let want: Vec<f32> = all[i * n..(i + 1) * n].iter().map(|v| 1.0 + v).collect();
                assert_eq!(one, want, "row {i} of k {k}");
            }
        }
    }

    #[test]
    fn thread_count_does_not_change_the_result() {
        let (m, k, n) = (96, 700, 300);
        let a = random_floats(m * k, 3);
        let b = random_floats(k * n, 4);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut c = vec![0.0; m * n];
            pool.install(|| sgemm(View::row_major(&a, m, k), View::row_major(&b, k, n), &mut c, n, false, true));
            c
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn an_empty_reduction_gives_zeros_or_keeps_c() {
        let mut c = vec![5.0; 6];
        sgemm(View::row_major(&[], 2, 0), View::row_major(&[], 0, 3), &mut c, 3, true, false);
        assert_eq!(c, [5.0; 6]);
        sgemm(View::row_major(&[], 2, 0), View::row_major(&[], 0, 3), &mut c, 3, false, false);
        assert_eq!(c, [0.0; 6]);
    }
}
