//! Convolution over NC(D)HW tensors (any spatial rank), and the spatial geometry
//! (strides, pads, dilations, auto_pad) that pooling shares.

use rayon::prelude::*;

use super::conv2d::{Conv2dShape, conv2d_fused};
use super::epilogue::Activation;
use super::winograd::WinogradFilters;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::graph::Node;
use crate::tensor::Tensor;

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Conv", 1, MAX_OPSET, build_conv);
    // Conv with its activation fused in (onnxruntime's contrib operator of
    // the same name), made by the load-time passes.
    reg.register("FusedConv", 1, MAX_OPSET, build_conv);
    // FusedConv followed by a MaxPool whose windows tile the output
    // (`pool_shape`, strides equal to it, no padding), made by the
    // load-time passes.
    reg.register("FusedConvPool", 1, MAX_OPSET, build_conv);
    reg.register("ConvInteger", 10, MAX_OPSET, build_conv);
    reg.register("QLinearConv", 10, MAX_OPSET, build_conv);
}

/// How padding is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    /// The node's `auto_pad` attribute (NOTSET when absent).
    ///
    /// # Errors
    /// For a value ONNX does not define.
    pub fn from_node(node: &Node) -> Result<AutoPad, BuildError> {
        match node.string_attr("auto_pad")?.unwrap_or("NOTSET") {
            "NOTSET" => Ok(AutoPad::NotSet),
            "SAME_UPPER" => Ok(AutoPad::SameUpper),
            "SAME_LOWER" => Ok(AutoPad::SameLower),
            "VALID" => Ok(AutoPad::Valid),
            other => Err(BuildError::invalid(
                node,
                format!("auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"),
            )),
        }
    }
}

/// The spatial attributes of a sliding-window operator, for up to two
/// spatial dims; 1-D operators are run as 2-D with a height of 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Spatial rank of the operator (1 or 2).
    pub rank: usize,
    /// Kernel extent per spatial dim, or `None` when it comes from the weights.
    pub kernel: Option<Vec<usize>>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads then end pads, ONNX order; ignored unless `auto_pad` is NotSet.
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    /// Round output sizes up (pooling's `ceil_mode`).
    pub ceil_mode: bool,
}

/// The resolved geometry of one spatial dim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    /// Padding after the input (explicit, or what SAME needs).
    pub pad_end: usize,
    pub output: usize,
}

fn positive_list(node: &Node, name: &str, rank: usize, default: usize) -> Result<Vec<usize>, BuildError> {
    match node.ints_attr(name)? {
        None => Ok(vec![default; rank]),
        Some(v) if v.len() == rank && v.iter().all(|&x| x >= 1) => Ok(v.iter().map(|&x| x as usize).collect()),
        Some(v) => {
            Err(BuildError::invalid(node, format!("attribute '{name}' must hold {rank} positive integers, got {v:?}")))
        }
    }
}

impl Window {
    /// Reads the window attributes of `node` for `rank` spatial dims.
    ///
    /// # Errors
    /// When an attribute has the wrong length or an invalid value.
    pub fn from_node(node: &Node, rank: usize, kernel_required: bool) -> Result<Window, BuildError> {
        if !(1..=2).contains(&rank) {
            return Err(BuildError::invalid(
                node,
                format!("only 1-D and 2-D windows are supported, got {rank} spatial dims"),
            ));
        }
        Window::parse(node, rank, kernel_required)
    }

    /// Reads the window attributes of `node` for any number of spatial dims
    /// (shape inference reads windows the kernels do not run yet).
    ///
    /// # Errors
    /// When an attribute has the wrong length or an invalid value.
    pub fn parse(node: &Node, rank: usize, kernel_required: bool) -> Result<Window, BuildError> {
        let kernel = match node.ints_attr("kernel_shape")? {
            Some(k) if k.len() == rank && k.iter().all(|&x| x >= 1) => Some(k.iter().map(|&x| x as usize).collect()),
            Some(k) => {
                return Err(BuildError::invalid(
                    node,
                    format!("attribute 'kernel_shape' must hold {rank} positive integers, got {k:?}"),
                ));
            }
            None if kernel_required => {
                return Err(BuildError::invalid(node, "attribute 'kernel_shape' is required"));
            }
            None => None,
        };
        let pads = match node.ints_attr("pads")? {
            None => vec![0; 2 * rank],
            Some(p) if p.len() == 2 * rank && p.iter().all(|&x| x >= 0) => p.iter().map(|&x| x as usize).collect(),
            Some(p) => {
                return Err(BuildError::invalid(
                    node,
                    format!("attribute 'pads' must hold {} non-negative integers, got {p:?}", 2 * rank),
                ));
            }
        };
        let auto_pad = AutoPad::from_node(node)?;
        Ok(Window {
            rank,
            kernel,
            strides: positive_list(node, "strides", rank, 1)?,
            dilations: positive_list(node, "dilations", rank, 1)?,
            pads,
            auto_pad,
            ceil_mode: node.int_attr("ceil_mode", 0)? != 0,
        })
    }

    /// The output shape [n, channels, (height,) width] for resolved axes.
    pub fn output_shape(&self, n: usize, channels: usize, [ah, aw]: [Axis; 2]) -> Vec<usize> {
        let mut shape = vec![n, channels];
        if self.rank == 2 {
            shape.push(ah.output);
        }
        shape.push(aw.output);
        shape
    }

    /// Resolves the geometry for the given spatial input sizes and kernel
    /// extents, returned as two axes (height, width); a 1-D window gets a
    /// unit height axis.
    ///
    /// # Errors
    /// When the window does not fit in the padded input.
    pub fn resolve(&self, input: &[usize], kernel: &[usize]) -> Result<[Axis; 2], KernelError> {
        let mut axes = [Axis { input: 1, kernel: 1, stride: 1, dilation: 1, pad_begin: 0, pad_end: 0, output: 1 }; 2];
        let offset = 2 - self.rank;
        for d in 0..self.rank {
            axes[offset + d] = self.axis(d, input[d], kernel[d])?;
        }
        Ok(axes)
    }

    /// Resolves spatial dim `d` for an input of size `i` and a kernel of
    /// extent `k`.
    ///
    /// # Errors
    /// When the window does not fit in the padded input.
    pub fn axis(&self, d: usize, i: usize, k: usize) -> Result<Axis, KernelError> {
        let (s, dl) = (self.strides[d], self.dilations[d]);
        let extent = (k.max(1) - 1) * dl + 1;
        let (pad_begin, pad_end, output) = match self.auto_pad {
            AutoPad::NotSet | AutoPad::Valid => {
                let (pb, pe) =
                    if self.auto_pad == AutoPad::Valid { (0, 0) } else { (self.pads[d], self.pads[d + self.rank]) };
                let padded = i + pb + pe;
                if padded < extent {
                    return Err(KernelError(format!(
                        "window of extent {extent} does not fit in spatial dim {d} of size {i} (padded {padded})"
                    )));
                }
                let span = padded - extent;
                let mut out = if self.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
                // With ceil_mode, the last window must start inside the
                // input or its begin padding.
                if self.ceil_mode && (out - 1) * s >= i + pb {
                    out -= 1;
                }
                (pb, pe, out)
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = i.div_ceil(s);
                let needed = ((out.max(1) - 1) * s + extent).saturating_sub(i);
                let begin = if self.auto_pad == AutoPad::SameUpper { needed / 2 } else { needed - needed / 2 };
                (begin, needed - begin, out)
            }
        };
        Ok(Axis { input: i, kernel: k, stride: s, dilation: dl, pad_begin, pad_end, output })
    }
}

impl Axis {
    /// The range of output positions whose tap `tap` lands inside the input,
    /// and the input position of the first of them.
    pub fn valid_outputs(&self, tap: usize) -> std::ops::Range<usize> {
        let shift = tap * self.dilation;
        // Input position = o * stride + shift - pad_begin must be in [0, input).
        let lo = if shift >= self.pad_begin { 0 } else { (self.pad_begin - shift).div_ceil(self.stride) };
        let limit = self.input + self.pad_begin; // o * stride + shift < limit
        let hi = if limit > shift { ((limit - shift - 1) / self.stride + 1).min(self.output) } else { 0 };
        lo.min(hi)..hi
    }
}

/// The deepest spatial rank Conv takes.
const MAX_CONV_RANK: usize = 8;

/// ONNX Conv over NC(D)HW input and OI(D)HW weights, with groups and
/// optional bias: 1-D and 2-D inputs run row by row, deeper ones through
/// the N-D loop.
#[derive(Debug)]
struct Conv {
    /// The window the attributes fix, or one per spatial rank from 1 to 3
    /// when no attribute fixes it (it then comes from the weights at run
    /// time).
    windows: Vec<Window>,
    group: usize,
    kind: ConvKind,
    /// FusedConv's activation (Identity for Conv).
    activation: Activation,
    /// The weights transformed for Winograd's algorithm, when they are a
    /// constant of a layer it suits.
    winograd: Option<WinogradFilters>,
    /// FusedConvPool's max-pool window, which tiles each output plane.
    pool: Option<[usize; 2]>,
}

/// What a Conv node computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvKind {
    Float,
    /// ConvInteger: 8-bit inputs less their zero points, summed in int32.
    Integer,
    /// QLinearConv: ConvInteger's sum (plus an int32 bias), rescaled and
    /// quantized to the output's scale and zero point.
    QLinear,
}

fn build_conv(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let group = node.int_attr("group", 1)?;
    if group < 1 {
        return Err(BuildError::invalid(node, format!("group must be at least 1, got {group}")));
    }
    // The spatial rank comes from kernel_shape, or from the strides, pads or
    // dilations when kernel_shape is left to the weights, or else from the
    // weights' rank when the node runs.
    let rank = ["kernel_shape", "strides", "dilations"]
        .iter()
        .find_map(|a| node.ints_attr(a).ok().flatten().map(<[i64]>::len))
        .or_else(|| node.ints_attr("pads").ok().flatten().map(|p| p.len() / 2));
    let windows = match rank {
        Some(rank) if (1..=MAX_CONV_RANK).contains(&rank) => vec![Window::parse(node, rank, false)?],
        Some(rank) => {
            return Err(BuildError::invalid(node, format!("Conv takes 1 to {MAX_CONV_RANK} spatial dims, got {rank}")));
        }
        None => (1..=3).map(|r| Window::parse(node, r, false)).collect::<Result<_, _>>()?,
    };
    let kind = match node.op.as_str() {
        "ConvInteger" => ConvKind::Integer,
        "QLinearConv" => ConvKind::QLinear,
        _ => ConvKind::Float,
    };
    let fused = matches!(node.op.as_str(), "FusedConv" | "FusedConvPool");
    let activation = if fused { Activation::from_node(node)? } else { Activation::Identity };
    let pool = match node.ints_attr("pool_shape")? {
        _ if node.op != "FusedConvPool" => None,
        Some(&[h, w]) if h >= 1 && w >= 1 && windows.iter().any(|w| w.rank == 2) => Some([h as usize, w as usize]),
        other => {
            return Err(BuildError::invalid(
                node,
                format!("FusedConvPool takes a 2-D convolution and 'pool_shape' of 2 positive integers, got {other:?}"),
            ));
        }
    };
    let winograd = match (kind, windows.as_slice(), ctx.constant_input(1)) {
        (ConvKind::Float, [window], Some(w)) if window.rank == 2 && w.shape().len() == 4 => {
            let (m, c, kernel) = (w.shape()[0], w.shape()[1], [w.shape()[2], w.shape()[3]]);
            let pair = |v: &[usize]| [v[0], v[1]];
            let fits_kernel = window.kernel.as_deref().is_none_or(|k| k == kernel);
            (fits_kernel
                && super::winograd::suits(m, c, kernel, pair(&window.strides), pair(&window.dilations), group as usize))
            .then(|| w.as_f32().map(|w| WinogradFilters::new(w, m, c)))
            .flatten()
        }
        _ => None,
    };
    // The pooled form runs on 2-D inputs only.
    let windows = if pool.is_some() { windows.into_iter().filter(|w| w.rank == 2).collect() } else { windows };
    Ok(Box::new(Conv { windows, group: group as usize, kind, activation, winograd, pool }))
}

impl Kernel for Conv {
    /// Output elements before any pooling, times input channels per group
    /// and kernel taps.
    fn multiply_adds(&self, inputs: &[Option<&Tensor>]) -> Option<u64> {
        let (x, w) = (inputs.first().copied().flatten()?, inputs.get(1).copied().flatten()?);
        if self.kind != ConvKind::Float || x.shape().len() < 3 || w.shape().len() != x.shape().len() {
            return None;
        }
        let window = self.windows.iter().find(|win| win.rank + 2 == x.shape().len())?;
        let mut outputs = x.shape()[0] * w.shape()[0];
        for d in 0..window.rank {
            outputs *= window.axis(d, x.shape()[2 + d], w.shape()[2 + d]).ok()?.output;
        }
        Some((outputs * w.shape()[1..].iter().product::<usize>()) as u64)
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let w = required(inputs, if self.kind == ConvKind::QLinear { 3 } else { 1 }, "W")?;
        let window = self.windows.iter().find(|w| w.rank + 2 == x.shape().len());
        let Some(window) = window.filter(|win| w.shape().len() == win.rank + 2) else {
            let ranks: Vec<String> = self.windows.iter().map(|w| format!("{} ({}-D)", w.rank + 2, w.rank)).collect();
            return Err(KernelError(format!(
                "X and W must have rank {}, got shapes {:?} and {:?}",
                ranks.join(" or "),
                x.shape(),
                w.shape()
            )));
        };
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let (m, cg) = (w.shape()[0], w.shape()[1]);
        let g = self.group;
        if c != cg * g || m % g != 0 {
            return Err(KernelError(format!(
                "input has {c} channels and W has shape {:?}, which does not fit group {g}",
                w.shape()
            )));
        }
        let kernel = &w.shape()[2..];
        if let Some(k) = &window.kernel
            && k.as_slice() != kernel
        {
            return Err(KernelError(format!("kernel_shape {k:?} differs from the weights' {kernel:?}")));
        }
        match self.kind {
            ConvKind::Integer => {
                let zero = |i: usize| inputs.get(i).copied().flatten();
                let y = integer_conv(x, zero(2), w, zero(3), None, window, [n, c, m, cg, g])?;
                return Ok(vec![y.map_data(|v| {
                    crate::tensor::TensorData::Int32(
                        v.iter().map(|&a| a.clamp(i32::MIN.into(), i32::MAX.into()) as i32).collect(),
                    )
                })?]);
            }
            ConvKind::QLinear => return qlinear_conv(inputs, x, w, window, [n, c, m, cg, g]),
            ConvKind::Float => {}
        }
        let xd = floats(x, "X")?;
        let wd = floats(w, "W")?;
        let bias = match inputs.get(2).copied().flatten() {
            Some(b) if b.shape() == [m] => Some(floats(b, "B")?),
            Some(b) => {
                return Err(KernelError(format!("B must have shape [{m}], got {:?}", b.shape())));
            }
            None => None,
        };
        if window.rank > 2 {
            let axes =
                (0..window.rank).map(|d| window.axis(d, x.shape()[2 + d], kernel[d])).collect::<Result<Vec<_>, _>>()?;
            let mut y = conv_nd(xd, wd, bias, [n, c, m, cg, g], &axes);
            self.activation.apply(&mut y);
            let mut shape = vec![n, m];
            shape.extend(axes.iter().map(|a| a.output));
            return Ok(vec![Tensor::from_f32(shape, y)?]);
        }
        let [ah, aw] = window.resolve(&x.shape()[2..], kernel)?;
        let shape = Conv2dShape { n, c, m, cg, g, h: ah, w: aw };
        let (y, [oh, ow]) = conv2d_fused(xd, wd, self.winograd.as_ref(), bias, &shape, self.activation, self.pool)?;
        let out_axes = [Axis { output: oh, ..ah }, Axis { output: ow, ..aw }];
        Ok(vec![Tensor::from_f32(window.output_shape(n, m, out_axes), y)?])
    }
}

/// Integer values of a uint8 or int8 tensor.
fn int8s(t: &Tensor, what: &str) -> Result<Vec<i64>, KernelError> {
    match t.data() {
        crate::tensor::TensorData::UInt8(v) => Ok(v.iter().map(|&a| i64::from(a)).collect()),
        crate::tensor::TensorData::Int8(v) => Ok(v.iter().map(|&a| i64::from(a)).collect()),
        other => Err(KernelError(format!("{what} must be uint8 or int8, not {}", other.dtype()))),
    }
}

/// (X - x_zero_point) convolved with (W - w_zero_point, per tensor or per
/// output channel), plus an int32 bias, exact in integers: ConvInteger and
/// the core of QLinearConv. The result's shape and sums.
fn integer_conv(
    x: &Tensor,
    x_zero: Option<&Tensor>,
    w: &Tensor,
    w_zero: Option<&Tensor>,
    bias: Option<&Tensor>,
    window: &Window,
    dims: [usize; 5],
) -> Result<IntConv, KernelError> {
    let m = dims[2];
    let zero = |t: Option<&Tensor>, what: &str| t.map_or(Ok(vec![0]), |t| int8s(t, what));
    let (xz, wz) = (zero(x_zero, "x_zero_point")?, zero(w_zero, "w_zero_point")?);
    if xz.len() != 1 || (wz.len() != 1 && wz.len() != m) {
        return Err(KernelError(format!(
            "x_zero_point must be one value and w_zero_point one or {m}, got {} and {}",
            xz.len(),
            wz.len()
        )));
    }
    let xd: Vec<i64> = int8s(x, "X")?.into_iter().map(|v| v - xz[0]).collect();
    let per_filter = w.len() / m.max(1);
    let wd: Vec<i64> = int8s(w, "W")?
        .into_iter()
        .enumerate()
        .map(|(i, v)| v - wz[if wz.len() == 1 { 0 } else { i / per_filter.max(1) }])
        .collect();
    let bias: Option<Vec<i64>> = match bias {
        Some(b) => match b.data() {
            crate::tensor::TensorData::Int32(v) if v.len() == m => Some(v.iter().map(|&a| i64::from(a)).collect()),
            _ => return Err(KernelError(format!("B must be int32 [{m}], got {} {:?}", b.dtype(), b.shape()))),
        },
        None => None,
    };
    let kernel = &w.shape()[2..];
    let axes = (0..window.rank).map(|d| window.axis(d, x.shape()[2 + d], kernel[d])).collect::<Result<Vec<_>, _>>()?;
    let y = conv_nd(&xd, &wd, bias.as_deref(), dims, &axes);
    let mut shape = vec![dims[0], m];
    shape.extend(axes.iter().map(|a| a.output));
    Ok(IntConv { shape, values: y })
}

/// An integer convolution's result.
struct IntConv {
    shape: Vec<usize>,
    values: Vec<i64>,
}

impl IntConv {
    fn map_data(self, f: impl FnOnce(&[i64]) -> crate::tensor::TensorData) -> Result<Tensor, KernelError> {
        Ok(Tensor::new(self.shape, f(&self.values))?)
    }
}

/// QLinearConv: inputs x, x_scale, x_zero_point, w, w_scale, w_zero_point,
/// y_scale, y_zero_point, B. The integer sum times x_scale * w_scale /
/// y_scale (per tensor or per output channel), plus y_zero_point, rounded
/// half to even and saturated to y's type.
fn qlinear_conv(
    inputs: &[Option<&Tensor>],
    x: &Tensor,
    w: &Tensor,
    window: &Window,
    dims: [usize; 5],
) -> Result<Vec<Tensor>, KernelError> {
    let opt = |i: usize| inputs.get(i).copied().flatten();
    let scalar = |i: usize, what: &str| -> Result<Vec<f32>, KernelError> {
        let t = required(inputs, i, what)?;
        Ok(floats(t, what)?.to_vec())
    };
    let (xs, ws, ys) = (scalar(1, "x_scale")?, scalar(4, "w_scale")?, scalar(6, "y_scale")?);
    let m = dims[2];
    if xs.len() != 1 || ys.len() != 1 || (ws.len() != 1 && ws.len() != m) {
        return Err(KernelError(format!("x_scale and y_scale must be one value and w_scale one or {m}")));
    }
    let conv = integer_conv(x, opt(2), w, opt(5), opt(8), window, dims)?;
    let y_zero = opt(7);
    let (zp, signed) = match y_zero.map(Tensor::data) {
        Some(crate::tensor::TensorData::UInt8(v)) if v.len() == 1 => (f64::from(v[0]), false),
        Some(crate::tensor::TensorData::Int8(v)) if v.len() == 1 => (f64::from(v[0]), true),
        None => (0.0, matches!(x.data(), crate::tensor::TensorData::Int8(_))),
        Some(_) => return Err(KernelError("y_zero_point must be one uint8 or int8".into())),
    };
    let plane = conv.values.len() / (dims[0] * m).max(1);
    let (lo, hi) = if signed { (-128.0, 127.0) } else { (0.0, 255.0) };
    let q = conv.values.iter().enumerate().map(|(i, &v)| {
        let oc = (i / plane.max(1)) % m;
        let factor = f64::from(xs[0] * ws[if ws.len() == 1 { 0 } else { oc }] / ys[0]);
        (v as f64 * factor + zp).clamp(lo, hi).round_ties_even()
    });
    let data = if signed {
        crate::tensor::TensorData::Int8(q.map(|v| v as i8).collect())
    } else {
        crate::tensor::TensorData::UInt8(q.map(|v| v as u8).collect())
    };
    Ok(vec![Tensor::new(conv.shape, data)?])
}

/// Convolution over any spatial rank: each output plane (batch, output
/// channel) sums over its group's input channels and every kernel tap, in
/// that order, visiting only the outputs a tap lands inside the input for.
fn conv_nd<T>(xd: &[T], wd: &[T], bias: Option<&[T]>, [n, c, m, cg, g]: [usize; 5], axes: &[Axis]) -> Vec<T>
where
    T: Copy + Default + Send + Sync + std::ops::AddAssign + std::ops::Mul<Output = T>,
{
    let rank = axes.len();
    let in_strides = crate::tensor::strides(&axes.iter().map(|a| a.input).collect::<Vec<_>>());
    let out_strides = crate::tensor::strides(&axes.iter().map(|a| a.output).collect::<Vec<_>>());
    let in_plane: usize = axes.iter().map(|a| a.input).product();
    let out_plane: usize = axes.iter().map(|a| a.output).product();
    let taps: usize = axes.iter().map(|a| a.kernel).product();
    let m_per_group = m / g;
    let mut y = vec![T::default(); n * m * out_plane];
    if out_plane == 0 {
        return y;
    }
    y.par_chunks_mut(out_plane).enumerate().for_each(|(idx, out)| {
        let (b, oc) = (idx / m, idx % m);
        out.fill(bias.map_or(T::default(), |bv| bv[oc]));
        let group_index = oc / m_per_group;
        let mut tap_index = vec![0usize; rank];
        let mut o = vec![0usize; rank];
        for icg in 0..cg {
            let ic = group_index * cg + icg;
            let input = &xd[(b * c + ic) * in_plane..(b * c + ic + 1) * in_plane];
            let weights = &wd[(oc * cg + icg) * taps..(oc * cg + icg + 1) * taps];
            for (tap, &wv) in weights.iter().enumerate() {
                let mut rest = tap;
                for d in (0..rank).rev() {
                    tap_index[d] = rest % axes[d].kernel;
                    rest /= axes[d].kernel;
                }
                let ranges: Vec<std::ops::Range<usize>> =
                    (0..rank).map(|d| axes[d].valid_outputs(tap_index[d])).collect();
                if ranges.iter().any(|r| r.is_empty()) {
                    continue;
                }
                for d in 0..rank {
                    o[d] = ranges[d].start;
                }
                loop {
                    let (mut at_in, mut at_out) = (0, 0);
                    for d in 0..rank {
                        let a = &axes[d];
                        at_in += (o[d] * a.stride + tap_index[d] * a.dilation - a.pad_begin) * in_strides[d];
                        at_out += o[d] * out_strides[d];
                    }
                    out[at_out] += wv * input[at_in];
                    let mut d = rank;
                    loop {
                        if d == 0 {
                            break;
                        }
                        d -= 1;
                        o[d] += 1;
                        if o[d] < ranges[d].end {
                            break;
                        }
                        o[d] = ranges[d].start;
                        if d == 0 {
                            d = usize::MAX;
                            break;
                        }
                    }
                    if d == usize::MAX || rank == 0 {
                        break;
                    }
                }
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, random_floats, run};
    use crate::tensor::Tensor;

    /// The textbook definition: every output sums over every tap, checking
    /// bounds one by one.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv2d(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        b: Option<&[f32]>,
        stride: [usize; 2],
        pad: [usize; 4],
        dil: [usize; 2],
        group: usize,
    ) -> (Vec<usize>, Vec<f32>) {
        let [n, c, h, wd] = xs;
        let [m, cg, kh, kw] = ws;
        let oh = (h + pad[0] + pad[2] - ((kh - 1) * dil[0] + 1)) / stride[0] + 1;
        let ow = (wd + pad[1] + pad[3] - ((kw - 1) * dil[1] + 1)) / stride[1] + 1;
        let mut y = vec![0.0; n * m * oh * ow];
        for bi in 0..n {
            for oc in 0..m {
                let g = oc / (m / group);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = b.map_or(0.0, |b| b[oc] as f64);
                        for icg in 0..cg {
                            let ic = g * cg + icg;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * stride[0] + ky * dil[0]) as isize - pad[0] as isize;
                                    let ix = (ox * stride[1] + kx * dil[1]) as isize - pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((bi * c + ic) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((oc * cg + icg) * kh + ky) * kw + kx];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((bi * m + oc) * oh + oy) * ow + ox] = s as f32;
                    }
                }
            }
        }
        (vec![n, m, oh, ow], y)
    }

    #[test]
    fn three_d_conv_is_the_sum_of_2d_convs_over_depth() {
        // x [1, 2, 3, 6, 5] (depth 3), w [4, 1, 2, 3, 3] (groups 2, depth taps 2):
        // output depth d = sum over k of 2-D conv of slice d + k with w[.., k].
        let (xs, ws) = ([1usize, 2, 3, 6, 5], [4usize, 1, 2, 3, 3]);
        let x = random_floats(xs.iter().product(), 11);
        let w = random_floats(ws.iter().product(), 12);
        let b = random_floats(4, 13);
        let tx = Tensor::from_f32(xs.to_vec(), x.clone()).unwrap();
        let tw = Tensor::from_f32(ws.to_vec(), w.clone()).unwrap();
        let tb = Tensor::from_f32(vec![4], b.clone()).unwrap();
        let attrs = vec![
            ("group", Attribute::Int(2)),
            ("pads", Attribute::Ints(vec![0, 1, 0, 0, 1, 1])),
            ("strides", Attribute::Ints(vec![1, 2, 1])),
        ];
        let out = run(&node("Conv", 3, attrs), 13, &[&tx, &tw, &tb]).unwrap();
        assert_eq!(out[0].shape(), &[1, 4, 2, 3, 4]);
        let got = out[0].as_f32().unwrap();
        let slice = |d: usize| -> Vec<f32> {
            (0..2).flat_map(|c| x[(c * 3 + d) * 30..(c * 3 + d + 1) * 30].to_vec()).collect()
        };
        let taps =
            |k: usize| -> Vec<f32> { (0..4).flat_map(|m| w[(m * 2 + k) * 9..(m * 2 + k + 1) * 9].to_vec()).collect() };
        for d in 0..2 {
            let mut want = [0.0f32; 4 * 12];
            for k in 0..2 {
                let bias = if k == 0 { Some(b.as_slice()) } else { None };
                let (shape, part) = naive_conv2d(
                    &slice(d + k),
                    [1, 2, 6, 5],
                    &taps(k),
                    [4, 1, 3, 3],
                    bias,
                    [2, 1],
                    [1, 0, 1, 1],
                    [1, 1],
                    2,
                );
                assert_eq!(shape, [1, 4, 3, 4]);
                want.iter_mut().zip(part).for_each(|(a, p)| *a += p);
            }
            for m in 0..4 {
                let got_plane = &got[(m * 2 + d) * 12..(m * 2 + d + 1) * 12];
                assert_close(got_plane, &want[m * 12..(m + 1) * 12]);
            }
        }
    }

    #[test]
    fn conv2d_matches_naive_over_geometries() {
        // (x shape, w shape, strides, pads, dilations, group)
        type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 4], [usize; 2], usize);
        let cases: [Case; 5] = [
            ([2, 1, 28, 28], [32, 1, 3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1),
            ([1, 3, 9, 8], [4, 3, 3, 3], [2, 1], [1, 1, 1, 1], [1, 1], 1),
            ([1, 4, 7, 7], [4, 1, 3, 3], [1, 1], [1, 2, 0, 1], [1, 1], 4),
            ([2, 4, 10, 9], [6, 2, 3, 2], [2, 3], [2, 0, 1, 1], [2, 2], 2),
            ([1, 2, 5, 5], [3, 2, 1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),
        ];
        for (i, (xs, ws, st, pd, dl, g)) in cases.into_iter().enumerate() {
            let x = random_floats(xs.iter().product(), 10 + i as u64);
            let w = random_floats(ws.iter().product(), 20 + i as u64);
            let b = random_floats(ws[0], 30 + i as u64);
            let attrs = vec![
                ("strides", Attribute::Ints(st.iter().map(|&v| v as i64).collect())),
                ("pads", Attribute::Ints(pd.iter().map(|&v| v as i64).collect())),
                ("dilations", Attribute::Ints(dl.iter().map(|&v| v as i64).collect())),
                ("group", Attribute::Int(g as i64)),
            ];
            let out = run(
                &node("Conv", 3, attrs),
                13,
                &[
                    &Tensor::from_f32(xs.to_vec(), x.clone()).unwrap(),
                    &Tensor::from_f32(ws.to_vec(), w.clone()).unwrap(),
                    &Tensor::from_f32(vec![ws[0]], b.clone()).unwrap(),
                ],
            )
            .unwrap();
            let (shape, expected) = naive_conv2d(&x, xs, &w, ws, Some(&b), st, pd, dl, g);
            assert_eq!(out[0].shape(), shape.as_slice(), "case {i}");
            assert_close(out[0].as_f32().unwrap(), &expected);
        }
    }

    #[test]
    fn conv_same_upper_keeps_the_size() {
        let x = random_floats(2 * 6 * 5, 1);
        let w = random_floats(3 * 2 * 3 * 3, 2);
        let attrs = vec![("auto_pad", Attribute::String("SAME_UPPER".into()))];
        let out = run(
            &node("Conv", 2, attrs),
            11,
            &[
                &Tensor::from_f32(vec![1, 2, 6, 5], x.clone()).unwrap(),
                &Tensor::from_f32(vec![3, 2, 3, 3], w.clone()).unwrap(),
            ],
        )
        .unwrap();
        let (_, expected) = naive_conv2d(&x, [1, 2, 6, 5], &w, [3, 2, 3, 3], None, [1, 1], [1, 1, 1, 1], [1, 1], 1);
        assert_eq!(out[0].shape(), &[1, 3, 6, 5]);
        assert_close(out[0].as_f32().unwrap(), &expected);
    }

    #[test]
    fn conv1d_runs_as_a_unit_height_conv2d() {
        let x = random_floats(2 * 3 * 11, 4);
        let w = random_floats(5 * 3 * 4, 5);
        let attrs = vec![("strides", Attribute::Ints(vec![2])), ("pads", Attribute::Ints(vec![1, 2]))];
        let out = run(
            &node("Conv", 2, attrs),
            13,
            &[
                &Tensor::from_f32(vec![2, 3, 11], x.clone()).unwrap(),
                &Tensor::from_f32(vec![5, 3, 4], w.clone()).unwrap(),
            ],
        )
        .unwrap();
        let (shape, expected) =
            naive_conv2d(&x, [2, 3, 1, 11], &w, [5, 3, 1, 4], None, [1, 2], [0, 1, 0, 2], [1, 1], 1);
        assert_eq!(out[0].shape(), &[2, 5, shape[3]]);
        assert_close(out[0].as_f32().unwrap(), &expected);
    }

    #[test]
    fn conv_shape_errors_are_reported() {
        let x = Tensor::from_f32(vec![1, 2, 4, 4], vec![0.0; 32]).unwrap();
        let w = Tensor::from_f32(vec![1, 3, 3, 3], vec![0.0; 27]).unwrap();
        let err = run(&node("Conv", 2, vec![]), 13, &[&x, &w]).unwrap_err();
        assert!(err.0.contains("channels"), "{err}");
        let w = Tensor::from_f32(vec![1, 2, 5, 5], vec![0.0; 50]).unwrap();
        let err = run(&node("Conv", 2, vec![]), 13, &[&x, &w]).unwrap_err();
        assert!(err.0.contains("does not fit"), "{err}");
    }
}
