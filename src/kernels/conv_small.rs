//! The direct convolution for layers whose reduction is tiny (an image's
//! first layer: 1 or 3 input channels times a 3x3 window, K = 9 or 27),
//! where packing patches for a matrix product costs more than the product.
//!
//! Stride 1, any dilation and padding, one group. For each block of output
//! channels and pixels of a row (4 x 64, 8 x 32 or 16 x 16, by the row's
//! width), 16 AVX-512 accumulators stay in registers over all K taps: per
//! tap, the block's input vectors are loaded and its weights broadcast for
//! 16 fused multiply-adds. Each output's sum
//! runs over the taps in order from the bias, whatever the block, batch or
//! thread count.
//!
//! Only for x86-64 CPUs with AVX-512F; [`available`] says whether this CPU
//! has it (otherwise the layer runs as im2col and a matrix product).

use rayon::prelude::*;

use super::conv2d::Conv2dShape;
use super::epilogue::Activation;

/// Reductions up to this size (input channels x window taps) run here.
pub const MAX_REDUCTION: usize = 32;

const LANES: usize = 16;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a layer of this shape runs here (on a CPU that has it).
pub fn suits(s: &Conv2dShape) -> bool {
    s.g == 1 && s.h.stride == 1 && s.w.stride == 1 && s.cg * s.h.kernel * s.w.kernel <= MAX_REDUCTION
}

/// Runs the convolution: `x` [n, c, ih, iw], `w` [m, c, kh, kw], the
/// optional bias [m]; returns [n, m, oh, ow], or with `pool` the max pool
/// of windows of that size tiling each plane, [n, m, oh / ph, ow / pw]
/// (each block of planes pooled while it is in cache). `s` must suit the
/// kernel and the CPU must have AVX-512F.
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
    pool: Option<[usize; 2]>,
) -> Vec<f32> {
    assert!(suits(s) && available(), "conv_small takes stride-1 ungrouped layers with K <= {MAX_REDUCTION} on AVX-512");
    // 16 accumulators as output channels x vectors of a row, the vectors
    // sized to the row so few lanes are wasted: the split depends on the
    // layer's shape only.
    // A 2x2 pool after Relu (or nothing) is taken in registers, two rows
    // of 4 channels x 32 pixels at a time.
    if pool == Some([2, 2]) && matches!(act, Activation::Identity | Activation::Relu) {
        return blocked::<4, 2>(x, w, bias, s, act, pool);
    }
    match s.w.output {
        0..=16 => blocked::<16, 1>(x, w, bias, s, act, pool),
        17..=32 => blocked::<8, 2>(x, w, bias, s, act, pool),
        _ => blocked::<4, 4>(x, w, bias, s, act, pool),
    }
}

/// [`conv2d`] with blocks of `OB` output channels and `XB` vectors of 16
/// pixels.
fn blocked<const OB: usize, const XB: usize>(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
    pool: Option<[usize; 2]>,
) -> Vec<f32> {
    let (oh, ow) = (s.h.output, s.w.output);
    let plane = oh * ow;
    // The plane each block writes: the output's, or the pooled one.
    let [pool_h, pool_w] = pool.unwrap_or([1, 1]);
    let out_plane = (oh / pool_h) * (ow / pool_w);
    let mut y = vec![0.0f32; s.n * s.m * out_plane];
    if out_plane == 0 || s.m == 0 {
        return y;
    }
    let (kh, kw) = (s.h.kernel, s.w.kernel);
    let k = s.c * kh * kw;
    // Weights regrouped per block of 4 output channels: [block][tap][4],
    // zero for the channels past m.
    let blocks = s.m.div_ceil(OB);
    let mut wb = vec![0.0f32; blocks * k * OB];
    for oc in 0..s.m {
        for t in 0..k {
            wb[((oc / OB) * k + t) * OB + oc % OB] = w[oc * k + t];
        }
    }
    // Each image's channels copied into zero-bordered planes, so every tap
    // reads a full row unchecked.
    let (padded_h, padded_w) = (s.h.input + s.h.pad_begin + s.h.pad_end, s.w.input + s.w.pad_begin + s.w.pad_end);
    // The farthest element a row of outputs reads, rounded up to whole
    // blocks of 64 pixels, must be inside the padded plane's allocation.
    let row_span = ow.div_ceil(XB * LANES) * XB * LANES + (kw - 1) * s.w.dilation;
    let slack = row_span.saturating_sub(padded_w);
    let in_image = s.c * s.h.input * s.w.input;
    let padded_len = s.c * padded_h * padded_w + slack;
    let work = s.m * plane * k;
    let each_image = |(b, out): (usize, &mut [f32])| {
        let mut padded = vec![0.0f32; padded_len];
        let image = &x[b * in_image..(b + 1) * in_image];
        for (c, channel) in image.chunks_exact(s.h.input * s.w.input).enumerate() {
            for (iy, line) in channel.chunks_exact(s.w.input).enumerate() {
                let at = (c * padded_h + iy + s.h.pad_begin) * padded_w + s.w.pad_begin;
                padded[at..at + s.w.input].copy_from_slice(line);
            }
        }
        let rows = |(block, out): (usize, &mut [f32])| {
            let bias4: [f32; OB] =
                std::array::from_fn(|o| bias.and_then(|bv| bv.get(block * OB + o).copied()).unwrap_or(0.0));
            let channels = OB.min(s.m - block * OB);
            let weights = &wb[block * k * OB..(block + 1) * k * OB];
            // Relu is applied in registers before the store; the other
            // activations afterwards.
            let relu = act == Activation::Relu;
            let compute = |planes: &mut [f32]| {
                // SAFETY: `available()` was checked above; the geometry keeps
                // every read inside `padded` (see `row_span`), and `block`
                // checks that `planes` holds the channels it writes.
                unsafe {
                    avx512::block::<OB, XB>(&padded, weights, bias4, s, (padded_h, padded_w), (channels, relu), planes)
                };
                if !relu {
                    for plane_out in planes.chunks_mut(plane).take(channels) {
                        act.apply(plane_out);
                    }
                }
            };
            match pool {
                None => compute(out),
                Some([2, 2]) if OB == 4 && XB == 2 && (relu || act == Activation::Identity) => {
                    // SAFETY: as for `block`; `block_pooled` checks `out`.
                    unsafe {
                        avx512::block_pooled::<OB>(
                            &padded,
                            weights,
                            bias4,
                            s,
                            (padded_h, padded_w),
                            (channels, relu),
                            out,
                        )
                    };
                }
                Some(kernel) => super::conv2d::with_scratch(channels * plane, |planes| {
                    compute(planes);
                    for (src, dst) in planes.chunks_exact(plane).zip(out.chunks_mut(out_plane)) {
                        super::pool::pool_tiled(src, ow, kernel, ow / pool_w, dst);
                    }
                }),
            }
        };
        if work >= super::sgemm::PARALLEL_MIN_MACS {
            out.par_chunks_mut(OB * out_plane).enumerate().for_each(rows);
        } else {
            out.chunks_mut(OB * out_plane).enumerate().for_each(rows);
        }
    };
    if s.n > 1 && s.n * work >= super::sgemm::PARALLEL_MIN_MACS {
        y.par_chunks_mut(s.m * out_plane).enumerate().for_each(each_image);
    } else {
        y.chunks_mut(s.m * out_plane).enumerate().for_each(each_image);
    }
    y
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Conv2dShape, LANES};

    /// Up to `OB` output channels (`channels`) of one image, with Relu
    /// applied when `relu`: `out` holds their planes one after another. `padded` is the image's zero-bordered
    /// planes [c][ph][pw] (with slack after the last), `weights` [tap][4].
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `padded` must hold every element a
    /// block of 64 pixels reads past a row's end.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block<const OB: usize, const XB: usize>(
        padded: &[f32],
        weights: &[f32],
        bias: [f32; OB],
        s: &Conv2dShape,
        (ph, pw): (usize, usize),
        (channels, relu): (usize, bool),
        out: &mut [f32],
    ) {
        assert!(out.len() >= channels * s.h.output * s.w.output && weights.len() >= s.c * s.h.kernel * s.w.kernel * OB);
        // SAFETY: the CPU has AVX-512F (the caller's contract); each load
        // reads 16 floats at or below line + kx·dw + 64 <= padded.len() (the
        // caller's slack), and each store writes only pixels of the row
        // inside `out` (checked above).
        unsafe {
            let (oh, ow) = (s.h.output, s.w.output);
            let plane = oh * ow;
            for oy in 0..oh {
                for x0 in (0..ow).step_by(XB * LANES) {
                    let offsets: [usize; XB] = std::array::from_fn(|i| i * LANES);
                    let acc = sums::<OB, XB>(padded, weights, bias, s, (ph, pw), oy * pw + x0, offsets);
                    for (o, row) in acc.iter().enumerate().take(channels) {
                        let dst = out.as_mut_ptr().add(o * plane + oy * ow + x0);
                        for (i, vector) in row.iter().enumerate() {
                            let start = x0 + i * LANES;
                            if start >= ow {
                                break;
                            }
                            let n = (ow - start).min(LANES);
                            let mask: __mmask16 = if n == LANES { 0xffff } else { (1u16 << n) - 1 };
                            // SAFETY: only the n pixels of this row inside the
                            // plane are written.
                            // max(0, v) returns v when v is NaN (and -0.0 for
                            // -0.0), as the Relu kernel's `v < 0 ? 0 : v`.
                            let value = if relu { _mm512_max_ps(_mm512_setzero_ps(), *vector) } else { *vector };
                            _mm512_mask_storeu_ps(dst.add(i * LANES), mask, value);
                        }
                    }
                }
            }
        }
    }

    /// The sums over every tap, each from its channel's bias, of `OB`
    /// output channels at `N` vectors of 16 pixels: vector `i` reads the
    /// padded planes from `start + offsets[i]` (the offset in channel 0's
    /// plane of its first tap). Taps in order: input channel, row, column.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; every tap's 16 floats from each vector's
    /// start must lie inside `padded`, and `weights` must hold
    /// [c · taps][OB].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn sums<const OB: usize, const N: usize>(
        padded: &[f32],
        weights: &[f32],
        bias: [f32; OB],
        s: &Conv2dShape,
        (ph, pw): (usize, usize),
        start: usize,
        offsets: [usize; N],
    ) -> [[__m512; N]; OB] {
        let (kh, kw, dh, dw) = (s.h.kernel, s.w.kernel, s.h.dilation, s.w.dilation);
        let taps = kh * kw;
        let mut acc = [[_mm512_setzero_ps(); N]; OB];
        for (o, row) in acc.iter_mut().enumerate() {
            *row = [_mm512_set1_ps(bias[o]); N];
        }
        // SAFETY: the caller's contract.
        unsafe {
            for c in 0..s.c {
                for ky in 0..kh {
                    let line = (c * ph + ky * dh) * pw + start;
                    for kx in 0..kw {
                        let t = (c * taps + ky * kw + kx) * OB;
                        let src = padded.as_ptr().add(line + kx * dw);
                        let v: [__m512; N] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(offsets[i])));
                        for (o, row) in acc.iter_mut().enumerate() {
                            let wv = _mm512_set1_ps(*weights.get_unchecked(t + o));
                            for i in 0..N {
                                row[i] = _mm512_fmadd_ps(wv, v[i], row[i]);
                            }
                        }
                    }
                }
            }
        }
        acc
    }

    /// [`block`] followed by a 2x2, stride-2 max pool, in registers: for
    /// each pair of output rows and 32 pixels, `OB` channels x 2 vectors x
    /// 2 rows of sums over the taps, Relu when `relu`, then each window's
    /// four values folded in MaxPool's order (NaN wins) into 16 pooled
    /// outputs. `out` holds the channels' pooled planes one after another.
    ///
    /// # Safety
    /// As for [`block`]: the CPU must have AVX-512F, and `padded` must hold
    /// every element a block of 32 pixels reads past a row's end.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_pooled<const OB: usize>(
        padded: &[f32],
        weights: &[f32],
        bias: [f32; OB],
        s: &Conv2dShape,
        (ph, pw): (usize, usize),
        (channels, relu): (usize, bool),
        out: &mut [f32],
    ) {
        let (oh, ow) = (s.h.output, s.w.output);
        let (qh, qw) = (oh / 2, ow / 2);
        let (kw, dw) = (s.w.kernel, s.w.dilation);
        assert!(out.len() >= channels * qh * qw && weights.len() >= s.c * s.h.kernel * kw * OB && channels <= OB);
        assert!(padded.len() >= (s.c * ph - 1) * pw + (qw * 2).div_ceil(2 * LANES) * 2 * LANES + (kw - 1) * dw);
        // SAFETY: the CPU has AVX-512F (the caller's contract); each load
        // reads 16 floats inside `padded` (checked above: rows 2qy + 1 +
        // ky·dh < ph, and 32 pixels from x0 plus the taps' reach), and each
        // store writes only pooled outputs of the row inside `out`.
        unsafe {
            for qy in 0..qh {
                let oy = 2 * qy;
                for x0 in (0..2 * qw).step_by(2 * LANES) {
                    // acc[o][2 r + v]: channel o, row oy + r, pixels x0 + 16 v.
                    let offsets = [0, LANES, pw, pw + LANES];
                    let acc = sums::<OB, 4>(padded, weights, bias, s, (ph, pw), oy * pw + x0, offsets);
                    let n = (qw - x0 / 2).min(LANES);
                    let mask: __mmask16 = if n == LANES { 0xffff } else { (1u16 << n) - 1 };
                    for (o, row) in acc.iter().enumerate().take(channels) {
                        // max(0, v) keeps NaN and -0.0, as the Relu kernel.
                        let r = row.map(|v| if relu { _mm512_max_ps(_mm512_setzero_ps(), v) } else { v });
                        // Window taps in MaxPool's order: (0, 0), (0, 1), (1, 0), (1, 1).
                        let best = crate::kernels::pool::lanes::pool2x2([r[0], r[1]], [r[2], r[3]]);
                        let dst = out.as_mut_ptr().add(o * qh * qw + qy * qw + x0 / 2);
                        _mm512_mask_storeu_ps(dst, mask, best);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Conv2dShape;

    pub unsafe fn block<const OB: usize, const XB: usize>(
        _: &[f32],
        _: &[f32],
        _: [f32; OB],
        _: &Conv2dShape,
        _: (usize, usize),
        _: (usize, bool),
        _: &mut [f32],
    ) {
        unreachable!("conv_small runs only where available() is true");
    }

    pub unsafe fn block_pooled<const OB: usize>(
        _: &[f32],
        _: &[f32],
        _: [f32; OB],
        _: &Conv2dShape,
        _: (usize, usize),
        _: (usize, bool),
        _: &mut [f32],
    ) {
        unreachable!("conv_small runs only where available() is true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv2d::{Algorithm, conv2d_with, testing};
    use crate::kernels::testing::{assert_close, random_floats};

    /// A stride-1 layer with the same pad on every side.
    fn shape(
        n: usize,
        c: usize,
        m: usize,
        input: [usize; 2],
        kernel: [usize; 2],
        pad: usize,
        dilation: usize,
    ) -> Conv2dShape {
        testing::shape(n, c, m, 1, input, kernel, [[1, pad, pad, dilation]; 2])
    }

    #[test]
    fn small_reductions_match_the_reference_loop() {
        if !available() {
            return;
        }
        let cases = [
            shape(2, 1, 32, [28, 28], [3, 3], 0, 1),
            shape(1, 3, 64, [64, 64], [3, 3], 1, 1),
            shape(3, 3, 6, [9, 70], [3, 3], 1, 1),
            shape(1, 2, 5, [11, 13], [3, 2], 2, 2),
            shape(1, 1, 7, [1, 100], [1, 5], 0, 1),
            shape(2, 16, 3, [5, 5], [1, 1], 0, 1),
        ];
        for (i, s) in cases.iter().enumerate() {
            assert!(suits(s), "case {i}");
            let x = random_floats(s.n * s.c * s.h.input * s.w.input, 60 + i as u64);
            let w = random_floats(s.m * s.c * s.h.kernel * s.w.kernel, 70 + i as u64);
            let b = random_floats(s.m, 80 + i as u64);
            for act in [Activation::Identity, Activation::Relu] {
                let want = conv2d_with(Algorithm::Direct, &x, &w, Some(&b), s, act);
                assert_close(&conv2d(&x, &w, Some(&b), s, act, None), &want);
            }
            let want = conv2d_with(Algorithm::Direct, &x, &w, None, s, Activation::Identity);
            assert_close(&conv2d(&x, &w, None, s, Activation::Identity, None), &want);
        }
    }

    #[test]
    fn relu_in_registers_keeps_nan_as_the_relu_kernel_does() {
        if !available() {
            return;
        }
        let s = shape(1, 1, 4, [6, 40], [3, 3], 1, 1);
        let mut x = random_floats(240, 3);
        x[100] = f32::NAN;
        let w = random_floats(36, 4);
        let got = conv2d(&x, &w, None, &s, Activation::Relu, None);
        let want = conv2d_with(Algorithm::Direct, &x, &w, None, &s, Activation::Relu);
        assert!(got.iter().any(|v| v.is_nan()), "a NaN input reaches the outputs whose windows hold it");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.is_nan() == w.is_nan() && (g.is_nan() || (g - w).abs() <= 1e-5 + 1e-4 * w.abs()), "{g} vs {w}");
            assert!(g.is_nan() || *g >= 0.0);
        }
    }

    #[test]
    fn batch_size_and_thread_count_change_no_bit() {
        if !available() {
            return;
        }
        let s = shape(4, 3, 20, [40, 40], [3, 3], 1, 1);
        let x = random_floats(s.n * s.c * 1600, 1);
        let w = random_floats(s.m * 27, 2);
        let on = |threads: usize, s: &Conv2dShape, x: &[f32]| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| conv2d(x, &w, None, s, Activation::Relu, None))
        };
        let whole = on(1, &s, &x);
        assert_eq!(on(2, &s, &x), whole);
        let one = Conv2dShape { n: 1, ..s };
        let images: Vec<f32> = x.chunks(x.len() / 4).flat_map(|image| on(2, &one, image)).collect();
        assert_eq!(images, whole);
    }
}
