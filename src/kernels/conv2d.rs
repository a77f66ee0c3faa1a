//! The 2-D float convolution (NCHW input, OIHW weights; 1-D runs as a unit
//! height), with its bias and a fused activation.
//!
//! The algorithm for a layer depends on the layer's shape alone, never on
//! the batch size or the thread count:
//! - `Direct`: the reference loop, where the reduction is tiny or a group
//!   has few output channels (depthwise layers), so packing for a matrix
//!   product would cost more than it saves;
//! - `SmallDirect`: a register-blocked direct kernel (AVX-512) for
//!   ungrouped stride-1 layers whose reduction is at most 32 (`conv_small`);
//! - `Gemm`: one matrix product per image and group, `W [M/g, K]` times the
//!   image's patches `[K, OH·OW]` (im2col), written straight into the
//!   output plane; a 1x1, stride-1, unpadded layer multiplies the input
//!   itself.
//!
//! Work is split over images (and groups) when there are enough of them,
//! and inside the product otherwise; both splits give the same sums in the
//! same order, so the result does not depend on the split.

use rayon::prelude::*;

use super::KernelError;
use super::conv::Axis;
use super::epilogue::Activation;
use super::sgemm::{PARALLEL_MIN_MACS, View, sgemm};
use super::winograd::{WinogradFilters, conv3x3};

/// The shape of a convolution: batch, input channels, output channels,
/// input channels per group, groups; and the two resolved spatial axes.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dShape {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub cg: usize,
    pub g: usize,
    pub h: Axis,
    pub w: Axis,
}

impl Conv2dShape {
    fn reduction(&self) -> usize {
        self.cg * self.h.kernel * self.w.kernel
    }

    fn out_plane(&self) -> usize {
        self.h.output * self.w.output
    }

    fn in_plane(&self) -> usize {
        self.h.input * self.w.input
    }

    fn pointwise(&self) -> bool {
        let unit = |a: &Axis| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.output == a.input;
        unit(&self.h) && unit(&self.w)
    }
}

/// How a layer is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Direct,
    Gemm,
    /// The register-blocked direct kernel of `conv_small` (AVX-512).
    SmallDirect,
}

impl Algorithm {
    /// The algorithm for a layer of this shape.
    pub fn choose(shape: &Conv2dShape) -> Algorithm {
        let per_group = shape.m / shape.g.max(1);
        if super::conv_small::suits(shape) && super::conv_small::available() {
            Algorithm::SmallDirect
        } else if shape.reduction() < 4 || per_group < 4 {
            Algorithm::Direct
        } else {
            Algorithm::Gemm
        }
    }
}

/// Runs the convolution: `x` [n, c, ih, iw], `w` [m, cg, kh, kw], the
/// optional bias [m]; returns [n, m, oh, ow].
pub fn conv2d(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &Conv2dShape, act: Activation) -> Vec<f32> {
    conv2d_with(Algorithm::choose(s), x, w, bias, s, act)
}

/// [`conv2d`] followed by a max pool whose windows of `pool` tile each
/// output plane (strides equal to the window, no padding, the last partial
/// windows dropped): returns [n, m, oh / ph, ow / pw], the same bits as the
/// two operators one after the other. The direct kernel pools each block of
/// planes while it is still in cache; the other algorithms pool the whole
/// output.
pub fn conv2d_pooled(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
    pool: [usize; 2],
) -> Vec<f32> {
    match Algorithm::choose(s) {
        Algorithm::SmallDirect => super::conv_small::conv2d(x, w, bias, s, act, Some(pool)),
        algorithm => pool_output(&conv2d_with(algorithm, x, w, bias, s, act), s, pool),
    }
}

/// A 2-D float convolution with what the load-time passes fuse into it:
/// Winograd's filters when they fit the layer (else `w`, OIHW), the bias,
/// the activation and a max pool whose windows tile the output. Returns the
/// output [n, m, oh', ow'] and its spatial size.
///
/// # Errors
/// When the pool window is larger than the convolution's output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused(
    x: &[f32],
    w: &[f32],
    winograd: Option<&WinogradFilters>,
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
    pool: Option<[usize; 2]>,
) -> Result<(Vec<f32>, [usize; 2]), KernelError> {
    let winograd = winograd.filter(|f| f.fits(s));
    let Some(pool) = pool else {
        let y = match winograd {
            Some(f) => conv3x3(x, f, bias, s, act, false),
            None => conv2d(x, w, bias, s, act),
        };
        return Ok((y, [s.h.output, s.w.output]));
    };
    let size = pooled_size([s.h.output, s.w.output], pool)?;
    let y = match winograd {
        Some(f) if pool == [2, 2] => conv3x3(x, f, bias, s, act, true),
        Some(f) => pool_output(&conv3x3(x, f, bias, s, act, false), s, pool),
        None => conv2d_pooled(x, w, bias, s, act, pool),
    };
    Ok((y, size))
}

/// The size of a convolution output [oh, ow] max-pooled by windows of
/// `pool` that tile it.
///
/// # Errors
/// When a window is larger than the output.
pub fn pooled_size([oh, ow]: [usize; 2], pool: [usize; 2]) -> Result<[usize; 2], KernelError> {
    if oh < pool[0] || ow < pool[1] {
        return Err(KernelError(format!(
            "the pool window {pool:?} does not fit in the convolution's output of {oh}x{ow}: the input's spatial dims are too small for this model"
        )));
    }
    Ok([oh / pool[0], ow / pool[1]])
}

/// Max-pools a whole convolution output [n, m, oh, ow] by tiling windows.
pub fn pool_output(y: &[f32], s: &Conv2dShape, pool: [usize; 2]) -> Vec<f32> {
    super::pool::max_pool_planes(y, s.n * s.m, [s.h.output, s.w.output], pool)
}

/// [`conv2d`] with a given algorithm (tests hold each to the reference).
pub fn conv2d_with(
    algorithm: Algorithm,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    act: Activation,
) -> Vec<f32> {
    if algorithm == Algorithm::SmallDirect {
        return super::conv_small::conv2d(x, w, bias, s, act, None);
    }
    let plane = s.out_plane();
    let mut y = vec![0.0f32; s.n * s.m * plane];
    if plane == 0 || s.m == 0 {
        return y;
    }
    let macs = y.len() * s.reduction();
    match algorithm {
        Algorithm::SmallDirect => unreachable!("returned above"),
        Algorithm::Direct => {
            let each = |(idx, out): (usize, &mut [f32])| {
                direct_plane(x, w, bias, s, idx, out);
                act.apply(out);
            };
            if macs >= PARALLEL_MIN_MACS {
                y.par_chunks_mut(plane).enumerate().for_each(each);
            } else {
                y.chunks_mut(plane).enumerate().for_each(each);
            }
        }
        Algorithm::Gemm => {
            let per_group = s.m / s.g;
            let tasks = s.n * s.g;
            let threads = rayon::current_num_threads();
            let each = |(idx, out): (usize, &mut [f32]), inner: bool| {
                gemm_group(x, w, bias, s, idx, out, inner);
                act.apply(out);
            };
            // Whole images per thread when they divide evenly or are many;
            // otherwise one image at a time with the product itself split.
            if threads > 1 && macs >= PARALLEL_MIN_MACS && (tasks.is_multiple_of(threads) || tasks >= 4 * threads) {
                y.par_chunks_mut(per_group * plane).enumerate().for_each(|t| each(t, false));
            } else {
                y.chunks_mut(per_group * plane).enumerate().for_each(|t| each(t, true));
            }
        }
    }
    y
}

/// One output plane (image, output channel) by the reference loop: the
/// bias, then each input channel's taps in order, each tap over the outputs
/// it lands inside the input for.
fn direct_plane(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &Conv2dShape, idx: usize, out: &mut [f32]) {
    let (ah, aw) = (&s.h, &s.w);
    let (iw, ow) = (aw.input, aw.output);
    let (kh, kw) = (ah.kernel, aw.kernel);
    let (b, oc) = (idx / s.m, idx % s.m);
    out.fill(bias.map_or(0.0, |bv| bv[oc]));
    let group_index = oc / (s.m / s.g);
    for icg in 0..s.cg {
        let ic = group_index * s.cg + icg;
        let input = &x[(b * s.c + ic) * s.in_plane()..(b * s.c + ic + 1) * s.in_plane()];
        let weights = &w[(oc * s.cg + icg) * kh * kw..(oc * s.cg + icg + 1) * kh * kw];
        for ky in 0..kh {
            let rows = ah.valid_outputs(ky);
            for kx in 0..kw {
                let wv = weights[ky * kw + kx];
                let cols = aw.valid_outputs(kx);
                for oy in rows.clone() {
                    let iy = oy * ah.stride + ky * ah.dilation - ah.pad_begin;
                    let in_row = &input[iy * iw..(iy + 1) * iw];
                    let out_row = &mut out[oy * ow..(oy + 1) * ow];
                    if aw.stride == 1 {
                        let first = cols.start + kx * aw.dilation - aw.pad_begin;
                        let src = &in_row[first..first + cols.len()];
                        for (o, &v) in out_row[cols.clone()].iter_mut().zip(src) {
                            *o += wv * v;
                        }
                    } else {
                        for ox in cols.clone() {
                            let ix = ox * aw.stride + kx * aw.dilation - aw.pad_begin;
                            out_row[ox] += wv * in_row[ix];
                        }
                    }
                }
            }
        }
    }
}

/// One image and group by a matrix product: `out` [M/g, OH·OW] =
/// W_group [M/g, K] · patches [K, OH·OW], on top of the bias.
fn gemm_group(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dShape,
    idx: usize,
    out: &mut [f32],
    inner_parallel: bool,
) {
    let per_group = s.m / s.g;
    let (b, gi) = (idx / s.g, idx % s.g);
    let plane = s.out_plane();
    let k = s.reduction();
    if let Some(bias) = bias {
        for (row, &bv) in out.chunks_mut(plane).zip(&bias[gi * per_group..(gi + 1) * per_group]) {
            row.fill(bv);
        }
    }
    let input = &x[(b * s.c + gi * s.cg) * s.in_plane()..(b * s.c + (gi + 1) * s.cg) * s.in_plane()];
    let weights = View::row_major(&w[gi * per_group * k..(gi + 1) * per_group * k], per_group, k);
    if s.pointwise() {
        sgemm(weights, View::row_major(input, k, plane), out, plane, bias.is_some(), inner_parallel);
        return;
    }
    with_scratch(k * plane, |patches| {
        im2col(input, s, patches);
        sgemm(weights, View::row_major(patches, k, plane), out, plane, bias.is_some(), inner_parallel);
    });
}

thread_local! {
    /// Each compute thread's patch buffer, kept between layers and requests
    /// (a few MB for the largest layers) instead of allocated and faulted in
    /// for every image.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of `len` floats with unspecified contents: the
/// thread's own buffer, or a fresh one when this thread is already using
/// its own (a task stolen while an inner product waits).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// The patches of one group of one image: row `(ic, ky, kx)` holds, for
/// every output position, the input element that tap reads (0 in padding).
fn im2col(input: &[f32], s: &Conv2dShape, patches: &mut [f32]) {
    let (ah, aw) = (&s.h, &s.w);
    let (iw, ow) = (aw.input, aw.output);
    let plane = s.out_plane();
    let (kh, kw) = (ah.kernel, aw.kernel);
    for (r, row) in patches.chunks_mut(plane).enumerate() {
        let (ic, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
        let channel = &input[ic * s.in_plane()..(ic + 1) * s.in_plane()];
        let rows = ah.valid_outputs(ky);
        let cols = aw.valid_outputs(kx);
        let full_rows = cols.len() == ow;
        if !(full_rows && rows.len() == ah.output) {
            row.fill(0.0);
        }
        for oy in rows {
            let iy = oy * ah.stride + ky * ah.dilation - ah.pad_begin;
            let in_row = &channel[iy * iw..(iy + 1) * iw];
            let out_row = &mut row[oy * ow..(oy + 1) * ow];
            if aw.stride == 1 {
                let first = cols.start + kx * aw.dilation - aw.pad_begin;
                out_row[cols.clone()].copy_from_slice(&in_row[first..first + cols.len()]);
            } else {
                for ox in cols.clone() {
                    out_row[ox] = in_row[ox * aw.stride + kx * aw.dilation - aw.pad_begin];
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shapes and the exact sum the convolution kernels are tested against.
    use super::*;

    /// The shape of a convolution with the given geometry: per axis
    /// `[stride, pad_begin, pad_end, dilation]`.
    pub fn shape(
        n: usize,
        c: usize,
        m: usize,
        g: usize,
        [ih, iw]: [usize; 2],
        [kh, kw]: [usize; 2],
        geo: [[usize; 4]; 2],
    ) -> Conv2dShape {
        let axis = |input: usize, kernel: usize, [stride, pad_begin, pad_end, dilation]: [usize; 4]| {
            let extent = (kernel - 1) * dilation + 1;
            Axis {
                input,
                kernel,
                stride,
                dilation,
                pad_begin,
                pad_end,
                output: (input + pad_begin + pad_end - extent) / stride + 1,
            }
        };
        Conv2dShape { n, c, m, cg: c / g, g, h: axis(ih, kh, geo[0]), w: axis(iw, kw, geo[1]) }
    }

    /// The textbook sum in f64 for every output, and the sum of the
    /// magnitudes of its terms (the scale its rounding error is relative
    /// to).
    pub fn exact(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &Conv2dShape) -> (Vec<f64>, Vec<f64>) {
        let (ah, aw) = (s.h, s.w);
        let (mut y, mut scale) = (Vec::new(), Vec::new());
        for b in 0..s.n {
            for oc in 0..s.m {
                let gi = oc / (s.m / s.g);
                for oy in 0..ah.output {
                    for ox in 0..aw.output {
                        let bv = bias.map_or(0.0, |b| f64::from(b[oc]));
                        let (mut sum, mut mag) = (bv, bv.abs());
                        for icg in 0..s.cg {
                            for ky in 0..ah.kernel {
                                for kx in 0..aw.kernel {
                                    let iy = (oy * ah.stride + ky * ah.dilation) as isize - ah.pad_begin as isize;
                                    let ix = (ox * aw.stride + kx * aw.dilation) as isize - aw.pad_begin as isize;
                                    if iy < 0 || ix < 0 || iy >= ah.input as isize || ix >= aw.input as isize {
                                        continue;
                                    }
                                    let ic = gi * s.cg + icg;
                                    let xv = x[((b * s.c + ic) * ah.input + iy as usize) * aw.input + ix as usize];
                                    let wv = w[((oc * s.cg + icg) * ah.kernel + ky) * aw.kernel + kx];
                                    let term = f64::from(xv) * f64::from(wv);
                                    sum += term;
                                    mag += term.abs();
                                }
                            }
                        }
                        y.push(sum);
                        scale.push(mag);
                    }
                }
            }
        }
        (y, scale)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{exact, shape};
    use super::*;
    use crate::kernels::testing::{assert_close, random_floats};

    /// The exact sum, rounded to f32.
    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &Conv2dShape) -> Vec<f32> {
        exact(x, w, bias, s).0.into_iter().map(|v| v as f32).collect()
    }

    fn cases() -> Vec<Conv2dShape> {
        vec![
            shape(2, 1, 32, 1, [28, 28], [3, 3], [[1, 0, 0, 1]; 2]),
            shape(1, 3, 16, 1, [17, 15], [3, 3], [[1, 1, 1, 1]; 2]),
            shape(3, 8, 12, 1, [9, 10], [1, 1], [[1, 0, 0, 1]; 2]),
            shape(2, 8, 12, 2, [11, 9], [3, 2], [[2, 1, 0, 1], [1, 0, 1, 2]]),
            shape(1, 6, 6, 6, [8, 8], [3, 3], [[1, 1, 1, 1]; 2]),
            shape(2, 4, 8, 1, [1, 20], [1, 5], [[1, 0, 0, 1], [2, 2, 1, 1]]),
            shape(1, 5, 7, 1, [6, 6], [1, 1], [[2, 0, 0, 1]; 2]),
        ]
    }

    #[test]
    fn every_algorithm_matches_the_definition() {
        for (i, s) in cases().iter().enumerate() {
            let x = random_floats(s.n * s.c * s.in_plane(), 10 + i as u64);
            let w = random_floats(s.m * s.reduction(), 20 + i as u64);
            let b = random_floats(s.m, 30 + i as u64);
            let want = reference(&x, &w, Some(&b), s);
            for algorithm in [Algorithm::Direct, Algorithm::Gemm] {
                let got = conv2d_with(algorithm, &x, &w, Some(&b), s, Activation::Identity);
                assert_close(&got, &want);
                let no_bias = conv2d_with(algorithm, &x, &w, None, s, Activation::Identity);
                assert_close(&no_bias, &reference(&x, &w, None, s));
            }
        }
    }

    #[test]
    fn fused_activations_equal_the_activation_applied_afterwards() {
        let s = &cases()[1];
        let x = random_floats(s.n * s.c * s.in_plane(), 1);
        let w = random_floats(s.m * s.reduction(), 2);
        let plain = conv2d(&x, &w, None, s, Activation::Identity);
        for act in [Activation::Relu, Activation::LeakyRelu(0.2), Activation::Clip(-0.5, 0.25)] {
            let mut want = plain.clone();
            act.apply(&mut want);
            assert_eq!(conv2d(&x, &w, None, s, act), want, "{act:?}");
        }
    }

    #[test]
    fn batch_size_and_thread_count_change_no_bit() {
        for s in cases() {
            let x = random_floats(s.n * s.c * s.in_plane(), 5);
            let w = random_floats(s.m * s.reduction(), 6);
            let b = random_floats(s.m, 7);
            let on = |threads: usize, s: &Conv2dShape, x: &[f32]| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| conv2d(x, &w, Some(&b), s, Activation::Relu))
            };
            let whole = on(1, &s, &x);
            assert_eq!(on(2, &s, &x), whole, "{s:?}");
            let one = Conv2dShape { n: 1, ..s };
            let per_image = x.len() / s.n;
            let images: Vec<f32> = x.chunks(per_image).flat_map(|image| on(2, &one, image)).collect();
            assert_eq!(images, whole, "{s:?}");
        }
    }
}
