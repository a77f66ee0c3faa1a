//! Data movement on every element type: Shape, Size, Concat, Split,
//! Squeeze, Unsqueeze, Gather, Slice, Expand, Tile, Pad, ConstantOfShape,
//! Range and Dropout (inference).
//!
//! Most of these are written once, as a map from each output position to
//! the input element it copies ([`TensorData::select`]), which is plain and
//! obviously right; faster forms can replace them later.

use super::broadcast::broadcast_shape;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, normalize_axis, required};
use crate::graph::Attribute;
use crate::tensor::{Tensor, TensorData, element_count, strides};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Shape", 1, MAX_OPSET, build_shape);
    reg.register("Size", 1, MAX_OPSET, |_| Ok(Box::new(Size)));
    reg.register("Concat", 4, MAX_OPSET, build_concat);
    reg.register("Split", 2, MAX_OPSET, build_split);
    reg.register("Squeeze", 1, MAX_OPSET, build_squeeze);
    reg.register("Unsqueeze", 1, MAX_OPSET, build_unsqueeze);
    reg.register("Gather", 1, MAX_OPSET, build_gather);
    reg.register("Slice", 1, MAX_OPSET, build_slice);
    reg.register("Expand", 8, MAX_OPSET, |_| Ok(Box::new(Expand)));
    reg.register("Tile", 6, MAX_OPSET, |_| Ok(Box::new(Tile)));
    reg.register("Pad", 2, MAX_OPSET, build_pad);
    reg.register("ConstantOfShape", 9, MAX_OPSET, build_constant_of_shape);
    reg.register("Range", 11, MAX_OPSET, |_| Ok(Box::new(Range)));
    reg.register("Dropout", 1, MAX_OPSET, build_dropout);
}

/// An integer tensor (int64 or int32) as i64s.
pub(super) fn int_list(t: &Tensor, what: &str) -> Result<Vec<i64>, KernelError> {
    match t.data() {
        TensorData::Int64(v) => Ok(v.clone()),
        TensorData::Int32(v) => Ok(v.iter().map(|&x| i64::from(x)).collect()),
        _ => Err(KernelError(format!("{what} must be int64 or int32, not {}", t.dtype()))),
    }
}

/// For every position of `out_shape` in row-major order, the index `source`
/// gives for its coordinates.
pub(super) fn positions(out_shape: &[usize], mut source: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n: usize = out_shape.iter().product();
    let mut idx = vec![0usize; out_shape.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(source(&idx));
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn int64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor, KernelError> {
    Ok(Tensor::new(shape, TensorData::Int64(data))?)
}

#[derive(Debug)]
struct Shape {
    start: i64,
    end: Option<i64>,
}

fn build_shape(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let end = ctx.node.opt_int_attr("end")?;
    Ok(Box::new(Shape { start: ctx.node.int_attr("start", 0)?, end }))
}

impl Kernel for Shape {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let r = x.shape().len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (start, end) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let dims: Vec<i64> = x.shape()[start..end.max(start)].iter().map(|&d| d as i64).collect();
        Ok(vec![int64(vec![dims.len()], dims)?])
    }
}

#[derive(Debug)]
struct Size;

impl Kernel for Size {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        Ok(vec![int64(vec![], vec![x.len() as i64])?])
    }
}

#[derive(Debug)]
struct Concat {
    axis: i64,
}

fn build_concat(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    if !ctx.node.attributes.contains_key("axis") {
        return Err(BuildError::invalid(ctx.node, "the axis attribute is required"));
    }
    Ok(Box::new(Concat { axis: ctx.node.int_attr("axis", 0)? }))
}

impl Kernel for Concat {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let parts: Vec<&Tensor> = inputs.iter().copied().flatten().collect();
        let first = parts.first().ok_or_else(|| KernelError("Concat needs at least one input".into()))?;
        let rank = first.shape().len();
        let axis = normalize_axis(self.axis, rank)?;
        let mut shape = first.shape().to_vec();
        shape[axis] = 0;
        for p in &parts {
            let fits = p.shape().len() == rank
                && p.shape().iter().enumerate().all(|(d, &n)| d == axis || n == first.shape()[d]);
            if !fits || p.dtype() != first.dtype() {
                return Err(KernelError(format!(
                    "Concat inputs must share dtype and all dims but {axis}: {} {:?} vs {} {:?}",
                    first.dtype(),
                    first.shape(),
                    p.dtype(),
                    p.shape()
                )));
            }
            shape[axis] += p.shape()[axis];
        }
        let outer: usize = shape[..axis].iter().product();
        let mut data = TensorData::zeros(first.dtype(), 0);
        for o in 0..outer {
            for p in &parts {
                let chunk: usize = p.shape()[axis..].iter().product();
                data.extend_from(p.data(), o * chunk..(o + 1) * chunk);
            }
        }
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// Split along `axis` into the node's outputs: sizes from the `split`
/// attribute (before opset 13) or input, else equal parts (the last one
/// smaller when `num_outputs` does not divide the dim, opset 18).
#[derive(Debug)]
struct Split {
    axis: i64,
    outputs: usize,
    sizes: Option<Vec<i64>>,
}

fn build_split(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let sizes = if ctx.opset < 13 { ctx.node.ints_attr("split")?.map(<[i64]>::to_vec) } else { None };
    Ok(Box::new(Split { axis: ctx.node.int_attr("axis", 0)?, outputs: ctx.node.outputs.len(), sizes }))
}

impl Kernel for Split {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let axis = normalize_axis(self.axis, x.shape().len())?;
        let dim = x.shape()[axis];
        let sizes: Vec<usize> = match (inputs.get(1).copied().flatten(), &self.sizes) {
            (Some(t), _) => int_list(t, "split")?.iter().map(|&s| s.max(0) as usize).collect(),
            (None, Some(s)) => s.iter().map(|&s| s.max(0) as usize).collect(),
            (None, None) => {
                let part = dim.div_ceil(self.outputs.max(1));
                (0..self.outputs).map(|i| part.min(dim.saturating_sub(i * part))).collect()
            }
        };
        if sizes.len() != self.outputs || sizes.iter().sum::<usize>() != dim {
            return Err(KernelError(format!(
                "split sizes {sizes:?} must be {} parts summing to dim {axis} ({dim})",
                self.outputs
            )));
        }
        let st = strides(x.shape());
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let mut shape = x.shape().to_vec();
                shape[axis] = n;
                let offset = start;
                start += n;
                let idx = positions(&shape, |i| {
                    i.iter().enumerate().map(|(d, &v)| (if d == axis { v + offset } else { v }) * st[d]).sum()
                });
                Ok(Tensor::new(shape, x.data().select(&idx))?)
            })
            .collect()
    }
}

/// Axes from an attribute (older opsets) or an optional int64 input.
#[derive(Debug)]
struct Axes {
    attr: Option<Vec<i64>>,
    from_input: bool,
}

impl Axes {
    fn new(ctx: &BuildContext<'_>, input_since: i64) -> Result<Axes, BuildError> {
        let from_input = ctx.opset >= input_since;
        let attr = if from_input { None } else { ctx.node.ints_attr("axes")?.map(<[i64]>::to_vec) };
        Ok(Axes { attr, from_input })
    }

    fn get(&self, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>, KernelError> {
        if self.from_input {
            inputs.get(1).copied().flatten().map(|t| int_list(t, "axes")).transpose()
        } else {
            Ok(self.attr.clone())
        }
    }
}

#[derive(Debug)]
struct Squeeze(Axes);

fn build_squeeze(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Squeeze(Axes::new(ctx, 13)?)))
}

impl Kernel for Squeeze {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let rank = x.shape().len();
        let drop: Vec<usize> = match self.0.get(inputs)? {
            None => (0..rank).filter(|&d| x.shape()[d] == 1).collect(),
            Some(axes) => {
                let axes = axes.iter().map(|&a| normalize_axis(a, rank)).collect::<Result<Vec<_>, _>>()?;
                if let Some(&d) = axes.iter().find(|&&d| x.shape()[d] != 1) {
                    return Err(KernelError(format!("cannot squeeze dim {d} of size {}", x.shape()[d])));
                }
                axes
            }
        };
        let shape = x.shape().iter().enumerate().filter(|(d, _)| !drop.contains(d)).map(|(_, &n)| n).collect();
        Ok(vec![x.clone().reshape(shape)?])
    }
}

#[derive(Debug)]
struct Unsqueeze(Axes);

fn build_unsqueeze(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Unsqueeze(Axes::new(ctx, 13)?)))
}

impl Kernel for Unsqueeze {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let axes = self.0.get(inputs)?.ok_or_else(|| KernelError("Unsqueeze needs axes".into()))?;
        let rank = x.shape().len() + axes.len();
        let mut axes = axes.iter().map(|&a| normalize_axis(a, rank)).collect::<Result<Vec<_>, _>>()?;
        axes.sort_unstable();
        if axes.windows(2).any(|w| w[0] == w[1]) {
            return Err(KernelError(format!("Unsqueeze axes {axes:?} repeat an axis")));
        }
        let mut dims = x.shape().iter();
        let shape = (0..rank).map(|d| if axes.contains(&d) { 1 } else { *dims.next().unwrap_or(&1) }).collect();
        Ok(vec![x.clone().reshape(shape)?])
    }
}

#[derive(Debug)]
struct Gather {
    axis: i64,
}

fn build_gather(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Gather { axis: ctx.node.int_attr("axis", 0)? }))
}

impl Kernel for Gather {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let indices = required(inputs, 1, "indices")?;
        let axis = normalize_axis(self.axis, x.shape().len())?;
        let dim = x.shape()[axis] as i64;
        let picks = int_list(indices, "indices")?
            .into_iter()
            .map(|i| {
                let j = if i < 0 { i + dim } else { i };
                if (0..dim).contains(&j) {
                    Ok(j as usize)
                } else {
                    Err(KernelError(format!("index {i} is out of range for dim {axis} of size {dim}")))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut shape = x.shape()[..axis].to_vec();
        shape.extend_from_slice(indices.shape());
        shape.extend_from_slice(&x.shape()[axis + 1..]);
        let st = strides(x.shape());
        let (ir, xr) = (indices.shape().len(), x.shape().len());
        let ist = strides(indices.shape());
        let idx = positions(&shape, |i| {
            let pick: usize = (0..ir).map(|k| i[axis + k] * ist[k]).sum();
            let mut at = picks[pick] * st[axis];
            at += (0..axis).map(|d| i[d] * st[d]).sum::<usize>();
            at += (axis + 1..xr).map(|d| i[d + ir - 1] * st[d]).sum::<usize>();
            at
        });
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

/// Slice: starts, ends, axes and steps from attributes (before opset 10) or
/// inputs, clamped as numpy clamps.
#[derive(Debug)]
struct Slice {
    attrs: Option<SliceAttrs>,
}

/// Slice's attributes before opset 10: starts, ends and optional axes.
type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

fn build_slice(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    if ctx.opset >= 10 {
        return Ok(Box::new(Slice { attrs: None }));
    }
    let list = |name: &str| -> Result<Vec<i64>, BuildError> {
        Ok(ctx
            .node
            .ints_attr(name)?
            .ok_or_else(|| BuildError::invalid(ctx.node, format!("{name} is required")))?
            .to_vec())
    };
    let axes = ctx.node.ints_attr("axes")?.map(<[i64]>::to_vec);
    Ok(Box::new(Slice { attrs: Some((list("starts")?, list("ends")?, axes)) }))
}

impl Kernel for Slice {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let opt = |i: usize, what: &str| inputs.get(i).copied().flatten().map(|t| int_list(t, what)).transpose();
        let (starts, ends, axes, steps) = match &self.attrs {
            Some((s, e, a)) => (s.clone(), e.clone(), a.clone(), None),
            None => (
                int_list(required(inputs, 1, "starts")?, "starts")?,
                int_list(required(inputs, 2, "ends")?, "ends")?,
                opt(3, "axes")?,
                opt(4, "steps")?,
            ),
        };
        let rank = x.shape().len();
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(KernelError("starts, ends, axes and steps must have one length".into()));
        }
        let mut begin = vec![0i64; rank];
        let mut step = vec![1i64; rank];
        let mut shape = x.shape().to_vec();
        for k in 0..starts.len() {
            let d = normalize_axis(axes[k], rank)?;
            let n = x.shape()[d] as i64;
            let s = steps[k];
            if s == 0 {
                return Err(KernelError("slice step must not be 0".into()));
            }
            let wrap = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
            let (b, e) = if s > 0 {
                (wrap(starts[k]).clamp(0, n), wrap(ends[k]).clamp(0, n))
            } else {
                (wrap(starts[k]).clamp(0, n - 1), wrap(ends[k]).clamp(-1, n - 1))
            };
            let len = if s > 0 { (e - b + s - 1).div_euclid(s) } else { (b - e + (-s) - 1).div_euclid(-s) };
            begin[d] = b;
            step[d] = s;
            shape[d] = len.max(0) as usize;
        }
        let st = strides(x.shape());
        let idx = positions(&shape, |i| {
            i.iter().enumerate().map(|(d, &v)| (begin[d] + v as i64 * step[d]) as usize * st[d]).sum()
        });
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

/// The index in `from` (broadcast to `to`) of each position of `to`.
fn broadcast_positions(from: &[usize], to: &[usize]) -> Vec<usize> {
    let st = strides(from);
    let lead = to.len() - from.len();
    positions(to, |i| (0..from.len()).map(|d| if from[d] == 1 { 0 } else { i[lead + d] * st[d] }).sum())
}

#[derive(Debug)]
struct Expand;

impl Kernel for Expand {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let dims = int_list(required(inputs, 1, "shape")?, "shape")?;
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            return Err(KernelError(format!("Expand's shape has a negative dim {d}")));
        }
        let target: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let shape = broadcast_shape(x.shape(), &target)?;
        let idx = broadcast_positions(x.shape(), &shape);
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

#[derive(Debug)]
struct Tile;

impl Kernel for Tile {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let repeats = int_list(required(inputs, 1, "repeats")?, "repeats")?;
        if repeats.len() != x.shape().len() || repeats.iter().any(|&r| r < 0) {
            return Err(KernelError(format!(
                "repeats {repeats:?} must hold one count of 0 or more per dim of {:?}",
                x.shape()
            )));
        }
        let shape: Vec<usize> = x.shape().iter().zip(&repeats).map(|(&n, &r)| n * r as usize).collect();
        element_count(&shape).ok_or_else(|| KernelError(format!("tiled shape {shape:?} overflows")))?;
        let st = strides(x.shape());
        let idx = positions(&shape, |i| i.iter().enumerate().map(|(d, &v)| (v % x.shape()[d]) * st[d]).sum());
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Pad: pads (and the constant value) from attributes before opset 11, from
/// inputs after; `axes` (opset 18) limits the padded dims.
#[derive(Debug)]
struct Pad {
    mode: PadMode,
    attrs: Option<(Vec<i64>, f32)>,
}

fn build_pad(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let mode = match ctx.node.string_attr("mode")?.unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(BuildError::invalid(ctx.node, format!("unknown mode \"{other}\""))),
    };
    let attrs = if ctx.opset < 11 {
        let pads = ctx.node.ints_attr("pads")?.ok_or_else(|| BuildError::invalid(ctx.node, "pads is required"))?;
        Some((pads.to_vec(), ctx.node.float_attr("value", 0.0)?))
    } else {
        None
    };
    Ok(Box::new(Pad { mode, attrs }))
}

impl Kernel for Pad {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let rank = x.shape().len();
        let (pads, fill) = match &self.attrs {
            Some((pads, value)) => {
                (pads.clone(), Tensor::new(vec![], TensorData::Float(vec![*value])).map_err(KernelError::from)?)
            }
            None => {
                let pads = int_list(required(inputs, 1, "pads")?, "pads")?;
                let fill = match inputs.get(2).copied().flatten() {
                    Some(v) if v.len() == 1 => v.clone(),
                    Some(v) => {
                        return Err(KernelError(format!("constant_value must be one value, got {:?}", v.shape())));
                    }
                    None => Tensor::new(vec![1], TensorData::zeros(x.dtype(), 1))?,
                };
                (pads, fill)
            }
        };
        // Pads per padded axis (all of them unless `axes` says otherwise).
        let axes: Vec<usize> = match inputs.get(3).copied().flatten() {
            Some(t) => int_list(t, "axes")?.iter().map(|&a| normalize_axis(a, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(KernelError(format!("pads {pads:?} must hold 2 values per padded axis ({})", axes.len())));
        }
        let mut before = vec![0i64; rank];
        let mut after = vec![0i64; rank];
        for (k, &d) in axes.iter().enumerate() {
            before[d] = pads[k];
            after[d] = pads[k + axes.len()];
        }
        let mut shape = Vec::with_capacity(rank);
        for d in 0..rank {
            let n = x.shape()[d] as i64 + before[d] + after[d];
            if n < 0 {
                return Err(KernelError(format!("pads {pads:?} remove more than dim {d} holds")));
            }
            shape.push(n as usize);
        }
        let mut src = x.data().clone();
        if !src.extend_from(fill.data(), 0..1) {
            return Err(KernelError(format!("constant_value is {} but data is {}", fill.dtype(), x.dtype())));
        }
        let fill_at = x.len();
        let st = strides(x.shape());
        let mode = self.mode;
        if mode != PadMode::Constant && x.is_empty() && !shape.contains(&0) {
            return Err(KernelError(format!("{mode:?} padding needs a non-empty input")));
        }
        let idx = positions(&shape, |i| {
            let mut at = 0;
            for d in 0..rank {
                let n = x.shape()[d] as i64;
                let mut v = i[d] as i64 - before[d];
                if v < 0 || v >= n {
                    v = match mode {
                        PadMode::Constant => return fill_at,
                        PadMode::Edge => v.clamp(0, n - 1),
                        PadMode::Wrap => v.rem_euclid(n),
                        PadMode::Reflect => {
                            if n == 1 {
                                0
                            } else {
                                let period = 2 * (n - 1);
                                let r = v.rem_euclid(period);
                                if r < n { r } else { period - r }
                            }
                        }
                    };
                }
                at += v as usize * st[d];
            }
            at
        });
        Ok(vec![Tensor::new(shape, src.select(&idx))?])
    }
}

#[derive(Debug)]
struct ConstantOfShape {
    value: Tensor,
}

fn build_constant_of_shape(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let value = match ctx.node.attributes.get("value") {
        None => Tensor::new(vec![1], TensorData::Float(vec![0.0]))
            .map_err(|e| BuildError::invalid(ctx.node, e.to_string()))?,
        Some(Attribute::Tensor(t)) if t.len() == 1 => t.clone(),
        Some(_) => return Err(BuildError::invalid(ctx.node, "value must be a one-element tensor")),
    };
    Ok(Box::new(ConstantOfShape { value }))
}

impl Kernel for ConstantOfShape {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let dims = int_list(required(inputs, 0, "input")?, "input")?;
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            return Err(KernelError(format!("ConstantOfShape's shape has a negative dim {d}")));
        }
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let n = element_count(&shape).ok_or_else(|| KernelError(format!("shape {shape:?} overflows")))?;
        Ok(vec![Tensor::new(shape, self.value.data().select(&vec![0; n]))?])
    }
}

#[derive(Debug)]
struct Range;

/// The count of Range's elements: max(ceil((limit - start) / delta), 0).
fn range_len(start: f64, limit: f64, delta: f64) -> Result<usize, KernelError> {
    if delta == 0.0 {
        return Err(KernelError("Range's delta must not be 0".into()));
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    if n > (1u64 << 40) as f64 || n.is_nan() {
        return Err(KernelError(format!("Range would hold {n} elements")));
    }
    Ok(n as usize)
}

impl Kernel for Range {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let start = required(inputs, 0, "start")?;
        let limit = required(inputs, 1, "limit")?;
        let delta = required(inputs, 2, "delta")?;
        let data = match (start.data(), limit.data(), delta.data()) {
            (TensorData::Float(s), TensorData::Float(l), TensorData::Float(d))
                if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
            {
                let n = range_len(f64::from(s[0]), f64::from(l[0]), f64::from(d[0]))?;
                TensorData::Float((0..n).map(|i| s[0] + i as f32 * d[0]).collect())
            }
            (TensorData::Double(s), TensorData::Double(l), TensorData::Double(d))
                if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
            {
                let n = range_len(s[0], l[0], d[0])?;
                TensorData::Double((0..n).map(|i| s[0] + i as f64 * d[0]).collect())
            }
            (TensorData::Int32(s), TensorData::Int32(l), TensorData::Int32(d))
                if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
            {
                let n = range_len(f64::from(s[0]), f64::from(l[0]), f64::from(d[0]))?;
                TensorData::Int32((0..n).map(|i| s[0].wrapping_add((i as i32).wrapping_mul(d[0]))).collect())
            }
            (TensorData::Int64(s), TensorData::Int64(l), TensorData::Int64(d))
                if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
            {
                let n = range_len(s[0] as f64, l[0] as f64, d[0] as f64)?;
                TensorData::Int64((0..n).map(|i| s[0].wrapping_add((i as i64).wrapping_mul(d[0]))).collect())
            }
            _ => {
                return Err(KernelError(format!(
                    "Range takes three scalars of one type (float, double, int32, int64), got {}, {}, {}",
                    start.dtype(),
                    limit.dtype(),
                    delta.dtype()
                )));
            }
        };
        Ok(vec![Tensor::new(vec![data.len()], data)?])
    }
}

/// Dropout at inference: the input unchanged, and an all-true mask when the
/// node asks for one. Training mode (a true `training_mode` input) is
/// refused: a server does not train.
#[derive(Debug)]
struct Dropout {
    mask: bool,
}

fn build_dropout(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    if ctx.opset < 7 && ctx.node.int_attr("is_test", 0)? == 0 {
        return Err(BuildError::invalid(ctx.node, "Dropout in training mode (is_test = 0) is not supported"));
    }
    Ok(Box::new(Dropout { mask: ctx.node.outputs.len() > 1 }))
}

impl Kernel for Dropout {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        if let Some(t) = inputs.get(2).copied().flatten()
            && t.data() != &TensorData::Bool(vec![false])
        {
            // Training mode drops at random, which a server never does; a
            // ratio of 0 drops nothing and so answers as inference does.
            let ratio = match inputs.get(1).copied().flatten().map(Tensor::data) {
                Some(TensorData::Float(v)) if v.len() == 1 => f64::from(v[0]),
                Some(TensorData::Double(v)) if v.len() == 1 => v[0],
                _ => 0.5,
            };
            if ratio != 0.0 {
                return Err(KernelError(format!(
                    "Dropout in training mode with ratio {ratio} drops values at random; export the model for inference (training_mode false)"
                )));
            }
        }
        let mut out = vec![x.clone()];
        if self.mask {
            out.push(Tensor::new(x.shape().to_vec(), TensorData::Bool(vec![true; x.len()]))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, run};
    use crate::tensor::{Tensor, TensorData};

    fn iota(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>() as i64;
        Tensor::from_i64(shape, (0..n).collect()).unwrap()
    }

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn concat_and_split_invert_each_other() {
        let a = iota(vec![2, 2]);
        let b = iota(vec![2, 1]);
        let out = run(&node("Concat", 2, vec![("axis", Attribute::Int(-1))]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].shape(), [2, 3]);
        assert_eq!(out[0].as_i64().unwrap(), &[0, 1, 0, 2, 3, 1]);
        let mut split = node("Split", 2, vec![("axis", Attribute::Int(1))]);
        split.outputs = vec![2, 3];
        let parts = run(&split, 13, &[&out[0], &ints(&[2, 1])]).unwrap();
        assert_eq!(parts[0], a);
        assert_eq!(parts[1], b);
    }

    #[test]
    fn gather_slice_and_squeeze() {
        let x = iota(vec![3, 4]);
        let out = run(&node("Gather", 2, vec![("axis", Attribute::Int(1))]), 13, &[&x, &ints(&[-1, 0])]).unwrap();
        assert_eq!(out[0].shape(), [3, 2]);
        assert_eq!(out[0].as_i64().unwrap(), &[3, 0, 7, 4, 11, 8]);
        assert!(run(&node("Gather", 2, vec![]), 13, &[&x, &ints(&[3])]).is_err(), "out of range");
        // x[::-1, 1:100:2]
        let out = run(
            &node("Slice", 5, vec![]),
            13,
            &[&x, &ints(&[-1, 1]), &ints(&[i64::MIN, 100]), &ints(&[0, 1]), &ints(&[-1, 2])],
        )
        .unwrap();
        assert_eq!(out[0].shape(), [3, 2]);
        assert_eq!(out[0].as_i64().unwrap(), &[9, 11, 5, 7, 1, 3]);
        let y = iota(vec![1, 3, 1]);
        let out = run(&node("Squeeze", 1, vec![]), 13, &[&y]).unwrap();
        assert_eq!(out[0].shape(), [3]);
        let out = run(&node("Unsqueeze", 2, vec![]), 13, &[&out[0], &ints(&[0, -1])]).unwrap();
        assert_eq!(out[0].shape(), [1, 3, 1]);
    }

    #[test]
    fn expand_tile_and_pad() {
        let x = iota(vec![2, 1]);
        let out = run(&node("Expand", 2, vec![]), 13, &[&x, &ints(&[2, 1, 3])]).unwrap();
        assert_eq!(out[0].shape(), [2, 2, 3]);
        let out = run(&node("Tile", 2, vec![]), 13, &[&x, &ints(&[1, 2])]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[0, 0, 1, 1]);
        let row = Tensor::from_f32(vec![1, 3], vec![1.0, 2.0, 3.0]).unwrap();
        let reflect = vec![("mode", Attribute::String("reflect".into()))];
        let out = run(&node("Pad", 2, reflect), 13, &[&row, &ints(&[0, 2, 0, 1])]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[3.0, 2.0, 1.0, 2.0, 3.0, 2.0]);
        let value = Tensor::from_f32(vec![], vec![9.0]).unwrap();
        let out = run(&node("Pad", 3, vec![]), 13, &[&row, &ints(&[0, 1, 0, 0]), &value]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[9.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn shape_range_and_constants() {
        let x = iota(vec![2, 3, 4]);
        let out = run(&node("Shape", 1, vec![("start", Attribute::Int(-2))]), 15, &[&x]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[3, 4]);
        let s = |v| Tensor::from_i64(vec![], vec![v]).unwrap();
        let out = run(&node("Range", 3, vec![]), 11, &[&s(10), &s(4), &s(-3)]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[10, 7]);
        let out = run(&node("ConstantOfShape", 1, vec![]), 9, &[&ints(&[2, 2])]).unwrap();
        assert_eq!(out[0].data(), &TensorData::Float(vec![0.0; 4]));
    }
}
