//! Pooling over NC(D)HW tensors: MaxPool and AveragePool (any spatial rank), and
//! GlobalMaxPool and GlobalAveragePool (any spatial rank).

use rayon::prelude::*;

use super::conv::{Axis, Window};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("MaxPool", 1, MAX_OPSET, build_max_pool);
    reg.register("AveragePool", 1, MAX_OPSET, build_average_pool);
    reg.register("LpPool", 2, MAX_OPSET, build_lp_pool);
    reg.register("GlobalMaxPool", 1, MAX_OPSET, |_| Ok(Box::new(GlobalPool { max: true })));
    reg.register("GlobalAveragePool", 1, MAX_OPSET, |_| Ok(Box::new(GlobalPool { max: false })));
}

/// The deepest spatial rank the N-D pooling kernels take.
const MAX_SPATIAL_RANK: usize = 8;

/// Reads the window of a pooling node: its rank comes from `kernel_shape`.
fn pool_window(node: &crate::graph::Node) -> Result<Window, BuildError> {
    let Some(rank) = node.ints_attr("kernel_shape")?.map(<[i64]>::len) else {
        return Err(BuildError::invalid(node, "attribute 'kernel_shape' is required"));
    };
    if !(1..=MAX_SPATIAL_RANK).contains(&rank) {
        return Err(BuildError::invalid(
            node,
            format!("kernel_shape must have 1 to {MAX_SPATIAL_RANK} dims, got {rank}"),
        ));
    }
    Window::parse(node, rank, true)
}

/// One spatial dim of a resolved N-D window: for each output position, the
/// input positions its taps read inside the input (in tap order), and how
/// many of its taps fall inside the padded input.
struct DimTaps {
    inside: Vec<Vec<usize>>,
    padded: Vec<usize>,
}

impl DimTaps {
    fn new(a: &Axis) -> DimTaps {
        let (lo, hi) = (-(a.pad_begin as i64), (a.input + a.pad_end) as i64);
        let mut inside = Vec::with_capacity(a.output);
        let mut padded = Vec::with_capacity(a.output);
        for o in 0..a.output {
            let positions = (0..a.kernel).map(|k| (o * a.stride + k * a.dilation) as i64 - a.pad_begin as i64);
            inside.push(positions.clone().filter(|&p| (0..a.input as i64).contains(&p)).map(|p| p as usize).collect());
            padded.push(positions.filter(|p| (lo..hi).contains(p)).count());
        }
        DimTaps { inside, padded }
    }
}

/// The resolved N-D geometry of a pooling node over one input.
struct NdGeometry {
    axes: Vec<Axis>,
    taps: Vec<DimTaps>,
    /// Row-major strides of the input's spatial dims.
    in_strides: Vec<usize>,
    in_plane: usize,
    out_plane: usize,
}

impl NdGeometry {
    fn new(window: &Window, x: &Tensor) -> Result<NdGeometry, KernelError> {
        let rank = window.rank;
        if x.shape().len() != rank + 2 {
            return Err(KernelError(format!(
                "X must have rank {} for {rank}-D pooling, got shape {:?}",
                rank + 2,
                x.shape()
            )));
        }
        let kernel = window.kernel.as_deref().unwrap_or_default();
        let axes = (0..rank).map(|d| window.axis(d, x.shape()[2 + d], kernel[d])).collect::<Result<Vec<_>, _>>()?;
        let in_strides = crate::tensor::strides(&axes.iter().map(|a| a.input).collect::<Vec<_>>());
        Ok(NdGeometry {
            taps: axes.iter().map(DimTaps::new).collect(),
            in_strides,
            in_plane: axes.iter().map(|a| a.input).product(),
            out_plane: axes.iter().map(|a| a.output).product(),
            axes,
        })
    }

    fn output_shape(&self, x: &Tensor) -> Vec<usize> {
        let mut shape = x.shape()[..2].to_vec();
        shape.extend(self.axes.iter().map(|a| a.output));
        shape
    }

    /// Calls `f(output offset, taps)` for every output position of one
    /// (batch, channel) plane, in row-major order; `taps` visits the input
    /// offsets of its window inside the input, in row-major tap order.
    fn for_each_output(&self, mut f: impl FnMut(usize, &mut dyn FnMut(&mut dyn FnMut(usize)), usize)) {
        let rank = self.axes.len();
        let mut out = [0usize; MAX_SPATIAL_RANK];
        for o in 0..self.out_plane {
            let lists: Vec<&[usize]> = (0..rank).map(|d| self.taps[d].inside[out[d]].as_slice()).collect();
            let padded: usize = (0..rank).map(|d| self.taps[d].padded[out[d]]).product();
            let mut visit = |g: &mut dyn FnMut(usize)| {
                if lists.iter().any(|l| l.is_empty()) {
                    return;
                }
                let mut idx = [0usize; MAX_SPATIAL_RANK];
                loop {
                    g((0..rank).map(|d| lists[d][idx[d]] * self.in_strides[d]).sum());
                    let mut d = rank;
                    loop {
                        if d == 0 {
                            return;
                        }
                        d -= 1;
                        idx[d] += 1;
                        if idx[d] < lists[d].len() {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
            };
            f(o, &mut visit, padded);
            for d in (0..rank).rev() {
                out[d] += 1;
                if out[d] < self.axes[d].output {
                    break;
                }
                out[d] = 0;
            }
        }
    }
}

/// AveragePool over any spatial rank: the mean of the taps inside the
/// input, or, with `count_include_pad`, divided by the taps inside the
/// padded input.
#[derive(Debug)]
struct AveragePool {
    window: Window,
    count_include_pad: bool,
}

fn build_average_pool(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    if ctx.opset < 19 && node.ints_attr("dilations")?.is_some_and(|d| d.iter().any(|&x| x != 1)) {
        return Err(BuildError::invalid(node, "dilations need opset 19 or later"));
    }
    Ok(Box::new(AveragePool {
        window: pool_window(node)?,
        count_include_pad: node.int_attr("count_include_pad", 0)? != 0,
    }))
}

/// A taps visitor: calls its argument with each input offset a window reads.
type Taps<'a> = &'a mut dyn FnMut(&mut dyn FnMut(usize));

/// Runs a float pooling over any spatial rank: `reduce(input plane, taps,
/// padded tap count)` gives each output value, one (batch, channel) plane
/// per parallel task, in f64.
fn pool_nd(
    window: &Window,
    x: &Tensor,
    reduce: impl Fn(&[f64], Taps<'_>, usize) -> f64 + Sync,
) -> Result<Tensor, KernelError> {
    let g = NdGeometry::new(window, x)?;
    let xd = super::float_values(x, "X")?;
    let (in_plane, out_plane) = (g.in_plane, g.out_plane);
    let mut y = vec![0.0f64; x.shape()[0] * x.shape()[1] * out_plane];
    if out_plane > 0 {
        y.par_chunks_mut(out_plane).enumerate().for_each(|(lane, out)| {
            let input = &xd[lane * in_plane..(lane + 1) * in_plane];
            g.for_each_output(|o, taps, padded| out[o] = reduce(input, taps, padded));
        });
    }
    super::float_tensor_like(x, g.output_shape(x), y)
}

impl Kernel for AveragePool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let y = pool_nd(&self.window, x, |input, taps, padded| {
            let (mut sum, mut count) = (0.0f64, 0usize);
            taps(&mut |i| {
                sum += input[i];
                count += 1;
            });
            let count = if self.count_include_pad { padded } else { count };
            if count == 0 { 0.0 } else { sum / count as f64 }
        })?;
        Ok(vec![y])
    }
}

/// LpPool over any spatial rank: `(sum |x|^p)^(1/p)` over the taps inside
/// the input (padding adds zeros).
#[derive(Debug)]
struct LpPool {
    window: Window,
    p: f64,
}

fn build_lp_pool(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let p = ctx.node.int_attr("p", 2)?;
    if p < 1 {
        return Err(BuildError::invalid(ctx.node, format!("p must be at least 1, got {p}")));
    }
    Ok(Box::new(LpPool { window: pool_window(ctx.node)?, p: p as f64 }))
}

impl Kernel for LpPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let y = pool_nd(&self.window, x, |input, taps, _| {
            let mut sum = 0.0f64;
            taps(&mut |i| sum += input[i].abs().powf(self.p));
            sum.powf(1.0 / self.p)
        })?;
        Ok(vec![y])
    }
}

/// GlobalMaxPool and GlobalAveragePool: one value per (batch, channel)
/// over all spatial dims, which stay as dims of 1.
#[derive(Debug)]
struct GlobalPool {
    max: bool,
}

impl Kernel for GlobalPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        if x.shape().len() < 2 {
            return Err(KernelError(format!("X must have rank 2 or more, got shape {:?}", x.shape())));
        }
        let spatial: usize = x.shape()[2..].iter().product();
        let lanes = x.shape()[0] * x.shape()[1];
        let pool = |lane: &[f64]| -> f64 {
            if self.max {
                lane.iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, |a, v| if v.is_nan() || a.is_nan() { f64::NAN } else { a.max(v) })
            } else {
                lane.iter().sum::<f64>() / lane.len() as f64
            }
        };
        let data = match x.data() {
            TensorData::Float(v) => {
                let wide: Vec<f64> = v.iter().map(|&a| f64::from(a)).collect();
                TensorData::Float((0..lanes).map(|l| pool(&wide[l * spatial..(l + 1) * spatial]) as f32).collect())
            }
            TensorData::Double(v) => {
                TensorData::Double((0..lanes).map(|l| pool(&v[l * spatial..(l + 1) * spatial])).collect())
            }
            other => return Err(KernelError(format!("X must be DT_FLOAT or DT_DOUBLE but is {}", other.dtype()))),
        };
        let shape = x.shape().iter().enumerate().map(|(d, &n)| if d < 2 { n } else { 1 }).collect();
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// Checks X's rank against a pooling window and resolves the window's
/// geometry on it.
fn geometry(window: &Window, x: &Tensor) -> Result<[Axis; 2], KernelError> {
    let rank = window.rank;
    if x.shape().len() != rank + 2 {
        return Err(KernelError(format!(
            "X must have rank {} for {rank}-D pooling, got shape {:?}",
            rank + 2,
            x.shape()
        )));
    }
    window.resolve(&x.shape()[2..], window.kernel.as_deref().unwrap_or_default())
}

/// MaxPool: the 2-D (and 1-D) float kernel without Indices runs tap by tap
/// over whole rows; every other case (any spatial rank, double and 8-bit
/// integers, the Indices output, column-major indices) runs the N-D kernel.
#[derive(Debug)]
struct MaxPool {
    window: Window,
    /// `storage_order` 1: Indices count the spatial dims column-major.
    column_major: bool,
    /// The node uses the Indices output.
    with_indices: bool,
}

fn build_max_pool(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    if node.outputs.len() > 2 {
        return Err(BuildError::invalid(node, format!("MaxPool has at most 2 outputs, got {}", node.outputs.len())));
    }
    let column_major = match node.int_attr("storage_order", 0)? {
        0 => false,
        1 => true,
        other => return Err(BuildError::invalid(node, format!("storage_order must be 0 or 1, got {other}"))),
    };
    Ok(Box::new(MaxPool { window: pool_window(node)?, column_major, with_indices: node.outputs.len() == 2 }))
}

/// Elements MaxPool compares: NaN wins, as in onnxruntime.
trait PoolMax: Copy + Send + Sync + PartialOrd {
    const LOWEST: Self;
    fn is_nan(self) -> bool;
}

impl PoolMax for f32 {
    const LOWEST: f32 = f32::NEG_INFINITY;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl PoolMax for f64 {
    const LOWEST: f64 = f64::NEG_INFINITY;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

impl PoolMax for u8 {
    const LOWEST: u8 = u8::MIN;
    fn is_nan(self) -> bool {
        false
    }
}

impl PoolMax for i8 {
    const LOWEST: i8 = i8::MIN;
    fn is_nan(self) -> bool {
        false
    }
}

impl MaxPool {
    /// The N-D kernel: values and, per output, the flat index of the first
    /// maximum in the whole input tensor (row-major, or column-major over
    /// the spatial dims with `storage_order` 1).
    fn run_nd<T: PoolMax>(&self, g: &NdGeometry, x: &[T], lanes: usize) -> (Vec<T>, Vec<i64>) {
        let (in_plane, out_plane) = (g.in_plane, g.out_plane);
        let mut y = vec![T::LOWEST; lanes * out_plane];
        let mut indices = vec![0i64; lanes * out_plane];
        // Column-major strides of the spatial dims, for storage_order 1.
        let rank = g.axes.len();
        let mut col_strides = vec![1usize; rank];
        for d in 1..rank {
            col_strides[d] = col_strides[d - 1] * g.axes[d - 1].input;
        }
        if out_plane > 0 {
            y.par_chunks_mut(out_plane).zip(indices.par_chunks_mut(out_plane)).enumerate().for_each(
                |(lane, (out, idx))| {
                    let input = &x[lane * in_plane..(lane + 1) * in_plane];
                    g.for_each_output(|o, taps, _| {
                        let (mut best, mut at, mut seen) = (T::LOWEST, 0usize, false);
                        taps(&mut |i| {
                            let v = input[i];
                            if !seen || (v > best && !best.is_nan()) || (v.is_nan() && !best.is_nan()) {
                                (best, at, seen) = (v, i, true);
                            }
                        });
                        out[o] = best;
                        let spatial = if self.column_major {
                            (0..rank).map(|d| (at / g.in_strides[d]) % g.axes[d].input * col_strides[d]).sum()
                        } else {
                            at
                        };
                        idx[o] = (lane * in_plane + spatial) as i64;
                    });
                },
            );
        }
        (y, indices)
    }

    /// The row-at-a-time float kernel for 1-D and 2-D windows.
    fn run_2d(&self, x: &Tensor) -> Result<Tensor, KernelError> {
        let [ah, aw] = geometry(&self.window, x)?;
        let xd = floats(x, "X")?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let (ih, iw, oh, ow) = (ah.input, aw.input, ah.output, aw.output);
        let plane = oh * ow;
        let mut y = vec![f32::NEG_INFINITY; n * c * plane];
        if plane == 0 {
            return Ok(Tensor::from_f32(self.window.output_shape(n, c, [ah, aw]), y)?);
        }
        // Windows that tile the input (2x2 stride 2, no padding) read each
        // input row once, left to right.
        let tiled =
            |a: &Axis| a.stride == a.kernel && a.dilation == 1 && a.pad_begin == 0 && a.output * a.stride <= a.input;
        let each = |(idx, out): (usize, &mut [f32])| {
            let input = &xd[idx * ih * iw..(idx + 1) * ih * iw];
            if tiled(&ah) && tiled(&aw) {
                pool_tiled(input, iw, [ah.kernel, aw.kernel], ow, out);
            } else {
                pool_general(input, iw, [&ah, &aw], ow, out);
            }
        };
        // Planes in parallel only when there is enough work to share.
        if y.len() * ah.kernel * aw.kernel >= 1 << 16 {
            y.par_chunks_mut(plane).enumerate().for_each(each);
        } else {
            y.chunks_mut(plane).enumerate().for_each(each);
        }
        Ok(Tensor::from_f32(self.window.output_shape(n, c, [ah, aw]), y)?)
    }
}

/// The larger of two pooled values; NaN wins, as in onnxruntime.
#[inline(always)]
pub(crate) fn max_nan(best: f32, v: f32) -> f32 {
    if v > best || v.is_nan() { v } else { best }
}

/// One plane of a float MaxPool whose windows tile the input: each output
/// row folds `kernel[0]` input rows, each output the `kernel[1]` elements
/// of its window, taps in row-major order. `out` starts at -inf, except for
/// 2x2 windows, which overwrite it.
pub(crate) fn pool_tiled(input: &[f32], iw: usize, kernel: [usize; 2], ow: usize, out: &mut [f32]) {
    let [kh, kw] = kernel;
    if kernel == [2, 2] {
        max2x2_plane(input, iw, ow, out);
        return;
    }
    for (oy, out_row) in out.chunks_mut(ow).enumerate() {
        for ky in 0..kh {
            let in_row = &input[(oy * kh + ky) * iw..(oy * kh + ky) * iw + ow * kw];
            if kw == 2 {
                for (o, pair) in out_row.iter_mut().zip(in_row.chunks_exact(2)) {
                    *o = max_nan(max_nan(*o, pair[0]), pair[1]);
                }
            } else {
                for (o, window) in out_row.iter_mut().zip(in_row.chunks_exact(kw)) {
                    *o = window.iter().fold(*o, |b, &v| max_nan(b, v));
                }
            }
        }
    }
}

/// Pools each of `planes` planes [ih, iw] of `x` by windows of `kernel`
/// that tile it (strides equal to the kernel, no padding, the last partial
/// windows dropped), as MaxPool does: returns [planes, ih / kh, iw / kw].
pub(crate) fn max_pool_planes(x: &[f32], planes: usize, [ih, iw]: [usize; 2], kernel: [usize; 2]) -> Vec<f32> {
    let (oh, ow) = (ih / kernel[0], iw / kernel[1]);
    let mut y = vec![f32::NEG_INFINITY; planes * oh * ow];
    if oh * ow == 0 {
        return y;
    }
    let each = |(p, out): (usize, &mut [f32])| pool_tiled(&x[p * ih * iw..(p + 1) * ih * iw], iw, kernel, ow, out);
    if x.len() >= 1 << 16 {
        y.par_chunks_mut(oh * ow).enumerate().for_each(each);
    } else {
        y.chunks_mut(oh * ow).enumerate().for_each(each);
    }
    y
}

/// The output rows `out` [.., ow] of a 2x2, stride-2 max pool of the plane
/// `input` of width `iw` (see [`max2x2_row`]).
fn max2x2_plane(input: &[f32], iw: usize, ow: usize, out: &mut [f32]) {
    let rows = out.len() / ow.max(1);
    assert!(
        ow == 0 || (2 * rows <= input.len() / iw && 2 * ow <= iw),
        "a 2x2 pool reads 2 input rows of 2 x {ow} per row"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        /// # Safety
        /// The CPU must have AVX-512F.
        #[target_feature(enable = "avx512f")]
        unsafe fn each_row(input: &[f32], iw: usize, ow: usize, out: &mut [f32]) {
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                let row = |ky: usize| &input[(2 * oy + ky) * iw..(2 * oy + ky) * iw + 2 * ow];
                // SAFETY: the CPU has AVX-512F; each row holds 2 · ow.
                unsafe { max2x2_avx512(row(0), row(1), out_row) };
            }
        }
        // SAFETY: the CPU has AVX-512F.
        unsafe { each_row(input, iw, ow, out) };
        return;
    }
    for (oy, out_row) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        let row = |ky: usize| &input[(2 * oy + ky) * iw..(2 * oy + ky) * iw + 2 * ow];
        max2x2_row(row(0), row(1), out_row);
    }
}

/// One output row of a 2x2, stride-2 max pool: `out[i]` folds `r0[2i]`,
/// `r0[2i + 1]`, `r1[2i]`, `r1[2i + 1]` in that order with [`max_nan`]
/// (the same bits as MaxPool's row-major taps from -inf).
pub(crate) fn max2x2_row(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    let ow = out.len();
    assert!(r0.len() >= 2 * ow && r1.len() >= 2 * ow, "a 2x2 pool row reads two input rows of 2 x {ow}");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; lengths are checked above.
        done = unsafe { max2x2_avx512(r0, r1, out) };
    }
    for i in done..ow {
        out[i] = max_nan(max_nan(max_nan(r0[2 * i], r0[2 * i + 1]), r1[2 * i]), r1[2 * i + 1]);
    }
}

/// AVX-512 steps the 2x2 max pools share, here and in the convolutions
/// that pool their own output.
#[cfg(target_arch = "x86_64")]
pub(crate) mod lanes {
    use std::arch::x86_64::*;

    /// The even and the odd elements of the 32 floats in `lo` then `hi`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn even_odd(lo: __m512, hi: __m512) -> (__m512, __m512) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        (_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi))
    }

    /// [`max_nan`](super::max_nan) on each lane: `v` replaces `best` when
    /// greater, or when it is NaN.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn fold_max(best: __m512, v: __m512) -> __m512 {
        let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_ps(take, best, v)
    }

    /// The 2x2 windows of two rows of 32 floats each (`top` and `bottom`
    /// as two vectors), folded in MaxPool's order: 16 pooled values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn pool2x2(top: [__m512; 2], bottom: [__m512; 2]) -> __m512 {
        let (a0, a1) = even_odd(top[0], top[1]);
        let (b0, b1) = even_odd(bottom[0], bottom[1]);
        fold_max(fold_max(fold_max(a0, a1), b0), b1)
    }
}

/// [`max2x2_row`] by vectors of 16 outputs, the last one masked; returns
/// how many it wrote (all of them).
///
/// # Safety
/// The CPU must have AVX-512F, and `r0`, `r1` must hold `2 · out.len()`
/// elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn max2x2_avx512(r0: &[f32], r1: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let ow = out.len();
    // SAFETY: every load reads (or, masked, touches only) the 2 x 16
    // elements behind 16 outputs of `out`, inside the rows (the caller's
    // contract); every store writes only elements of `out`.
    unsafe {
        for i in (0..ow).step_by(16) {
            // Lanes of this vector of outputs, and of its two input halves.
            let n = (ow - i).min(16);
            let mask = |lanes: usize| -> __mmask16 { if lanes >= 16 { 0xffff } else { (1u16 << lanes) - 1 } };
            let (lo, hi) = (mask(2 * n), mask((2 * n).saturating_sub(16)));
            let load = |row: &[f32], at: usize, m: __mmask16| _mm512_maskz_loadu_ps(m, row.as_ptr().add(at));
            let top = [load(r0, 2 * i, lo), load(r0, 2 * i + 16, hi)];
            let bottom = [load(r1, 2 * i, lo), load(r1, 2 * i + 16, hi)];
            let best = lanes::pool2x2(top, bottom);
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask(n), best);
        }
    }
    ow
}

/// One plane of a float MaxPool with any 1-D or 2-D window: each tap over
/// the outputs it lands inside the input for.
fn pool_general(input: &[f32], iw: usize, [ah, aw]: [&Axis; 2], ow: usize, out: &mut [f32]) {
    for ky in 0..ah.kernel {
        let rows = ah.valid_outputs(ky);
        for kx in 0..aw.kernel {
            let cols = aw.valid_outputs(kx);
            for oy in rows.clone() {
                let iy = oy * ah.stride + ky * ah.dilation - ah.pad_begin;
                let in_row = &input[iy * iw..(iy + 1) * iw];
                let out_row = &mut out[oy * ow..(oy + 1) * ow];
                for ox in cols.clone() {
                    out_row[ox] = max_nan(out_row[ox], in_row[ox * aw.stride + kx * aw.dilation - aw.pad_begin]);
                }
            }
        }
    }
}

impl Kernel for MaxPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        if self.window.rank <= 2 && !self.with_indices && matches!(x.data(), TensorData::Float(_)) {
            return Ok(vec![self.run_2d(x)?]);
        }
        let g = NdGeometry::new(&self.window, x)?;
        let lanes = x.shape()[0] * x.shape()[1];
        let (y, indices) = match x.data() {
            TensorData::Float(v) => {
                let (y, i) = self.run_nd(&g, v, lanes);
                (TensorData::Float(y), i)
            }
            TensorData::Double(v) => {
                let (y, i) = self.run_nd(&g, v, lanes);
                (TensorData::Double(y), i)
            }
            TensorData::UInt8(v) => {
                let (y, i) = self.run_nd(&g, v, lanes);
                (TensorData::UInt8(y), i)
            }
            TensorData::Int8(v) => {
                let (y, i) = self.run_nd(&g, v, lanes);
                (TensorData::Int8(y), i)
            }
            other => {
                return Err(KernelError(format!(
                    "X must be DT_FLOAT, DT_DOUBLE, DT_UINT8 or DT_INT8 but is {}",
                    other.dtype()
                )));
            }
        };
        let shape = g.output_shape(x);
        Ok(vec![Tensor::new(shape.clone(), y)?, Tensor::new(shape, TensorData::Int64(indices))?])
    }
}

#[cfg(test)]
mod tests {
    use super::{max_nan, max2x2_row};
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, random_floats, run};

    #[test]
    fn vectorized_2x2_rows_fold_as_the_scalar_taps_at_every_width() {
        for ow in 0..41 {
            let mut r0 = random_floats(2 * ow, ow as u64);
            let mut r1 = random_floats(2 * ow, 100 + ow as u64);
            // NaN anywhere in a window wins; -0.0 against 0.0 keeps the
            // first seen.
            if ow > 3 {
                r0[5] = f32::NAN;
                r1[2 * ow - 1] = f32::NAN;
                (r0[0], r0[1], r1[0], r1[1]) = (-0.0, 0.0, -1.0, -2.0);
            }
            let mut got = vec![7.0; ow];
            max2x2_row(&r0, &r1, &mut got);
            let want: Vec<f32> = (0..ow)
                .map(|i| {
                    [r0[2 * i], r0[2 * i + 1], r1[2 * i], r1[2 * i + 1]].into_iter().fold(f32::NEG_INFINITY, max_nan)
                })
                .collect();
            let bits =
                |v: &[f32]| v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "width {ow}");
        }
    }
    use crate::tensor::Tensor;

    #[allow(clippy::too_many_arguments)]
    fn naive_max_pool(
        x: &[f32],
        h: usize,
        w: usize,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 4],
        oh: usize,
        ow: usize,
    ) -> Vec<f32> {
        let mut y = vec![f32::NEG_INFINITY; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..k[0] {
                    for kx in 0..k[1] {
                        let iy = (oy * s[0] + ky) as isize - p[0] as isize;
                        let ix = (ox * s[1] + kx) as isize - p[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            y[oy * ow + ox] = y[oy * ow + ox].max(x[iy as usize * w + ix as usize]);
                        }
                    }
                }
            }
        }
        y
    }

    fn ints(v: &[usize]) -> Attribute {
        Attribute::Ints(v.iter().map(|&x| x as i64).collect())
    }

    #[test]
    fn max_pool_2x2_and_padded_3x3_match_naive() {
        let x = random_floats(2 * 3 * 26 * 26, 1);
        let t = Tensor::from_f32(vec![2, 3, 26, 26], x.clone()).unwrap();
        let out =
            run(&node("MaxPool", 1, vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]), 12, &[&t])
                .unwrap();
        assert_eq!(out[0].shape(), &[2, 3, 13, 13]);
        let got = out[0].as_f32().unwrap();
        for plane in 0..6 {
            let exp = naive_max_pool(&x[plane * 676..(plane + 1) * 676], 26, 26, [2, 2], [2, 2], [0; 4], 13, 13);
            assert_eq!(&got[plane * 169..(plane + 1) * 169], exp.as_slice());
        }
        let out = run(
            &node(
                "MaxPool",
                1,
                vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            ),
            12,
            &[&t],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[2, 3, 13, 13]);
        let exp = naive_max_pool(&x[..676], 26, 26, [3, 3], [2, 2], [1, 1, 1, 1], 13, 13);
        assert_eq!(&out[0].as_f32().unwrap()[..169], exp.as_slice());
    }

    #[test]
    fn ceil_mode_adds_a_partial_window() {
        let x: Vec<f32> = (0..25).map(|v| v as f32).collect();
        let t = Tensor::from_f32(vec![1, 1, 5, 5], x).unwrap();
        let attrs = vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2])), ("ceil_mode", Attribute::Int(1))];
        let out = run(&node("MaxPool", 1, attrs), 12, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 3, 3]);
        assert_eq!(out[0].as_f32().unwrap(), &[6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]);
    }

    #[test]
    fn the_n_d_kernel_agrees_with_the_2d_one_and_finds_the_first_maximum() {
        let x = random_floats(2 * 3 * 11 * 9, 7);
        let t = Tensor::from_f32(vec![2, 3, 11, 9], x).unwrap();
        let attrs = || {
            vec![
                ("kernel_shape", ints(&[3, 2])),
                ("strides", ints(&[2, 1])),
                ("dilations", ints(&[2, 1])),
                ("pads", ints(&[1, 0, 2, 1])),
                ("ceil_mode", Attribute::Int(1)),
            ]
        };
        let fast = run(&node("MaxPool", 1, attrs()), 12, &[&t]).unwrap();
        let mut with_indices = node("MaxPool", 1, attrs());
        with_indices.outputs.push(2);
        let nd = run(&with_indices, 12, &[&t]).unwrap();
        assert_eq!(fast[0], nd[0]);
        // Every index points at its maximum in the flattened input.
        let (values, x) = (nd[0].as_f32().unwrap(), t.as_f32().unwrap());
        for (v, &i) in values.iter().zip(nd[1].as_i64().unwrap()) {
            assert_eq!(*v, x[i as usize]);
        }
        // Ties go to the first tap; column-major indices transpose H and W.
        let t = Tensor::from_f32(vec![1, 1, 2, 3], vec![1.0, 5.0, 5.0, 0.0, 5.0, 2.0]).unwrap();
        let mut n = node("MaxPool", 1, vec![("kernel_shape", ints(&[2, 3]))]);
        n.outputs.push(2);
        assert_eq!(run(&n, 12, &[&t]).unwrap()[1].as_i64().unwrap(), &[1]);
        n.attributes.insert("storage_order".into(), Attribute::Int(1));
        assert_eq!(run(&n, 12, &[&t]).unwrap()[1].as_i64().unwrap(), &[2]);
    }

    #[test]
    fn kernel_shape_is_required() {
        let t = Tensor::from_f32(vec![1, 1, 2, 2], vec![0.0; 4]).unwrap();
        let err = run(&node("MaxPool", 1, vec![]), 12, &[&t]).unwrap_err();
        assert!(err.0.contains("kernel_shape"), "{err}");
    }
}
