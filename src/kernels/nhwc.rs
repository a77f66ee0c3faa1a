//! TensorFlow's channels-last operators, run in their own layout: Conv2D,
//! DepthwiseConv2dNative, MaxPool, AvgPool, BiasAdd and FusedBatchNorm on
//! NHWC tensors with HWIO filters, as a SavedModel's graph has them. Nothing
//! is transposed: a convolution is a matrix product of the input's patches
//! (each a contiguous run of `kh·kw·c` values) with the filter as stored.
//!
//! The SavedModel importer maps TensorFlow's ops onto these under `tf.`
//! names; attributes keep TensorFlow's names (`strides`, `ksize` and
//! `dilations` as four-element NHWC lists, `padding` VALID, SAME or
//! EXPLICIT with `explicit_paddings`).

use rayon::prelude::*;

use super::conv::{AutoPad, Axis, Window};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, matmul_f32, required};
use crate::graph::Node;
use crate::tensor::Tensor;

pub fn register(reg: &mut KernelRegistry) {
    reg.register("tf.Conv2D", 1, MAX_OPSET, |ctx| Ok(Box::new(Conv2d { window: tf_window(ctx.node, None)? })));
    reg.register("tf.DepthwiseConv2dNative", 1, MAX_OPSET, |ctx| {
        Ok(Box::new(Depthwise { window: tf_window(ctx.node, None)? }))
    });
    reg.register("tf.MaxPool", 1, MAX_OPSET, |ctx| build_pool(ctx, PoolKind::Max));
    reg.register("tf.AvgPool", 1, MAX_OPSET, |ctx| build_pool(ctx, PoolKind::Avg));
    reg.register("tf.BiasAdd", 1, MAX_OPSET, |ctx| Ok(Box::new(BiasAdd { channels_last: channels_last(ctx.node)? })));
    reg.register("tf.FusedBatchNorm", 1, MAX_OPSET, build_batch_norm);
    reg.register("tf.Conv2DBackpropInput", 1, MAX_OPSET, |ctx| {
        Ok(Box::new(ConvBackpropInput { window: tf_window(ctx.node, None)? }))
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

/// A four-element NHWC list attribute as its (height, width) pair; the batch
/// and channel entries must be 1.
fn spatial_pair(node: &Node, name: &str) -> Result<Option<[usize; 2]>, BuildError> {
    match node.ints_attr(name)? {
        None => Ok(None),
        Some(&[1, h, w, 1]) if h >= 1 && w >= 1 => Ok(Some([h as usize, w as usize])),
        Some(v) => Err(BuildError::invalid(
            node,
            format!("attribute '{name}' must be [1, height, width, 1] with positive sizes, got {v:?}"),
        )),
    }
}

/// The window of a channels-last node: strides, dilations and padding from
/// TensorFlow's attributes; `kernel` for pooling (a convolution's comes
/// from its filter).
fn tf_window(node: &Node, kernel: Option<Vec<usize>>) -> Result<Window, BuildError> {
    if !channels_last(node)? {
        return Err(BuildError::invalid(
            node,
            "data_format NCHW is not supported for this operator; TensorFlow's CPU kernels and Keras use NHWC",
        ));
    }
    let strides =
        spatial_pair(node, "strides")?.ok_or_else(|| BuildError::invalid(node, "attribute 'strides' is required"))?;
    let dilations = spatial_pair(node, "dilations")?.unwrap_or([1, 1]);
    let (auto_pad, pads) = match node.string_attr("padding")? {
        Some("VALID") => (AutoPad::Valid, vec![0; 4]),
        // TensorFlow's SAME puts the odd pixel at the end, as ONNX's SAME_UPPER.
        Some("SAME") => (AutoPad::SameUpper, vec![0; 4]),
        Some("EXPLICIT") => match node.ints_attr("explicit_paddings")? {
            Some(&[0, 0, top, bottom, left, right, 0, 0]) if [top, bottom, left, right].iter().all(|&p| p >= 0) => {
                (AutoPad::NotSet, [top, left, bottom, right].iter().map(|&p| p as usize).collect())
            }
            other => {
                return Err(BuildError::invalid(
                    node,
                    format!(
                        "padding EXPLICIT needs explicit_paddings [0, 0, top, bottom, left, right, 0, 0], got {other:?}"
                    ),
                ));
            }
        },
        other => {
            return Err(BuildError::invalid(node, format!("padding must be VALID, SAME or EXPLICIT, got {other:?}")));
        }
    };
    Ok(Window {
        rank: 2,
        kernel,
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads,
        auto_pad,
        ceil_mode: false,
    })
}

/// An NHWC input's dims.
fn nhwc(t: &Tensor, what: &str) -> Result<[usize; 4], KernelError> {
    match *t.shape() {
        [n, h, w, c] => Ok([n, h, w, c]),
        ref s => Err(KernelError(format!("{what} must have rank 4 (NHWC), got shape {s:?}"))),
    }
}

/// The input row a window tap reads, or `None` in the padding.
fn source(axis: &Axis, out: usize, tap: usize) -> Option<usize> {
    (out * axis.stride + tap * axis.dilation).checked_sub(axis.pad_begin).filter(|&i| i < axis.input)
}

/// Output pixels per patch matrix: bounds the scratch memory of one block.
const PATCH_FLOATS: usize = 1 << 20;

#[derive(Debug)]
struct Conv2d {
    window: Window,
}

impl Kernel for Conv2d {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let (xt, ft) = (required(inputs, 0, "input")?, required(inputs, 1, "filter")?);
        let [n, h, w, c] = nhwc(xt, "input")?;
        let [kh, kw, ci, co] = match *ft.shape() {
            [a, b, c, d] => [a, b, c, d],
            ref s => return Err(KernelError(format!("filter must have rank 4 (HWIO), got shape {s:?}"))),
        };
        if ci == 0 || c % ci != 0 || co % (c / ci).max(1) != 0 {
            return Err(KernelError(format!(
                "filter in-channels {ci} must divide the input's {c} channels, and the groups ({}) its {co} out-channels",
                c.checked_div(ci).unwrap_or(0)
            )));
        }
        let groups = c / ci;
        let (x, f) = (floats(xt, "input")?, floats(ft, "filter")?);
        let (ah, aw) = (self.window.axis(0, h, kh)?, self.window.axis(1, w, kw)?);
        let (oh, ow) = (ah.output, aw.output);
        let mut out = vec![0.0f32; n * oh * ow * co];
        let pointwise = kh == 1 && kw == 1 && oh == h && ow == w && ah.stride == 1 && aw.stride == 1;
        if groups == 1 && pointwise {
            matmul_f32(x, f, &mut out, n * h * w, c, co);
            return Ok(vec![Tensor::from_f32(vec![n, oh, ow, co], out)?]);
        }
        let kdim = kh * kw * ci;
        let og = co / groups;
        // Each group's filter as a [kdim, og] matrix.
        let filters: Vec<Vec<f32>> = if groups == 1 {
            Vec::new()
        } else {
            (0..groups)
                .map(|g| f.chunks_exact(co).flat_map(|row| row[g * og..(g + 1) * og].iter().copied()).collect())
                .collect()
        };
        let block_rows = (PATCH_FLOATS / (ow * kdim).max(1)).clamp(1, oh.max(1));
        let mut patches = Vec::new();
        let mut product = Vec::new();
        for b in 0..n {
            let image = &x[b * h * w * c..(b + 1) * h * w * c];
            for row0 in (0..oh).step_by(block_rows) {
                let rows = block_rows.min(oh - row0);
                let pixels = rows * ow;
                let out_block = &mut out[((b * oh + row0) * ow) * co..((b * oh + row0) * ow + pixels) * co];
                for g in 0..groups {
                    patches.clear();
                    patches.resize(pixels * kdim, 0.0f32);
                    patches.par_chunks_mut(kdim).enumerate().for_each(|(p, patch)| {
                        let (oy, ox) = (row0 + p / ow, p % ow);
                        for ky in 0..kh {
                            let Some(iy) = source(&ah, oy, ky) else { continue };
                            for kx in 0..kw {
                                let Some(ix) = source(&aw, ox, kx) else { continue };
                                let at = (iy * w + ix) * c + g * ci;
                                patch[(ky * kw + kx) * ci..][..ci].copy_from_slice(&image[at..at + ci]);
                            }
                        }
                    });
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
        Ok(vec![Tensor::from_f32(vec![n, oh, ow, co], out)?])
    }
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

fn build_pool(ctx: &BuildContext<'_>, kind: PoolKind) -> Result<Box<dyn Kernel>, BuildError> {
    let kernel = spatial_pair(ctx.node, "ksize")?
        .ok_or_else(|| BuildError::invalid(ctx.node, "attribute 'ksize' is required"))?;
    Ok(Box::new(Pool { window: tf_window(ctx.node, Some(kernel.to_vec()))?, kind }))
}

impl Kernel for Pool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let xt = required(inputs, 0, "input")?;
        let [n, h, w, c] = nhwc(xt, "input")?;
        let x = floats(xt, "input")?;
        let [kh, kw] = match self.window.kernel.as_deref() {
            Some(&[a, b]) => [a, b],
            _ => return Err(KernelError("pooling window is not 2-D".into())),
        };
        let (ah, aw) = (self.window.axis(0, h, kh)?, self.window.axis(1, w, kw)?);
        let (oh, ow) = (ah.output, aw.output);
        let mut out = vec![0.0f32; n * oh * ow * c];
        if c > 0 {
            out.par_chunks_mut(ow * c).enumerate().for_each(|(row, out_row)| {
                let (b, oy) = (row / oh, row % oh);
                for (ox, acc) in out_row.chunks_exact_mut(c).enumerate() {
                    acc.fill(if self.kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 });
                    let mut count = 0usize;
                    for ky in 0..kh {
                        let Some(iy) = source(&ah, oy, ky) else { continue };
                        for kx in 0..kw {
                            let Some(ix) = source(&aw, ox, kx) else { continue };
                            let xin = &x[((b * h + iy) * w + ix) * c..][..c];
                            count += 1;
                            match self.kind {
                                PoolKind::Max => acc.iter_mut().zip(xin).for_each(|(a, &v)| {
                                    // NaN wins, as in TensorFlow's kernel.
                                    if v > *a || v.is_nan() {
                                        *a = v;
                                    }
                                }),
                                PoolKind::Avg => acc.iter_mut().zip(xin).for_each(|(a, &v)| *a += v),
                            }
                        }
                    }
                    if self.kind == PoolKind::Avg && count > 0 {
                        let d = count as f32;
                        acc.iter_mut().for_each(|a| *a /= d);
                    }
                }
            });
        }
        Ok(vec![Tensor::from_f32(vec![n, oh, ow, c], out)?])
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
            let window = tf_window(&n, None).unwrap();
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
