//! TensorFlow's channels-last operators, run in their own layout: Conv2D and
//! Conv3D, DepthwiseConv2dNative, Conv2DBackpropInput, MaxPool and AvgPool
//! (2-D and 3-D), BiasAdd and FusedBatchNorm on NHWC (NDHWC) tensors with
//! HWIO filters, as a SavedModel's graph has them. Nothing
//! is transposed: a convolution is a matrix product of the input's patches
//! (each a contiguous run of `kh·kw·c` values) with the filter as stored.
//!
//! The SavedModel importer maps TensorFlow's ops onto these under `tf.`
//! names; attributes keep TensorFlow's names (`strides`, `ksize` and
//! `dilations` as four-element NHWC lists, `padding` VALID, SAME or
//! EXPLICIT with `explicit_paddings`).

use rayon::prelude::*;

use super::conv::{AutoPad, Axis, Window};
use super::conv2d::{Conv2dShape, conv2d_fused, pooled_size};
use super::epilogue::Activation;
use super::winograd::WinogradFilters;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, matmul_f32, required};
use crate::graph::Node;
use crate::tensor::Tensor;

pub fn register(reg: &mut KernelRegistry) {
    reg.register("tf.Conv2D", 1, MAX_OPSET, |ctx| build_conv(ctx, 2));
    // Conv2D with its bias, activation and a tiling max pool fused in, made
    // by the load-time passes (inputs: input, filter, bias).
    reg.register("tf.FusedConv2D", 1, MAX_OPSET, |ctx| build_conv(ctx, 2));
    reg.register("tf.Conv3D", 1, MAX_OPSET, |ctx| build_conv(ctx, 3));
    reg.register("tf.DepthwiseConv2dNative", 1, MAX_OPSET, |ctx| {
        Ok(Box::new(Depthwise { window: tf_window(ctx.node, 2, None)? }))
    });
    reg.register("tf.MaxPool", 1, MAX_OPSET, |ctx| build_pool(ctx, PoolKind::Max, 2));
    reg.register("tf.AvgPool", 1, MAX_OPSET, |ctx| build_pool(ctx, PoolKind::Avg, 2));
    reg.register("tf.MaxPool3D", 1, MAX_OPSET, |ctx| build_pool(ctx, PoolKind::Max, 3));
    reg.register("tf.AvgPool3D", 1, MAX_OPSET, |ctx| build_pool(ctx, PoolKind::Avg, 3));
    reg.register("tf.BiasAdd", 1, MAX_OPSET, |ctx| Ok(Box::new(BiasAdd { channels_last: channels_last(ctx.node)? })));
    reg.register("tf.FusedBatchNorm", 1, MAX_OPSET, build_batch_norm);
    reg.register("tf.Conv2DBackpropInput", 1, MAX_OPSET, |ctx| {
        Ok(Box::new(ConvBackpropInput { window: tf_window(ctx.node, 2, None)? }))
    });
}

/// True for NHWC (the default), false for NCHW; other formats are refused.
fn channels_last(node: &Node) -> Result<bool, BuildError> {
    match node.string_attr("data_format")?.unwrap_or("NHWC") {
        "NHWC" | "NWC" | "NDHWC" => Ok(true),
        "NCHW" | "NCW" | "NCDHW" => Ok(false),
        other => Err(BuildError::invalid(node, format!("data_format '{other}' is not NHWC or NCHW"))),
    }
}

/// A channels-last list attribute (`[1, h, w, 1]`, or `[1, d, h, w, 1]` in
/// 3-D) as its spatial entries; the batch and channel entries must be 1.
fn spatial_list(node: &Node, name: &str, rank: usize) -> Result<Option<Vec<usize>>, BuildError> {
    match node.ints_attr(name)? {
        None => Ok(None),
        Some(v) if v.len() == rank + 2 && v[0] == 1 && v[rank + 1] == 1 && v.iter().all(|&x| x >= 1) => {
            Ok(Some(v[1..=rank].iter().map(|&x| x as usize).collect()))
        }
        Some(v) => Err(BuildError::invalid(
            node,
            format!("attribute '{name}' must be [1, {rank} positive sizes, 1], got {v:?}"),
        )),
    }
}

/// The window of a channels-last node with `rank` spatial dims: strides,
/// dilations and padding from TensorFlow's attributes; `kernel` for pooling
/// (a convolution's comes from its filter).
fn tf_window(node: &Node, rank: usize, kernel_attr: Option<&str>) -> Result<Window, BuildError> {
    if !channels_last(node)? {
        return Err(BuildError::invalid(
            node,
            "data_format NCHW is not supported for this operator; TensorFlow's CPU kernels and Keras use NHWC",
        ));
    }
    let kernel = match kernel_attr {
        Some(name) => Some(
            spatial_list(node, name, rank)?
                .ok_or_else(|| BuildError::invalid(node, format!("attribute '{name}' is required")))?,
        ),
        None => None,
    };
    let strides = spatial_list(node, "strides", rank)?
        .ok_or_else(|| BuildError::invalid(node, "attribute 'strides' is required"))?;
    let dilations = spatial_list(node, "dilations", rank)?.unwrap_or_else(|| vec![1; rank]);
    let (auto_pad, pads) = match node.string_attr("padding")? {
        Some("VALID") => (AutoPad::Valid, vec![0; 2 * rank]),
        // TensorFlow's SAME puts the odd pixel at the end, as ONNX's SAME_UPPER.
        Some("SAME") => (AutoPad::SameUpper, vec![0; 2 * rank]),
        Some("EXPLICIT") => {
            // [before, after] per dim, batch and channels 0; as begins then ends.
            let p = node.ints_attr("explicit_paddings")?.unwrap_or(&[]);
            let spatial = p.get(2..2 + 2 * rank).filter(|_| p.len() == 2 * rank + 4);
            match spatial {
                Some(sp) if sp.iter().all(|&x| x >= 0) && p[..2] == [0, 0] && p[2 + 2 * rank..] == [0, 0] => {
                    let pads: Vec<usize> =
                        sp.iter().step_by(2).chain(sp.iter().skip(1).step_by(2)).map(|&x| x as usize).collect();
                    (AutoPad::NotSet, pads)
                }
                _ => {
                    return Err(BuildError::invalid(
                        node,
                        format!(
                            "padding EXPLICIT needs explicit_paddings [0, 0, (before, after) per spatial dim, 0, 0], got {p:?}"
                        ),
                    ));
                }
            }
        }
        other => {
            return Err(BuildError::invalid(node, format!("padding must be VALID, SAME or EXPLICIT, got {other:?}")));
        }
    };
    Ok(Window { rank, kernel, strides, dilations, pads, auto_pad, ceil_mode: false })
}

/// A channels-last input's batch, spatial dims and channels.
fn channels_last_dims(t: &Tensor, rank: usize, what: &str) -> Result<(usize, Vec<usize>, usize), KernelError> {
    let s = t.shape();
    if s.len() != rank + 2 {
        return Err(KernelError(format!("{what} must have rank {} (channels last), got shape {s:?}", rank + 2)));
    }
    Ok((s[0], s[1..=rank].to_vec(), s[rank + 1]))
}

/// Row-major coordinates of `index` in `dims`, into `out`.
fn unravel(mut index: usize, dims: &[usize], out: &mut [usize]) {
    for (o, &d) in out.iter_mut().zip(dims).rev() {
        *o = index % d.max(1);
        index /= d.max(1);
    }
}

/// An NHWC input's dims.
fn nhwc(t: &Tensor, what: &str) -> Result<[usize; 4], KernelError> {
    let (n, spatial, c) = channels_last_dims(t, 2, what)?;
    Ok([n, spatial[0], spatial[1], c])
}

/// The input row a window tap reads, or `None` in the padding.
fn source(axis: &Axis, out: usize, tap: usize) -> Option<usize> {
    (out * axis.stride + tap * axis.dilation).checked_sub(axis.pad_begin).filter(|&i| i < axis.input)
}

/// Output pixels per patch matrix: bounds the scratch memory of one block.
const PATCH_FLOATS: usize = 1 << 20;

/// Conv2D and Conv3D: channels-last input, filter [k..., in/groups, out].
#[derive(Debug)]
struct Conv {
    window: Window,
    /// A constant 2-D filter, prepared for the channels-first kernels.
    prepared: Option<Prepared>,
    /// tf.FusedConv2D's activation (Identity otherwise).
    activation: Activation,
    /// tf.FusedConv2D's max-pool window, which tiles the output.
    pool: Option<[usize; 2]>,
}

/// A constant filter [kh, kw, ci, co] as the channels-first kernels take
/// it: OIHW, and Winograd's transform where the layer suits it.
#[derive(Debug)]
struct Prepared {
    oihw: Vec<f32>,
    kernel: [usize; 2],
    ci: usize,
    co: usize,
    winograd: Option<WinogradFilters>,
}

fn build_conv(ctx: &BuildContext<'_>, rank: usize) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let window = tf_window(node, rank, None)?;
    let fused = node.op == "tf.FusedConv2D";
    let activation = if fused { Activation::from_node(node)? } else { Activation::Identity };
    let pool = match node.ints_attr("pool_shape")? {
        _ if !fused => None,
        None => None,
        Some(&[h, w]) if h >= 1 && w >= 1 => Some([h as usize, w as usize]),
        Some(other) => {
            return Err(BuildError::invalid(node, format!("pool_shape must be 2 positive integers, got {other:?}")));
        }
    };
    let prepared = match ctx.constant_input(1) {
        Some(f) if rank == 2 && f.shape().len() == 4 => f.as_f32().map(|data| {
            let [kh, kw, ci, co] = [f.shape()[0], f.shape()[1], f.shape()[2], f.shape()[3]];
            let mut oihw = vec![0.0f32; data.len()];
            for (at, &v) in data.iter().enumerate() {
                let (o, i, x, y) = (at % co, (at / co) % ci, (at / (co * ci)) % kw, at / (co * ci * kw));
                oihw[((o * ci + i) * kh + y) * kw + x] = v;
            }
            let pair = |v: &[usize]| [v[0], v[1]];
            let winograd = super::winograd::suits(co, ci, [kh, kw], pair(&window.strides), pair(&window.dilations), 1)
                .then(|| WinogradFilters::new(&oihw, co, ci));
            Prepared { oihw, kernel: [kh, kw], ci, co, winograd }
        }),
        _ => None,
    };
    Ok(Box::new(Conv { window, prepared, activation, pool }))
}

impl Conv {
    /// The channels-first path for a prepared filter and an ungrouped
    /// layer: the input to NCHW, the convolution (with bias, activation
    /// and pool), the result back to NHWC.
    fn run_prepared(
        &self,
        p: &Prepared,
        x: &[f32],
        (n, [h, w], c): (usize, [usize; 2], usize),
        bias: Option<&[f32]>,
    ) -> Result<Tensor, KernelError> {
        let [ah, aw] = [self.window.axis(0, h, p.kernel[0])?, self.window.axis(1, w, p.kernel[1])?];
        let s = Conv2dShape { n, c, m: p.co, cg: c, g: 1, h: ah, w: aw };
        let nchw = super::shape::permute(x, &[n, h, w, c], &[0, 3, 1, 2]);
        let (y, [oh, ow]) = conv2d_fused(&nchw, &p.oihw, p.winograd.as_ref(), bias, &s, self.activation, self.pool)?;
        let nhwc = super::shape::permute(&y, &[n, p.co, oh, ow], &[0, 2, 3, 1]);
        Ok(Tensor::from_f32(vec![n, oh, ow, p.co], nhwc)?)
    }

    /// The fused bias, activation and pool on a channels-last result of the
    /// general path.
    fn finish_general(&self, y: Tensor, bias: Option<&[f32]>) -> Result<Tensor, KernelError> {
        if bias.is_none() && self.activation == Activation::Identity && self.pool.is_none() {
            return Ok(y);
        }
        let shape = y.shape().to_vec();
        let co = shape[shape.len() - 1];
        let mut v = y.as_f32().map(<[f32]>::to_vec).unwrap_or_default();
        for pixel in v.chunks_exact_mut(co.max(1)) {
            if let Some(b) = bias {
                pixel.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
            }
            self.activation.apply(pixel);
        }
        let Some(pool) = self.pool else { return Ok(Tensor::from_f32(shape, v)?) };
        let [n, h, w] = [shape[0], shape[1], shape[2]];
        let [ph, pw] = pooled_size([h, w], pool)?;
        let nchw = super::shape::permute(&v, &shape, &[0, 3, 1, 2]);
        let pooled = super::pool::max_pool_planes(&nchw, n * co, [h, w], pool);
        Ok(Tensor::from_f32(vec![n, ph, pw, co], super::shape::permute(&pooled, &[n, co, ph, pw], &[0, 2, 3, 1]))?)
    }
}

/// The deepest spatial rank of the channels-last convolutions and pools.
const MAX_RANK: usize = 3;

impl Kernel for Conv {
    /// Output elements before any pooling, times the filter's taps and
    /// input channels per group.
    fn multiply_adds(&self, inputs: &[Option<&Tensor>]) -> Option<u64> {
        let (x, f) = (inputs.first().copied().flatten()?, inputs.get(1).copied().flatten()?);
        let rank = self.window.rank;
        let (n, spatial, _) = channels_last_dims(x, rank, "input").ok()?;
        let fs = f.shape();
        if fs.len() != rank + 2 {
            return None;
        }
        let mut outputs = n * fs[rank + 1];
        for d in 0..rank {
            outputs *= self.window.axis(d, spatial[d], fs[d]).ok()?.output;
        }
        Some((outputs * fs[..=rank].iter().product::<usize>()) as u64)
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let rank = self.window.rank;
        let (xt, ft) = (required(inputs, 0, "input")?, required(inputs, 1, "filter")?);
        let (n, spatial, c) = channels_last_dims(xt, rank, "input")?;
        let co = ft.shape().last().copied().unwrap_or(0);
        let bias = match inputs.get(2).copied().flatten() {
            Some(b) if b.shape() == [co] => Some(floats(b, "bias")?),
            Some(b) => return Err(KernelError(format!("bias must have shape [{co}], got {:?}", b.shape()))),
            None => None,
        };
        if let Some(p) =
            self.prepared.as_ref().filter(|p| p.ci == c && ft.shape() == [p.kernel[0], p.kernel[1], c, p.co])
        {
            return Ok(vec![self.run_prepared(p, floats(xt, "input")?, (n, [spatial[0], spatial[1]], c), bias)?]);
        }
        let y = self.run_general(xt, ft, (n, spatial, c))?;
        Ok(vec![self.finish_general(y, bias)?])
    }
}

impl Conv {
    /// Any channels-last convolution, groups included: each block of output
    /// pixels is the product of their patches and the filter as stored.
    fn run_general(
        &self,
        xt: &Tensor,
        ft: &Tensor,
        (n, spatial, c): (usize, Vec<usize>, usize),
    ) -> Result<Tensor, KernelError> {
        let rank = self.window.rank;
        let fs = ft.shape();
        if fs.len() != rank + 2 {
            return Err(KernelError(format!("filter must have rank {} ([k..., in, out]), got shape {fs:?}", rank + 2)));
        }
        let (ksize, ci, co) = (&fs[..rank], fs[rank], fs[rank + 1]);
        if ci == 0 || c % ci != 0 || co % (c / ci).max(1) != 0 {
            return Err(KernelError(format!(
                "filter in-channels {ci} must divide the input's {c} channels, and the groups ({}) its {co} out-channels",
                c.checked_div(ci).unwrap_or(0)
            )));
        }
        let groups = c / ci;
        let (x, f) = (floats(xt, "input")?, floats(ft, "filter")?);
        let axes: Vec<Axis> = (0..rank).map(|d| self.window.axis(d, spatial[d], ksize[d])).collect::<Result<_, _>>()?;
        let out_spatial: Vec<usize> = axes.iter().map(|a| a.output).collect();
        let per_image: usize = out_spatial.iter().product();
        let in_pixels: usize = spatial.iter().product();
        let mut out_shape = vec![n];
        out_shape.extend(&out_spatial);
        out_shape.push(co);
        let mut out = vec![0.0f32; n * per_image * co];
        let pointwise = ksize.iter().all(|&k| k == 1) && out_spatial == spatial && axes.iter().all(|a| a.stride == 1);
        if groups == 1 && pointwise {
            matmul_f32(x, f, &mut out, n * in_pixels, c, co);
            return Ok(Tensor::from_f32(out_shape, out)?);
        }
        let taps: usize = ksize.iter().product();
        let kdim = taps * ci;
        let og = co / groups;
        let pixel_strides = crate::tensor::strides(&spatial);
        // Each group's filter as a [kdim, og] matrix.
        let filters: Vec<Vec<f32>> = if groups == 1 {
            Vec::new()
        } else {
            (0..groups)
                .map(|g| f.chunks_exact(co).flat_map(|row| row[g * og..(g + 1) * og].iter().copied()).collect())
                .collect()
        };
        let block = (PATCH_FLOATS / kdim.max(1)).clamp(1, per_image.max(1));
        let mut patches = Vec::new();
        let mut product = Vec::new();
        for b in 0..n {
            let image = &x[b * in_pixels * c..(b + 1) * in_pixels * c];
            for first in (0..per_image).step_by(block) {
                let pixels = block.min(per_image - first);
                let out_block = &mut out[(b * per_image + first) * co..(b * per_image + first + pixels) * co];
                for g in 0..groups {
                    patches.clear();
                    patches.resize(pixels * kdim, 0.0f32);
                    let gather = |q: usize, patch: &mut [f32]| {
                        if let ([ah, aw], [kh, kw]) = (axes.as_slice(), ksize) {
                            // 2-D: rows and columns of taps directly.
                            let (oy, ox) = ((first + q) / aw.output, (first + q) % aw.output);
                            for ky in 0..*kh {
                                let Some(iy) = source(ah, oy, ky) else { continue };
                                for kx in 0..*kw {
                                    let Some(ix) = source(aw, ox, kx) else { continue };
                                    let from = (iy * aw.input + ix) * c + g * ci;
                                    let t = ky * kw + kx;
                                    if ci == 1 {
                                        patch[t] = image[from];
                                    } else {
                                        patch[t * ci..(t + 1) * ci].copy_from_slice(&image[from..from + ci]);
                                    }
                                }
                            }
                            return;
                        }
                        let (mut at_out, mut at_tap) = ([0usize; MAX_RANK], [0usize; MAX_RANK]);
                        unravel(first + q, &out_spatial, &mut at_out[..rank]);
                        for t in 0..taps {
                            unravel(t, ksize, &mut at_tap[..rank]);
                            if let Some(at) = tap_source(&axes, &at_out[..rank], &at_tap[..rank], &pixel_strides) {
                                let from = at * c + g * ci;
                                patch[t * ci..(t + 1) * ci].copy_from_slice(&image[from..from + ci]);
                            }
                        }
                    };
                    // Patches in groups of about 16K floats per task, on the
                    // calling thread when there is only one group.
                    let per_task = (1usize << 14).div_ceil(kdim.max(1)).max(1);
                    let each = |(t, chunk): (usize, &mut [f32])| {
                        for (i, patch) in chunk.chunks_mut(kdim.max(1)).enumerate() {
                            gather(t * per_task + i, patch);
                        }
                    };
                    if pixels > per_task {
                        patches.par_chunks_mut(per_task * kdim.max(1)).enumerate().for_each(each);
                    } else {
                        patches.chunks_mut(per_task * kdim.max(1)).enumerate().for_each(each);
                    }
                    if groups == 1 {
                        matmul_f32(&patches, f, out_block, pixels, kdim, co);
                    } else {
                        product.clear();
                        product.resize(pixels * og, 0.0f32);
                        matmul_f32(&patches, &filters[g], &mut product, pixels, kdim, og);
                        for (dst, src) in out_block.chunks_exact_mut(co).zip(product.chunks_exact(og)) {
                            dst[g * og..(g + 1) * og].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        Ok(Tensor::from_f32(out_shape, out)?)
    }
}

/// The input pixel (flat index over the spatial dims) that tap `tap` of
/// output pixel `out` reads, or `None` when it falls in the padding.
fn tap_source(axes: &[Axis], out: &[usize], tap: &[usize], pixel_strides: &[usize]) -> Option<usize> {
    let mut at = 0;
    for d in 0..axes.len() {
        at += source(&axes[d], out[d], tap[d])? * pixel_strides[d];
    }
    Some(at)
}

/// Conv2DBackpropInput (Keras's Conv2DTranspose): the gradient of a Conv2D
/// with respect to its input, whose shape `input_sizes` gives. Each
/// `out_backprop` pixel times the filter gives one column of taps (a matrix
/// product), and each result pixel sums the taps that land on it, in a
/// fixed order.
#[derive(Debug)]
struct ConvBackpropInput {
    window: Window,
}

impl Kernel for ConvBackpropInput {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let sizes = super::movement::int_list(required(inputs, 0, "input_sizes")?, "input_sizes")?;
        let (ft, gt) = (required(inputs, 1, "filter")?, required(inputs, 2, "out_backprop")?);
        let [n, rh, rw, rc] = match sizes[..] {
            [a, b, c, d] if [a, b, c, d].iter().all(|&v| v >= 0) => [a as usize, b as usize, c as usize, d as usize],
            ref v => return Err(KernelError(format!("input_sizes must be 4 non-negative sizes (NHWC), got {v:?}"))),
        };
        let [kh, kw, fc, gc] = match *ft.shape() {
            [a, b, c, d] => [a, b, c, d],
            ref s => return Err(KernelError(format!("filter must have rank 4 (HWIO), got shape {s:?}"))),
        };
        let [gn, gh, gw, gcc] = nhwc(gt, "out_backprop")?;
        let (ah, aw) = (self.window.axis(0, rh, kh)?, self.window.axis(1, rw, kw)?);
        if fc != rc || gcc != gc || gn != n || ah.output != gh || aw.output != gw {
            return Err(KernelError(format!(
                "a convolution of an input [{n},{rh},{rw},{rc}] with a filter {:?} gives [{n},{},{},{gc}], but out_backprop is {:?}",
                ft.shape(),
                ah.output,
                aw.output,
                gt.shape()
            )));
        }
        let (f, g) = (floats(ft, "filter")?, floats(gt, "out_backprop")?);
        let taps = kh * kw * rc;
        // The filter as [gc, kh·kw·rc]: row j holds every tap's weights for
        // out_backprop channel j.
        let mut wt = vec![0.0f32; gc * taps];
        for (t, row) in f.chunks_exact(gc).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                wt[j * taps + t] = v;
            }
        }
        let mut cols = vec![0.0f32; n * gh * gw * taps];
        matmul_f32(g, &wt, &mut cols, n * gh * gw, gc, taps);
        let mut out = vec![0.0f32; n * rh * rw * rc];
        if rc > 0 && rw > 0 {
            out.par_chunks_mut(rw * rc).enumerate().for_each(|(row, out_row)| {
                let (b, oy) = (row / rh, row % rh);
                for (ox, acc) in out_row.chunks_exact_mut(rc).enumerate() {
                    for ky in 0..kh {
                        let Some(iy) = landing(&ah, oy, ky) else { continue };
                        for kx in 0..kw {
                            let Some(ix) = landing(&aw, ox, kx) else { continue };
                            let col = &cols[((b * gh + iy) * gw + ix) * taps + (ky * kw + kx) * rc..][..rc];
                            acc.iter_mut().zip(col).for_each(|(a, &v)| *a += v);
                        }
                    }
                }
            });
        }
        Ok(vec![Tensor::from_f32(vec![n, rh, rw, rc], out)?])
    }
}

/// The output pixel of the forward convolution whose tap `tap` read input
/// position `at`, if there is one.
fn landing(axis: &Axis, at: usize, tap: usize) -> Option<usize> {
    let shifted = (at + axis.pad_begin).checked_sub(tap * axis.dilation)?;
    (shifted % axis.stride == 0 && shifted / axis.stride < axis.output).then_some(shifted / axis.stride)
}

/// DepthwiseConv2dNative: filter [kh, kw, c, m]; output channel `c·m + j`
/// is input channel `c` convolved with filter slice `[.., .., c, j]`.
#[derive(Debug)]
struct Depthwise {
    window: Window,
}

impl Kernel for Depthwise {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let (xt, ft) = (required(inputs, 0, "input")?, required(inputs, 1, "filter")?);
        let [n, h, w, c] = nhwc(xt, "input")?;
        let [kh, kw, fc, m] = match *ft.shape() {
            [a, b, c, d] => [a, b, c, d],
            ref s => {
                return Err(KernelError(format!("filter must have rank 4 [h, w, c, multiplier], got shape {s:?}")));
            }
        };
        if fc != c {
            return Err(KernelError(format!("filter has {fc} channels, but the input has {c}")));
        }
        let (x, f) = (floats(xt, "input")?, floats(ft, "filter")?);
        let (ah, aw) = (self.window.axis(0, h, kh)?, self.window.axis(1, w, kw)?);
        let (oh, ow, oc) = (ah.output, aw.output, c * m);
        let mut out = vec![0.0f32; n * oh * ow * oc];
        if oc > 0 {
            out.par_chunks_mut(ow * oc).enumerate().for_each(|(row, out_row)| {
                let (b, oy) = (row / oh, row % oh);
                for (ox, acc) in out_row.chunks_exact_mut(oc).enumerate() {
                    for ky in 0..kh {
                        let Some(iy) = source(&ah, oy, ky) else { continue };
                        for kx in 0..kw {
                            let Some(ix) = source(&aw, ox, kx) else { continue };
                            let xin = &x[((b * h + iy) * w + ix) * c..][..c];
                            let tap = &f[(ky * kw + kx) * oc..][..oc];
                            if m == 1 {
                                for ((a, &xv), &fv) in acc.iter_mut().zip(xin).zip(tap) {
                                    *a += xv * fv;
                                }
                            } else {
                                for (ch, &xv) in xin.iter().enumerate() {
                                    for j in 0..m {
                                        acc[ch * m + j] += xv * tap[ch * m + j];
                                    }
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok(vec![Tensor::from_f32(vec![n, oh, ow, oc], out)?])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Max,
    /// The mean of the window's taps inside the input (padding not counted).
    Avg,
}

#[derive(Debug)]
struct Pool {
    window: Window,
    kind: PoolKind,
}

fn build_pool(ctx: &BuildContext<'_>, kind: PoolKind, rank: usize) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Pool { window: tf_window(ctx.node, rank, Some("ksize"))?, kind }))
}

impl Kernel for Pool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let rank = self.window.rank;
        let xt = required(inputs, 0, "input")?;
        let (n, spatial, c) = channels_last_dims(xt, rank, "input")?;
        let x = floats(xt, "input")?;
        let ksize = self.window.kernel.clone().unwrap_or_default();
        let axes: Vec<Axis> = (0..rank).map(|d| self.window.axis(d, spatial[d], ksize[d])).collect::<Result<_, _>>()?;
        let out_spatial: Vec<usize> = axes.iter().map(|a| a.output).collect();
        let per_image: usize = out_spatial.iter().product();
        let in_pixels: usize = spatial.iter().product();
        let taps: usize = ksize.iter().product();
        let pixel_strides = crate::tensor::strides(&spatial);
        let mut out_shape = vec![n];
        out_shape.extend(&out_spatial);
        out_shape.push(c);
        let mut out = vec![0.0f32; n * per_image * c];
        if c > 0 && per_image > 0 {
            let one = |pixel: usize, acc: &mut [f32]| {
                let (b, q) = (pixel / per_image, pixel % per_image);
                let (mut at_out, mut at_tap) = ([0usize; MAX_RANK], [0usize; MAX_RANK]);
                unravel(q, &out_spatial, &mut at_out[..rank]);
                acc.fill(if self.kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 });
                let mut count = 0usize;
                for t in 0..taps {
                    let at = if let ([ah, aw], [_, kw]) = (axes.as_slice(), ksize.as_slice()) {
                        // 2-D: the tap's row and column directly.
                        source(ah, at_out[0], t / kw)
                            .zip(source(aw, at_out[1], t % kw))
                            .map(|(iy, ix)| iy * aw.input + ix)
                    } else {
                        unravel(t, &ksize, &mut at_tap[..rank]);
                        tap_source(&axes, &at_out[..rank], &at_tap[..rank], &pixel_strides)
                    };
                    let Some(at) = at else { continue };
                    let xin = &x[(b * in_pixels + at) * c..][..c];
                    count += 1;
                    match self.kind {
                        // NaN wins, as in TensorFlow's kernel (a select, so
                        // the loop vectorizes).
                        PoolKind::Max => acc.iter_mut().zip(xin).for_each(|(a, &v)| *a = super::pool::max_nan(*a, v)),
                        PoolKind::Avg => acc.iter_mut().zip(xin).for_each(|(a, &v)| *a += v),
                    }
                }
                if self.kind == PoolKind::Avg && count > 0 {
                    let d = count as f32;
                    acc.iter_mut().for_each(|a| *a /= d);
                }
            };
            // Pixels in groups of about 16K taps x channels per task, on
            // the calling thread when there is only one group.
            let group = (1usize << 14).div_ceil(c * taps.max(1)).max(1);
            let each = |(g, chunk): (usize, &mut [f32])| {
                for (i, acc) in chunk.chunks_mut(c).enumerate() {
                    one(g * group + i, acc);
                }
            };
            if out.len() > group * c {
                out.par_chunks_mut(group * c).enumerate().for_each(each);
            } else {
                out.chunks_mut(group * c).enumerate().for_each(each);
            }
        }
        Ok(vec![Tensor::from_f32(out_shape, out)?])
    }
}

/// The channel count and the layout split of `x` around its channel axis:
/// (outer, channels, inner) with channels on the last axis (NHWC) or axis 1.
fn channel_split(x: &Tensor, channels_last: bool) -> Result<(usize, usize, usize), KernelError> {
    let s = x.shape();
    if s.len() < if channels_last { 1 } else { 2 } {
        return Err(KernelError(format!("input of shape {s:?} has no channel axis")));
    }
    let axis = if channels_last { s.len() - 1 } else { 1 };
    Ok((s[..axis].iter().product(), s[axis], s[axis + 1..].iter().product()))
}

/// `x + bias` along the channel axis.
#[derive(Debug)]
struct BiasAdd {
    channels_last: bool,
}

impl Kernel for BiasAdd {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let (xt, bt) = (required(inputs, 0, "value")?, required(inputs, 1, "bias")?);
        let (_, c, inner) = channel_split(xt, self.channels_last)?;
        let bias = floats(bt, "bias")?;
        if bt.shape().len() != 1 || bias.len() != c {
            return Err(KernelError(format!("bias must have shape [{c}] (the channel count), got {:?}", bt.shape())));
        }
        let mut out = floats(xt, "value")?.to_vec();
        if c > 0 && inner > 0 {
            out.par_chunks_mut(c * inner).for_each(|chunk| {
                for (plane, &b) in chunk.chunks_exact_mut(inner).zip(bias) {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            });
        }
        Ok(vec![Tensor::from_f32(xt.shape().to_vec(), out)?])
    }
}

/// FusedBatchNorm (all versions) in inference: `x·s + (offset − mean·s)`
/// with `s = scale / √(variance + ε)`, per channel. Only `y` is produced: the
/// batch statistics outputs mean something only in training.
#[derive(Debug)]
struct BatchNorm {
    epsilon: f32,
    channels_last: bool,
}

fn build_batch_norm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    if ctx.node.int_attr("is_training", 0)? != 0 {
        return Err(BuildError::invalid(
            ctx.node,
            "is_training=true normalises with the batch's own statistics, which a served model never does; export the model for inference",
        ));
    }
    Ok(Box::new(BatchNorm { epsilon: ctx.node.float_attr("epsilon", 1e-4)?, channels_last: channels_last(ctx.node)? }))
}

impl Kernel for BatchNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let xt = required(inputs, 0, "x")?;
        let (_, c, inner) = channel_split(xt, self.channels_last)?;
        let param = |i: usize, what: &str| -> Result<&[f32], KernelError> {
            let v = floats(required(inputs, i, what)?, what)?;
            if v.len() != c {
                return Err(KernelError(format!("{what} must have {c} values (one per channel), got {}", v.len())));
            }
            Ok(v)
        };
        let (scale, offset, mean, variance) =
            (param(1, "scale")?, param(2, "offset")?, param(3, "mean")?, param(4, "variance")?);
        let s: Vec<f32> = scale.iter().zip(variance).map(|(&g, &v)| g / (v + self.epsilon).sqrt()).collect();
        let o: Vec<f32> = offset.iter().zip(mean).zip(&s).map(|((&b, &m), &s)| b - m * s).collect();
        let mut out = floats(xt, "x")?.to_vec();
        if c > 0 && inner > 0 {
            out.par_chunks_mut(c * inner).for_each(|chunk| {
                for (plane, (&s, &o)) in chunk.chunks_exact_mut(inner).zip(s.iter().zip(&o)) {
                    plane.iter_mut().for_each(|v| *v = *v * s + o);
                }
            });
        }
        Ok(vec![Tensor::from_f32(xt.shape().to_vec(), out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, random_floats, run};

    fn conv_attrs(strides: [i64; 2], padding: &str, dilations: [i64; 2]) -> Vec<(&'static str, Attribute)> {
        vec![
            ("strides", Attribute::Ints(vec![1, strides[0], strides[1], 1])),
            ("dilations", Attribute::Ints(vec![1, dilations[0], dilations[1], 1])),
            ("padding", Attribute::String(padding.into())),
        ]
    }

    /// The same convolution through the ONNX Conv kernel on transposed data.
    fn reference(x: &Tensor, f: &Tensor, strides: [i64; 2], padding: &str, dilations: [i64; 2], groups: i64) -> Tensor {
        let t = |t: &Tensor, perm: &[i64]| {
            run(&node("Transpose", 1, vec![("perm", Attribute::Ints(perm.to_vec()))]), 13, &[t]).unwrap().remove(0)
        };
        let auto_pad = if padding == "SAME" { "SAME_UPPER" } else { "VALID" };
        let conv = node(
            "Conv",
            2,
            vec![
                ("strides", Attribute::Ints(strides.to_vec())),
                ("dilations", Attribute::Ints(dilations.to_vec())),
                ("auto_pad", Attribute::String(auto_pad.into())),
                ("group", Attribute::Int(groups)),
            ],
        );
        let y = run(&conv, 13, &[&t(x, &[0, 3, 1, 2]), &t(f, &[3, 2, 0, 1])]).unwrap().remove(0);
        t(&y, &[0, 2, 3, 1])
    }

    #[test]
    fn conv2d_matches_the_nchw_kernel() {
        for (strides, padding, dilations, ci) in [
            ([1, 1], "VALID", [1, 1], 3),
            ([2, 1], "SAME", [1, 1], 3),
            ([1, 2], "SAME", [2, 1], 3),
            ([1, 1], "SAME", [1, 1], 1),
        ] {
            let x = Tensor::from_f32(vec![2, 7, 6, 3], random_floats(2 * 7 * 6 * 3, 1)).unwrap();
            let f = Tensor::from_f32(vec![3, 2, ci, 6], random_floats(3 * 2 * ci * 6, 2)).unwrap();
            let n = node("tf.Conv2D", 2, conv_attrs(strides, padding, dilations));
            let y = run(&n, 21, &[&x, &f]).unwrap().remove(0);
            let r = reference(&x, &f, strides, padding, dilations, (3 / ci) as i64);
            assert_eq!(y.shape(), r.shape(), "{strides:?} {padding} {dilations:?}");
            assert_close(y.as_f32().unwrap(), r.as_f32().unwrap());
        }
    }

    #[test]
    fn pointwise_conv_is_a_matrix_product() {
        let x = Tensor::from_f32(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let f = Tensor::from_f32(vec![1, 1, 2, 3], vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0]).unwrap();
        let y = run(&node("tf.Conv2D", 2, conv_attrs([1, 1], "VALID", [1, 1])), 21, &[&x, &f]).unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 2, 3]);
        assert_eq!(y[0].as_f32().unwrap(), &[1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
    }

    #[test]
    fn conv_backprop_input_is_the_adjoint_of_conv2d() {
        use crate::tensor::TensorData;
        for (strides, padding, size) in [([2, 2], "SAME", [6, 5]), ([1, 2], "VALID", [5, 7]), ([2, 1], "VALID", [6, 4])]
        {
            let f = Tensor::from_f32(vec![3, 2, 4, 3], random_floats(3 * 2 * 4 * 3, 5)).unwrap();
            let n = node("tf.Conv2DBackpropInput", 3, conv_attrs(strides, padding, [1, 1]));
            // The forward conv's output size for this input size.
            let window = tf_window(&n, 2, None).unwrap();
            let (oh, ow) = (window.axis(0, size[0], 3).unwrap().output, window.axis(1, size[1], 2).unwrap().output);
            let g = Tensor::from_f32(vec![2, oh, ow, 3], random_floats(2 * oh * ow * 3, 6)).unwrap();
            let sizes = Tensor::new(vec![4], TensorData::Int32(vec![2, size[0] as i32, size[1] as i32, 4])).unwrap();
            let y = run(&n, 21, &[&sizes, &f, &g]).unwrap().remove(0);
            assert_eq!(y.shape(), &[2, size[0], size[1], 4]);
            // The adjoint identity: <conv(x), g> == <x, backprop(g)>.
            let x =
                Tensor::from_f32(vec![2, size[0], size[1], 4], random_floats(2 * size[0] * size[1] * 4, 7)).unwrap();
            let conv =
                run(&node("tf.Conv2D", 2, conv_attrs(strides, padding, [1, 1])), 21, &[&x, &f]).unwrap().remove(0);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum::<f64>();
            let (lhs, rhs) =
                (dot(conv.as_f32().unwrap(), g.as_f32().unwrap()), dot(x.as_f32().unwrap(), y.as_f32().unwrap()));
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{strides:?} {padding}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn depthwise_matches_a_grouped_conv() {
        let x = Tensor::from_f32(vec![1, 5, 5, 2], random_floats(50, 3)).unwrap();
        // Multiplier 1: a conv with one group per channel.
        let f = Tensor::from_f32(vec![3, 3, 2, 1], random_floats(18, 4)).unwrap();
        let n = node("tf.DepthwiseConv2dNative", 2, conv_attrs([2, 2], "SAME", [1, 1]));
        let y = run(&n, 21, &[&x, &f]).unwrap().remove(0);
        let r = reference(&x, &f.clone().reshape(vec![3, 3, 1, 2]).unwrap(), [2, 2], "SAME", [1, 1], 2);
        assert_close(y.as_f32().unwrap(), r.as_f32().unwrap());
        // Multiplier 2: channel c·2 + j.
        let f = Tensor::from_f32(vec![1, 1, 2, 2], vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
        let x = Tensor::from_f32(vec![1, 1, 1, 2], vec![1.0, 2.0]).unwrap();
        let y = run(&n, 21, &[&x, &f]).unwrap().remove(0);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 10.0, 200.0, 2000.0]);
    }

    #[test]
    fn pools_ignore_padding() {
        let x = Tensor::from_f32(vec![1, 3, 3, 1], (1..=9).map(|v| v as f32).collect()).unwrap();
        let attrs = || {
            vec![
                ("ksize", Attribute::Ints(vec![1, 2, 2, 1])),
                ("strides", Attribute::Ints(vec![1, 2, 2, 1])),
                ("padding", Attribute::String("SAME".into())),
            ]
        };
        let max = run(&node("tf.MaxPool", 1, attrs()), 21, &[&x]).unwrap().remove(0);
        assert_eq!(max.shape(), &[1, 2, 2, 1]);
        assert_eq!(max.as_f32().unwrap(), &[5.0, 6.0, 8.0, 9.0]);
        let avg = run(&node("tf.AvgPool", 1, attrs()), 21, &[&x]).unwrap().remove(0);
        assert_eq!(avg.as_f32().unwrap(), &[3.0, 4.5, 7.5, 9.0]);
    }

    #[test]
    fn bias_add_and_batch_norm_follow_the_channel_axis() {
        let x = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_f32(vec![2], vec![10.0, 20.0]).unwrap();
        let y = run(&node("tf.BiasAdd", 2, vec![]), 21, &[&x, &b]).unwrap();
        assert_eq!(y[0].as_f32().unwrap(), &[11.0, 22.0, 13.0, 24.0]);
        let nchw = node("tf.BiasAdd", 2, vec![("data_format", Attribute::String("NCHW".into()))]);
        let x3 = x.clone().reshape(vec![1, 2, 2]).unwrap();
        let y = run(&nchw, 21, &[&x3, &b]).unwrap();
        assert_eq!(y[0].as_f32().unwrap(), &[11.0, 12.0, 23.0, 24.0]);
        let bad = Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap();
        assert!(run(&node("tf.BiasAdd", 2, vec![]), 21, &[&x, &bad]).unwrap_err().0.contains("shape [2]"));

        let p = |v: [f32; 2]| Tensor::from_f32(vec![2], v.to_vec()).unwrap();
        let bn = node("tf.FusedBatchNorm", 5, vec![("epsilon", Attribute::Float(0.0))]);
        let y = run(&bn, 21, &[&x, &p([2.0, 1.0]), &p([1.0, 0.0]), &p([1.0, 2.0]), &p([4.0, 1.0])]).unwrap();
        assert_eq!(y[0].as_f32().unwrap(), &[1.0, 0.0, 3.0, 2.0]);
        let training = node("tf.FusedBatchNorm", 5, vec![("is_training", Attribute::Int(1))]);
        assert!(KernelRegistry::with_all_ops().build(&training, 21).is_err());
    }
}
