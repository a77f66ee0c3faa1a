//! Winograd's minimal filtering F(2x2, 3x3) for 3x3, stride-1, undilated,
//! ungrouped float convolutions with constant weights (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 2x2 block of outputs comes from a 4x4 block of input: the input
//! block is transformed (`Bᵀ d B`), multiplied element by element with the
//! transformed filter (`G g Gᵀ`, prepared once when the model loads) and
//! summed over input channels, then transformed back (`Aᵀ m A`). The sums
//! over channels are 16 matrix products, one per element of the 4x4 block,
//! `[M, C] x [C, tiles]`: 16 products per 4 outputs where the direct
//! convolution needs 36, so 2.25 times less arithmetic.
//!
//! The transforms of F(2x2, 3x3) use only additions and halvings, so the
//! result stays within a few rounding errors of the direct sum (measured in
//! the tests below against an f64 reference; DESIGN.md's rule is rtol 1e-4,
//! atol 1e-5).

use std::ops::Range;

use rayon::prelude::*;

use super::conv2d::Conv2dShape;
use super::epilogue::Activation;
use super::pool::max_nan;
use super::sgemm::{View, sgemm_into};

/// Elements of a transformed tile.
const TILE: usize = 16;

/// Layers with fewer input or output channels than this run as direct or
/// im2col convolutions: the transforms would cost more than they save.
pub const MIN_CHANNELS: usize = 8;

/// Filters transformed for [`conv3x3`]: 16 matrices `[M, C]`, one per
/// element of the 4x4 tile.
#[derive(Debug, Clone)]
pub struct WinogradFilters {
    m: usize,
    c: usize,
    u: Vec<f32>,
}

impl WinogradFilters {
    /// Transforms OIHW filters `w` [m, c, 3, 3]: `U = G g Gᵀ`, in f64.
    pub fn new(w: &[f32], m: usize, c: usize) -> WinogradFilters {
        assert_eq!(w.len(), m * c * 9, "filters must be [m, c, 3, 3]");
        const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let mut u = vec![0.0f32; TILE * m * c];
        for (f, g) in w.chunks_exact(9).enumerate() {
            // G g (4x3), then (G g) Gᵀ (4x4).
            let mut gg = [[0.0f64; 3]; 4];
            for (i, row) in gg.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| G[i][k] * f64::from(g[k * 3 + j])).sum();
                }
            }
            for i in 0..4 {
                for j in 0..4 {
                    let v: f64 = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
                    u[(i * 4 + j) * m * c + f] = v as f32;
                }
            }
        }
        WinogradFilters { m, c, u }
    }

    /// Whether a layer of this shape can run on these filters.
    pub fn fits(&self, s: &Conv2dShape) -> bool {
        let unit = |a: &super::conv::Axis| a.kernel == 3 && a.stride == 1 && a.dilation == 1;
        s.g == 1 && s.m == self.m && s.c == self.c && unit(&s.h) && unit(&s.w)
    }
}

/// Whether a layer with these weights takes Winograd filters: 3x3,
/// stride 1, undilated, ungrouped, and wide enough to gain from it.
pub fn suits(m: usize, c: usize, kernel: [usize; 2], strides: [usize; 2], dilations: [usize; 2], group: usize) -> bool {
    kernel == [3, 3] && strides == [1, 1] && dilations == [1, 1] && group == 1 && m >= MIN_CHANNELS && c >= MIN_CHANNELS
}

dispatched!(input_channel => input_channel_impl(channel: &[f32], s: &Conv2dShape, rows: Range<usize>, dst: &mut [f32], work: &mut Vec<f32>));
dispatched!(output_channel => output_channel_impl(p: &[f32], oc: usize, s: &Conv2dShape, rows: Range<usize>, b: f32, act: Activation, strip: &mut [f32], work: &mut Vec<f32>));
dispatched!(output_channel_pooled => output_channel_pooled_impl(p: &[f32], oc: usize, s: &Conv2dShape, rows: Range<usize>, b: f32, act: Activation, strip: &mut [f32], work: &mut Vec<f32>));

/// The input transform of one channel for the tile rows `rows`: `dst`
/// [16][tiles of those rows] = Bᵀ d B of each tile. The input rows they
/// read are first copied into a zero-bordered strip of exactly the tiles'
/// extent. Each strip row is then split into the four columns a tile row
/// reads (elements 2t, 2t + 1, 2t + 2, 2t + 3 for tile t), kept apart for
/// even and odd strip rows, so that row i of every tile of the block is
/// one contiguous span: every step below is a loop over all the block's
/// tiles at once.
#[inline(always)]
fn input_channel_impl(channel: &[f32], s: &Conv2dShape, rows: Range<usize>, dst: &mut [f32], work: &mut Vec<f32>) {
    let (ih, iw, pt, pl) = (s.h.input, s.w.input, s.h.pad_begin, s.w.pad_begin);
    let tw = s.w.output.div_ceil(2);
    let tiles = rows.len() * tw;
    let (ph, pw) = (2 * rows.len() + 2, 2 * tw + 2);
    // The strip, then for each row parity the four columns of each of its
    // rows.len() + 1 rows, then the column-transformed rows, then one strip
    // row's even and odd elements.
    let half = (rows.len() + 1) * tw;
    work.clear();
    work.resize(ph * pw + 8 * half + 16 * tiles + 2 * (tw + 1), 0.0);
    let (padded, rest) = work.split_at_mut(ph * pw);
    let (split, rest) = rest.split_at_mut(8 * half);
    let (cols, rest) = rest.split_at_mut(16 * tiles);
    let (even, odd) = rest.split_at_mut(tw + 1);
    let width = iw.min(pw - pl);
    for (py, strip_row) in padded.chunks_exact_mut(pw).enumerate() {
        let iy = (2 * rows.start + py) as isize - pt as isize;
        if (0..ih as isize).contains(&iy) {
            let line = &channel[iy as usize * iw..iy as usize * iw + width];
            strip_row[pl..pl + width].copy_from_slice(line);
        }
    }
    // split[parity][k][r * tw + t] = padded[2r + parity][2t + k]: each row
    // split into its even and odd elements, then copied out twice, the
    // second time one element on.
    for (py, row) in padded.chunks_exact(pw).enumerate() {
        let (parity, r) = (py % 2, py / 2);
        deinterleave(row, even, odd);
        let at = |k: usize| (parity * 4 + k) * half + r * tw;
        split[at(0)..at(0) + tw].copy_from_slice(&even[..tw]);
        split[at(1)..at(1) + tw].copy_from_slice(&odd[..tw]);
        split[at(2)..at(2) + tw].copy_from_slice(&even[1..]);
        split[at(3)..at(3) + tw].copy_from_slice(&odd[1..]);
    }
    // cols[i][j][tile]: row i of each tile after the transform along the
    // row, B: (a, b, c, d) -> (a - c, b + c, c - b, b - d).
    for i in 0..4 {
        let column = |k: usize| {
            let from = ((i % 2) * 4 + k) * half + (i / 2) * tw;
            &split[from..from + tiles]
        };
        let (a, b, c, d) = (column(0), column(1), column(2), column(3));
        let (c0, rest) = cols[i * 4 * tiles..(i + 1) * 4 * tiles].split_at_mut(tiles);
        let (c1, rest) = rest.split_at_mut(tiles);
        let (c2, c3) = rest.split_at_mut(tiles);
        sub(c0, a, c);
        add(c1, b, c);
        sub(c2, c, b);
        sub(c3, b, d);
    }
    // Bᵀ down the columns: dst[i'][j] from rows (0, 1, 2, 3) of cols.
    for j in 0..4 {
        let col = |i: usize| &cols[(i * 4 + j) * tiles..(i * 4 + j + 1) * tiles];
        let (d0, d1, d2, d3) = (col(0), col(1), col(2), col(3));
        let span = |xi: usize| xi * tiles..(xi + 1) * tiles;
        sub(&mut dst[span(j)], d0, d2);
        add(&mut dst[span(4 + j)], d1, d2);
        sub(&mut dst[span(8 + j)], d2, d1);
        sub(&mut dst[span(12 + j)], d1, d3);
    }
}

/// The output transform of one output channel for the tile rows `rows`:
/// Aᵀ P A of each tile, plus the bias, cropped to the output plane, then
/// the activation, into `strip` (the output rows those tiles cover);
/// vectors over a row of tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_channel_impl(
    p: &[f32],
    oc: usize,
    s: &Conv2dShape,
    rows: Range<usize>,
    b: f32,
    act: Activation,
    strip: &mut [f32],
    work: &mut Vec<f32>,
) {
    let (oh, ow) = (s.h.output, s.w.output);
    let tw = ow.div_ceil(2);
    let tiles = rows.len() * tw;
    // r[i][j][tx]: row i of Aᵀ P for tile tx; y[i][j][tx]: output
    // (2 ty + i, 2 tx + j).
    work.clear();
    work.resize(12 * tw, 0.0);
    let (r, y) = work.split_at_mut(8 * tw);
    for ty in 0..rows.len() {
        let at = |xi: usize| &p[(oc * TILE + xi) * tiles + ty * tw..(oc * TILE + xi) * tiles + (ty + 1) * tw];
        for j in 0..4 {
            let (p0, p1, p2, p3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
            let (r0, r1) = r.split_at_mut(4 * tw);
            sum3(&mut r0[j * tw..(j + 1) * tw], p0, p1, p2);
            diff3(&mut r1[j * tw..(j + 1) * tw], p1, p2, p3);
        }
        for i in 0..2 {
            let q = |j: usize| &r[(i * 4 + j) * tw..(i * 4 + j + 1) * tw];
            let (y0, y1) = y[i * 2 * tw..(i + 1) * 2 * tw].split_at_mut(tw);
            sum3(y0, q(0), q(1), q(2));
            diff3(y1, q(1), q(2), q(3));
            y0.iter_mut().chain(y1.iter_mut()).for_each(|v| *v += b);
        }
        for i in 0..2 {
            // The row within the strip, and within the plane.
            let (sy, oy) = (2 * ty + i, 2 * (rows.start + ty) + i);
            if oy >= oh {
                break;
            }
            let (y0, y1) = y[i * 2 * tw..(i + 1) * 2 * tw].split_at(tw);
            let out_row = &mut strip[sy * ow..(sy + 1) * ow];
            let whole = ow / 2;
            for (pair, (&a, &c)) in out_row.chunks_exact_mut(2).zip(y0.iter().zip(y1)) {
                pair[0] = a;
                pair[1] = c;
            }
            if ow % 2 == 1 {
                out_row[ow - 1] = y0[whole];
            }
        }
    }
    act.apply(strip);
}

/// The output transform of one output channel for the tile rows `rows`,
/// max-pooled by 2x2 windows: each tile's 2x2 outputs are exactly one
/// window, so each tile gives one pooled value: the fold of its outputs
/// (plus the bias, after the activation) in MaxPool's order. Vectors over
/// all the block's tiles; `strip` holds the pooled rows of the block that
/// lie inside the pooled plane (a last odd output row or column is
/// dropped, as MaxPool drops it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_channel_pooled_impl(
    p: &[f32],
    oc: usize,
    s: &Conv2dShape,
    rows: Range<usize>,
    b: f32,
    act: Activation,
    strip: &mut [f32],
    work: &mut Vec<f32>,
) {
    let tw = s.w.output.div_ceil(2);
    let (ph, pw) = (s.h.output / 2, s.w.output / 2);
    let tiles = rows.len() * tw;
    let at: [&[f32]; TILE] = std::array::from_fn(|xi| &p[(oc * TILE + xi) * tiles..(oc * TILE + xi + 1) * tiles]);
    work.clear();
    work.resize(tiles, 0.0);
    // One loop per activation, so each vectorizes.
    match act {
        Activation::Identity => pool_tiles(&at, b, |v| v, work),
        Activation::Relu => pool_tiles(&at, b, |v| Activation::Relu.scalar(v), work),
        other => pool_tiles(&at, b, |v| other.scalar(v), work),
    }
    for (ty, out_row) in (rows.start..rows.end.min(ph)).zip(strip.chunks_exact_mut(pw.max(1))) {
        let t0 = (ty - rows.start) * tw;
        out_row.copy_from_slice(&work[t0..t0 + pw]);
    }
}

/// The pooled value of each tile `t`: the output transform of `at[..][t]`,
/// plus `b`, through `act`, folded in MaxPool's order. Runs over chunks of
/// 16 tiles as fixed-size arrays, so every step is one vector operation.
#[inline(always)]
fn pool_tiles(at: &[&[f32]; TILE], b: f32, act: impl Fn(f32) -> f32 + Copy, pooled: &mut [f32]) {
    const V: usize = 16;
    let one = |t: usize| {
        let v: [f32; TILE] = std::array::from_fn(|xi| at[xi][t]);
        pool_tile(v, b, act)
    };
    let whole = pooled.len() / V * V;
    for (chunk, out) in pooled[..whole].chunks_exact_mut(V).enumerate() {
        let t0 = chunk * V;
        let mut v = [&[0.0f32; V]; TILE];
        for (xi, row) in v.iter_mut().enumerate() {
            *row = at[xi][t0..t0 + V].try_into().expect("16 tiles");
        }
        // Aᵀ P: rows r0 = P0 + P1 + P2, r1 = P1 - P2 - P3; then · A. Each
        // step is one loop over a chunk, so each becomes vector operations.
        let r0: [[f32; V]; 4] = std::array::from_fn(|j| lanes(|k| v[j][k] + v[4 + j][k] + v[8 + j][k]));
        let r1: [[f32; V]; 4] = std::array::from_fn(|j| lanes(|k| v[4 + j][k] - v[8 + j][k] - v[12 + j][k]));
        let y00 = lanes(|k| act(r0[0][k] + r0[1][k] + r0[2][k] + b));
        let y01 = lanes(|k| act(r0[1][k] - r0[2][k] - r0[3][k] + b));
        let y10 = lanes(|k| act(r1[0][k] + r1[1][k] + r1[2][k] + b));
        let y11 = lanes(|k| act(r1[1][k] - r1[2][k] - r1[3][k] + b));
        for k in 0..V {
            out[k] = max_nan(max_nan(max_nan(y00[k], y01[k]), y10[k]), y11[k]);
        }
    }
    for (t, out) in pooled.iter_mut().enumerate().skip(whole) {
        *out = one(t);
    }
}

/// A chunk of 16 values, `f(k)` for each lane `k`, in one loop.
#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    for (k, o) in out.iter_mut().enumerate() {
        *o = f(k);
    }
    out
}

/// One tile's pooled value (see [`pool_tiles`]).
#[inline(always)]
fn pool_tile(v: [f32; TILE], b: f32, act: impl Fn(f32) -> f32) -> f32 {
    let r0: [f32; 4] = std::array::from_fn(|j| v[j] + v[4 + j] + v[8 + j]);
    let r1: [f32; 4] = std::array::from_fn(|j| v[4 + j] - v[8 + j] - v[12 + j]);
    let y = [
        act(r0[0] + r0[1] + r0[2] + b),
        act(r0[1] - r0[2] - r0[3] + b),
        act(r1[0] + r1[1] + r1[2] + b),
        act(r1[1] - r1[2] - r1[3] + b),
    ];
    max_nan(max_nan(max_nan(y[0], y[1]), y[2]), y[3])
}

/// Splits `row` into its even and odd elements (`row` holds 2 · even.len()).
#[inline(always)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len();
    assert!(row.len() >= 2 * n && odd.len() == n, "a row of 2 x {n} splits into two halves of {n}");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the lengths are checked above.
        done = unsafe { deinterleave_avx512(row, even, odd) };
    }
    for i in done..n {
        even[i] = row[2 * i];
        odd[i] = row[2 * i + 1];
    }
}

/// [`deinterleave`] for whole vectors of 16; returns how many it split.
///
/// # Safety
/// The CPU must have AVX-512F; `row` holds 2 · even.len() and `odd` is as
/// long as `even`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn deinterleave_avx512(row: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let whole = even.len() / 16 * 16;
    // SAFETY: each load reads 32 floats at 2i + 32 <= row.len(); each store
    // writes 16 at i + 16 <= whole (the caller's contract).
    unsafe {
        for i in (0..whole).step_by(16) {
            let (lo, hi) = (_mm512_loadu_ps(row.as_ptr().add(2 * i)), _mm512_loadu_ps(row.as_ptr().add(2 * i + 16)));
            let (e, o) = super::pool::lanes::even_odd(lo, hi);
            _mm512_storeu_ps(even.as_mut_ptr().add(i), e);
            _mm512_storeu_ps(odd.as_mut_ptr().add(i), o);
        }
    }
    whole
}

/// `out = a - b`, elementwise.
#[inline(always)]
fn sub(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x - y;
    }
}

/// `out = a + b`, elementwise.
#[inline(always)]
fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `out = a + b + c`, elementwise.
#[inline(always)]
fn sum3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((o, &x), &y), &z) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = x + y + z;
    }
}

/// `out = a - b - c`, elementwise.
#[inline(always)]
fn diff3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((o, &x), &y), &z) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = x - y - z;
    }
}

/// Work (in output elements x input channels) below which an image's
/// blocks stay on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 17;

/// Bytes of transformed input and products one block of tiles may take,
/// so a block's working set stays in a core's L2 cache.
const BLOCK_BYTES: usize = 3 << 19;

/// The tile rows each block of an image takes: as many as fit
/// [`BLOCK_BYTES`], spread evenly over the blocks. Depends on the layer's
/// shape only.
fn rows_per_block(s: &Conv2dShape) -> usize {
    let (th, tw) = (s.h.output.div_ceil(2), s.w.output.div_ceil(2));
    let per_row = TILE * tw * (s.c + s.m) * std::mem::size_of::<f32>();
    let most = (BLOCK_BYTES / per_row.max(1)).clamp(1, th.max(1));
    th.div_ceil(th.div_ceil(most).max(1)).max(1)
}

/// Runs the convolution on prepared filters: `x` [n, c, ih, iw] and the
/// optional bias [m]; returns [n, m, oh, ow], or with `pool2x2` the max
/// pool of 2x2 windows at stride 2, [n, m, oh / 2, ow / 2], computed from
/// each tile's outputs before they are stored. `s` must fit the filters.
pub fn conv3x3(
    x: &[f32],
    f: &WinogradFilters,
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
    pool2x2: bool,
) -> Vec<f32> {
    assert!(f.fits(s), "the layer does not fit its Winograd filters");
    let (oh, ow) = (s.h.output, s.w.output);
    let plane = if pool2x2 { (oh / 2) * (ow / 2) } else { oh * ow };
    let mut y = vec![0.0f32; s.n * s.m * plane];
    if plane == 0 || s.m == 0 {
        return y;
    }
    let th = oh.div_ceil(2);
    let rows = rows_per_block(s);
    let blocks: Vec<Range<usize>> = (0..th).step_by(rows).map(|r| r..(r + rows).min(th)).collect();
    let in_image = s.c * s.h.input * s.w.input;
    let threads = rayon::current_num_threads();
    // Whole images per thread when they divide evenly or are many;
    // otherwise one image at a time, each step of each block spread over
    // the threads. Every block computes the same sums either way.
    let by_image = threads > 1 && s.n >= threads && (s.n.is_multiple_of(threads) || s.n >= 4 * threads);
    let within = !by_image && threads > 1 && oh * ow * s.m * s.c >= PARALLEL_MIN_WORK;
    let image = |b: usize, out: &mut [f32]| {
        let x = &x[b * in_image..(b + 1) * in_image];
        let out = Strips::new(out);
        for rows in &blocks {
            block(x, f, bias, s, act, pool2x2, rows.clone(), &out, within);
        }
    };
    if by_image {
        y.par_chunks_mut(s.m * plane).enumerate().for_each(|(b, out)| image(b, out));
    } else {
        y.chunks_mut(s.m * plane).enumerate().for_each(|(b, out)| image(b, out));
    }
    y
}

/// One image's output [M, oh, ow], written by blocks of tile rows that each
/// own a horizontal strip of every channel's plane.
struct Strips<'a> {
    ptr: *mut f32,
    len: usize,
    _image: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: blocks write disjoint strips through it (see `Strips::strip`).
unsafe impl Send for Strips<'_> {}
unsafe impl Sync for Strips<'_> {}

impl<'a> Strips<'a> {
    fn new(out: &'a mut [f32]) -> Strips<'a> {
        Strips { ptr: out.as_mut_ptr(), len: out.len(), _image: std::marker::PhantomData }
    }

    /// The start of `count` rows of `width` elements at `start` with row
    /// stride `stride`, checked to lie inside the buffer.
    fn rows(&self, start: usize, count: usize, width: usize, stride: usize) -> *mut f32 {
        assert!(count == 0 || start + (count - 1) * stride + width <= self.len, "rows outside the buffer");
        // SAFETY: inside the buffer (checked).
        unsafe { self.ptr.add(start) }
    }

    /// Output rows `rows` of channel `oc`'s plane of `plane` elements.
    ///
    /// # Safety
    /// No two live strips may overlap: each block asks only for its own
    /// rows, and each channel once.
    #[allow(clippy::mut_from_ref)]
    unsafe fn strip(&self, oc: usize, plane: usize, width: usize, rows: Range<usize>) -> &mut [f32] {
        let start = oc * plane + rows.start * width;
        let len = rows.len() * width;
        assert!(start + len <= self.len, "strip outside the image");
        // SAFETY: inside the image (checked), and disjoint from every other
        // live strip (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// One block of tile rows of one image: input transform into `V`
/// [C][16][T], 16 products into `P` [M][16][T] (each output channel's 16
/// rows together, for the output transform), output transform into the
/// block's strip of each output channel. With `parallel`, each of the three
/// steps is spread over the current pool (by input channel, by element of
/// the tile, by output channel); every piece computes what it computes on
/// one thread.
#[allow(clippy::too_many_arguments)]
fn block(
    x: &[f32],
    f: &WinogradFilters,
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
    pool2x2: bool,
    rows: Range<usize>,
    out: &Strips<'_>,
    parallel: bool,
) {
    let (ih, iw) = (s.h.input, s.w.input);
    let (oh, ow) = (s.h.output, s.w.output);
    let tiles = rows.len() * ow.div_ceil(2);
    let (m, c) = (s.m, s.c);
    super::conv2d::with_scratch(TILE * tiles * (c + m), |scratch| {
        let (v, p) = scratch.split_at_mut(TILE * c * tiles);
        let transform = |work: &mut Vec<f32>, (ch, dst): (usize, &mut [f32])| {
            input_channel(&x[ch * ih * iw..(ch + 1) * ih * iw], s, rows.clone(), dst, work);
        };
        if parallel {
            v.par_chunks_mut(TILE * tiles).enumerate().for_each_init(Vec::new, transform);
        } else {
            let mut work = Vec::new();
            v.chunks_mut(TILE * tiles).enumerate().for_each(|item| transform(&mut work, item));
        }
        // P[ξ] = U[ξ] · V[ξ], one product per element of the tile, each
        // into its rows of P.
        let v = &*v;
        let products = Strips::new(p);
        let product = |xi: usize| {
            let u = View::row_major(&f.u[xi * m * c..(xi + 1) * m * c], m, c);
            let v = View { data: &v[xi * tiles..], rows: c, cols: tiles, rs: TILE * tiles, cs: 1 };
            // SAFETY: product ξ writes rows oc · 16T + ξT .. + T of P, inside
            // it (checked by `rows`), which no other product touches.
            unsafe { sgemm_into(u, v, products.rows(xi * tiles, m, tiles, TILE * tiles), TILE * tiles) };
        };
        if parallel {
            (0..TILE).into_par_iter().for_each(product);
        } else {
            (0..TILE).for_each(product);
        }
        let p = &*p;
        let b = |oc: usize| bias.map_or(0.0, |b| b[oc]);
        let (ph, pw) = (oh / 2, ow / 2);
        let pooled_rows = rows.start.min(ph)..rows.end.min(ph);
        let out_rows = 2 * rows.start..(2 * rows.end).min(oh);
        let channel = |work: &mut Vec<f32>, oc: usize| {
            if pool2x2 {
                // SAFETY: this block's pooled rows of channel oc, asked for
                // once; other blocks own other rows.
                let strip = unsafe { out.strip(oc, ph * pw, pw, pooled_rows.clone()) };
                output_channel_pooled(p, oc, s, rows.clone(), b(oc), act, strip, work);
            } else {
                // SAFETY: this block's rows of channel oc, asked for once;
                // other blocks own other rows.
                let strip = unsafe { out.strip(oc, oh * ow, ow, out_rows.clone()) };
                output_channel(p, oc, s, rows.clone(), b(oc), act, strip, work);
            }
        };
        if parallel {
            (0..m).into_par_iter().for_each_init(Vec::new, channel);
        } else {
            let mut work = Vec::new();
            (0..m).for_each(|oc| channel(&mut work, oc));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv2d::{Algorithm, conv2d_with, testing};
    use crate::kernels::testing::random_floats;

    /// A 3x3, stride-1 layer with the given pads (top, bottom, left, right).
    fn shape(n: usize, c: usize, m: usize, input: [usize; 2], [pt, pb, pl, pr]: [usize; 4]) -> Conv2dShape {
        testing::shape(n, c, m, 1, input, [3, 3], [[1, pt, pb, 1], [1, pl, pr, 1]])
    }

    /// Image-like inputs in [0, 1) and He-initialised filters, as a trained
    /// network's first layers see.
    fn data(s: &Conv2dShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x: Vec<f32> =
            random_floats(s.n * s.c * s.h.input * s.w.input, seed).iter().map(|v| (v + 1.0) / 2.0).collect();
        let he = (2.0 / (s.c * 9) as f32).sqrt();
        let w: Vec<f32> = random_floats(s.m * s.c * 9, seed + 1).iter().map(|v| v * he * 1.7).collect();
        let b = random_floats(s.m, seed + 2).iter().map(|v| v * 0.01).collect();
        (x, w, b)
    }

    #[test]
    fn winograd_stays_within_the_kernel_tolerance_of_the_exact_sum() {
        let cases = [
            shape(1, 64, 128, [32, 32], [1, 1, 1, 1]),
            shape(2, 128, 256, [16, 16], [1, 1, 1, 1]),
            shape(1, 8, 8, [7, 9], [0, 0, 0, 0]),
            shape(2, 16, 12, [5, 6], [1, 0, 2, 1]),
            shape(1, 256, 16, [3, 3], [1, 1, 1, 1]),
        ];
        for (i, s) in cases.iter().enumerate() {
            let (x, w, b) = data(s, 40 + i as u64);
            let filters = WinogradFilters::new(&w, s.m, s.c);
            let got = conv3x3(&x, &filters, Some(&b), s, Activation::Identity, false);
            let direct = conv2d_with(Algorithm::Gemm, &x, &w, Some(&b), s, Activation::Identity);
            let (want, scale) = testing::exact(&x, &w, Some(&b), s);
            let (mut worst, mut worst_direct) = (0.0f64, 0.0f64);
            for k in 0..want.len() {
                let tolerance = 1e-5 + 1e-4 * want[k].abs();
                let err = (f64::from(got[k]) - want[k]).abs();
                assert!(err <= tolerance, "case {i} element {k}: got {}, exact {}", got[k], want[k]);
                worst = worst.max(err / scale[k].max(1e-30));
                worst_direct = worst_direct.max((f64::from(direct[k]) - want[k]).abs() / scale[k].max(1e-30));
            }
            println!("case {i}: worst error / sum of |terms|: winograd {worst:.2e}, im2col {worst_direct:.2e}");
            // The error relative to the terms' magnitudes stays within a
            // small multiple of the direct product's.
            assert!(
                worst <= 8.0 * worst_direct.max(f64::from(f32::EPSILON)),
                "case {i}: {worst:e} vs direct {worst_direct:e}"
            );
        }
    }

    #[test]
    fn batch_size_and_thread_count_change_no_bit() {
        // Small layers run on one thread; large ones split whole images
        // over the threads (4 images on 2 threads), or each step of one
        // image's blocks (1 and 3 images on 2 threads).
        for (s, pool2x2) in [
            (shape(4, 16, 24, [10, 11], [1, 1, 1, 1]), false),
            (shape(4, 32, 24, [22, 21], [1, 1, 1, 1]), false),
            (shape(3, 32, 40, [30, 30], [1, 1, 1, 1]), true),
        ] {
            let (x, w, b) = data(&s, 3);
            let filters = WinogradFilters::new(&w, s.m, s.c);
            let on = |threads: usize, s: &Conv2dShape, x: &[f32]| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| conv3x3(x, &filters, Some(&b), s, Activation::Relu, pool2x2))
            };
            let whole = on(1, &s, &x);
            assert_eq!(on(2, &s, &x), whole, "{s:?}");
            let one = Conv2dShape { n: 1, ..s };
            let images: Vec<f32> = x.chunks(x.len() / s.n).flat_map(|image| on(2, &one, image)).collect();
            assert_eq!(images, whole, "{s:?}");
        }
    }

    #[test]
    fn only_3x3_unit_stride_ungrouped_layers_suit() {
        assert!(suits(64, 64, [3, 3], [1, 1], [1, 1], 1));
        assert!(!suits(64, 64, [3, 3], [2, 2], [1, 1], 1));
        assert!(!suits(64, 64, [3, 3], [1, 1], [2, 2], 1));
        assert!(!suits(64, 64, [3, 3], [1, 1], [1, 1], 2));
        assert!(!suits(64, 3, [3, 3], [1, 1], [1, 1], 1));
        assert!(!suits(64, 64, [5, 5], [1, 1], [1, 1], 1));
    }
}
