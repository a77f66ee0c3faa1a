//! Indexing and rearranging on every element type: DepthToSpace,
//! SpaceToDepth, GatherElements, GatherND, ScatterElements, ScatterND,
//! Trilu, OneHot, EyeLike, NonZero, Compress, ReverseSequence, TopK and
//! CumSum and CumProd.
//!
//! As in `movement`, most are a map from each output position to the input
//! element it copies; scatters and masks copy from the inputs and a zero
//! appended behind them.

use std::cmp::Ordering;

use super::movement::{int_list, positions};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, normalize_axis, required};
use crate::tensor::{DataType, Tensor, TensorData, element_count, strides};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("DepthToSpace", 1, MAX_OPSET, build_depth_to_space);
    reg.register("SpaceToDepth", 1, MAX_OPSET, build_depth_to_space);
    reg.register("GatherElements", 11, MAX_OPSET, |ctx| {
        Ok(Box::new(GatherElements { axis: ctx.node.int_attr("axis", 0)? }))
    });
    reg.register("GatherND", 11, MAX_OPSET, |ctx| {
        Ok(Box::new(GatherNd { batch_dims: ctx.node.int_attr("batch_dims", 0)? }))
    });
    reg.register("ScatterElements", 11, MAX_OPSET, build_scatter);
    reg.register("ScatterND", 11, MAX_OPSET, build_scatter);
    // ScatterElements' name before opset 11.
    reg.register("Scatter", 9, 10, build_scatter);
    reg.register("CenterCropPad", 18, MAX_OPSET, |ctx| {
        Ok(Box::new(CenterCropPad { axes: ctx.node.ints_attr("axes")?.map(<[i64]>::to_vec) }))
    });
    reg.register("MaxUnpool", 9, MAX_OPSET, build_max_unpool);
    reg.register("Trilu", 14, MAX_OPSET, |ctx| Ok(Box::new(Trilu { upper: ctx.node.int_attr("upper", 1)? != 0 })));
    reg.register("OneHot", 9, MAX_OPSET, |ctx| Ok(Box::new(OneHot { axis: ctx.node.int_attr("axis", -1)? })));
    reg.register("EyeLike", 9, MAX_OPSET, build_eye_like);
    reg.register("NonZero", 9, MAX_OPSET, |_| Ok(Box::new(NonZero)));
    reg.register("Compress", 9, MAX_OPSET, |ctx| Ok(Box::new(Compress { axis: ctx.node.opt_int_attr("axis")? })));
    reg.register("ReverseSequence", 10, MAX_OPSET, |ctx| {
        Ok(Box::new(ReverseSequence {
            batch_axis: ctx.node.int_attr("batch_axis", 1)?,
            time_axis: ctx.node.int_attr("time_axis", 0)?,
        }))
    });
    reg.register("TopK", 10, MAX_OPSET, build_top_k);
    reg.register("CumSum", 11, MAX_OPSET, build_cumulative);
    reg.register("CumProd", 26, MAX_OPSET, build_cumulative);
}

/// `data` followed by one zero of its type: index `data.len()` reads 0.
fn with_zero(data: &TensorData) -> TensorData {
    let mut out = data.clone();
    out.extend_from(&TensorData::zeros(data.dtype(), 1), 0..1);
    out
}

/// Resolves a possibly negative index against a dim of size `dim`.
fn index_in(i: i64, dim: usize, what: &str) -> Result<usize, KernelError> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if (0..dim as i64).contains(&j) {
        Ok(j as usize)
    } else {
        Err(KernelError(format!("{what} {i} is out of range for a dim of size {dim}")))
    }
}

/// The one element of a scalar (or 1-element) integer input.
fn scalar_int(t: &Tensor, what: &str) -> Result<i64, KernelError> {
    match int_list(t, what)?[..] {
        [v] => Ok(v),
        _ => Err(KernelError(format!("{what} must hold one value, got shape {:?}", t.shape()))),
    }
}

/// DepthToSpace (DCR or CRD) and SpaceToDepth over NCHW.
#[derive(Debug)]
struct DepthToSpace {
    block: usize,
    /// CRD mode: channels vary slowest, then block row, then block column
    /// (DCR: block row, block column, then channel).
    crd: bool,
    to_space: bool,
}

fn build_depth_to_space(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let block = node.int_attr("blocksize", 0)?;
    if block < 1 {
        return Err(BuildError::invalid(node, format!("blocksize must be at least 1, got {block}")));
    }
    let crd = match node.string_attr("mode")?.unwrap_or("DCR") {
        "DCR" => false,
        "CRD" => true,
        other => return Err(BuildError::invalid(node, format!("mode '{other}' is not DCR or CRD"))),
    };
    Ok(Box::new(DepthToSpace { block: block as usize, crd, to_space: node.op == "DepthToSpace" }))
}

impl Kernel for DepthToSpace {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let &[n, c, h, w] = x.shape() else {
            return Err(KernelError(format!("input must have rank 4, got shape {:?}", x.shape())));
        };
        let b = self.block;
        let st = strides(x.shape());
        let (shape, idx) = if self.to_space {
            if c % (b * b) != 0 {
                return Err(KernelError(format!("channels {c} are not a multiple of blocksize² {}", b * b)));
            }
            let oc = c / (b * b);
            let shape = vec![n, oc, h * b, w * b];
            let idx = positions(&shape, |i| {
                let (bh, bw) = (i[2] % b, i[3] % b);
                let ic = if self.crd { i[1] * b * b + bh * b + bw } else { (bh * b + bw) * oc + i[1] };
                i[0] * st[0] + ic * st[1] + (i[2] / b) * st[2] + (i[3] / b) * st[3]
            });
            (shape, idx)
        } else {
            if h % b != 0 || w % b != 0 {
                return Err(KernelError(format!("height {h} and width {w} must be multiples of blocksize {b}")));
            }
            let shape = vec![n, c * b * b, h / b, w / b];
            let idx = positions(&shape, |i| {
                let (block, ic) = if self.crd { (i[1] % (b * b), i[1] / (b * b)) } else { (i[1] / c, i[1] % c) };
                let (bh, bw) = (block / b, block % b);
                i[0] * st[0] + ic * st[1] + (i[2] * b + bh) * st[2] + (i[3] * b + bw) * st[3]
            });
            (shape, idx)
        };
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

/// GatherElements: `out[i] = data[i with dim axis replaced by indices[i]]`.
#[derive(Debug)]
struct GatherElements {
    axis: i64,
}

impl Kernel for GatherElements {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let indices = required(inputs, 1, "indices")?;
        let rank = x.shape().len();
        if indices.shape().len() != rank {
            return Err(KernelError(format!("indices have rank {}, data {rank}", indices.shape().len())));
        }
        let axis = normalize_axis(self.axis, rank)?;
        let picks = int_list(indices, "indices")?
            .into_iter()
            .map(|i| index_in(i, x.shape()[axis], "index"))
            .collect::<Result<Vec<_>, _>>()?;
        let st = strides(x.shape());
        let mut k = 0;
        let mut bad = false;
        let idx = positions(indices.shape(), |i| {
            let at = (0..rank)
                .map(|d| {
                    let v = if d == axis { picks[k] } else { i[d] };
                    bad |= v >= x.shape()[d];
                    v * st[d]
                })
                .sum();
            k += 1;
            at
        });
        if bad {
            return Err(KernelError(format!(
                "indices of shape {:?} reach outside data of shape {:?}",
                indices.shape(),
                x.shape()
            )));
        }
        Ok(vec![Tensor::new(indices.shape().to_vec(), x.data().select(&idx))?])
    }
}

/// The data GatherND and ScatterND address.
struct NdOffsets {
    /// The dims of the grid of index tuples.
    tuples: Vec<usize>,
    /// The dims of the slice each tuple addresses.
    slice: Vec<usize>,
    /// Per tuple, the data offset its slice starts at.
    offsets: Vec<usize>,
}

/// Resolves the index tuples of `indices` (the leading `batch_dims` dims
/// shared with the data) to offsets into data of shape `data`.
fn nd_offsets(data: &[usize], indices: &Tensor, batch_dims: usize) -> Result<NdOffsets, KernelError> {
    let q = indices.shape().len();
    if q == 0 || batch_dims >= q || batch_dims > data.len() || data[..batch_dims] != indices.shape()[..batch_dims] {
        return Err(KernelError(format!(
            "indices of shape {:?} do not fit data of shape {data:?} with batch_dims {batch_dims}",
            indices.shape()
        )));
    }
    let m = indices.shape()[q - 1];
    if batch_dims + m > data.len() {
        return Err(KernelError(format!("index tuples of length {m} are too long for data of shape {data:?}")));
    }
    let values = int_list(indices, "indices")?;
    let st = strides(data);
    let tuples = indices.shape()[..q - 1].to_vec();
    let per_batch: usize = tuples[batch_dims..].iter().product();
    let batch_size: usize = data[batch_dims..].iter().product();
    let offsets = values
        .chunks(m.max(1))
        .take(element_count(&tuples).unwrap_or(0))
        .enumerate()
        .map(|(t, tuple)| {
            // The leading batch dims are row-major, so batch b starts at
            // b times the size of one batch entry.
            let mut at = t / per_batch.max(1) * batch_size;
            for (k, &i) in tuple.iter().take(m).enumerate() {
                at += index_in(i, data[batch_dims + k], "index")? * st[batch_dims + k];
            }
            Ok(at)
        })
        .collect::<Result<Vec<_>, KernelError>>()?;
    Ok(NdOffsets { tuples, slice: data[batch_dims + m..].to_vec(), offsets })
}

#[derive(Debug)]
struct GatherNd {
    batch_dims: i64,
}

impl Kernel for GatherNd {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let indices = required(inputs, 1, "indices")?;
        let NdOffsets { tuples: mut shape, slice, offsets } =
            nd_offsets(x.shape(), indices, self.batch_dims.max(0) as usize)?;
        let len: usize = slice.iter().product();
        let idx: Vec<usize> = offsets.iter().flat_map(|&o| o..o + len).collect();
        shape.extend(slice);
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

/// How a scatter combines an update with the element it lands on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

#[derive(Debug)]
struct Scatter {
    /// ScatterElements' axis; `None` for ScatterND.
    axis: Option<i64>,
    reduction: Reduction,
}

fn build_scatter(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let reduction = match node.string_attr("reduction")?.unwrap_or("none") {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        other => {
            return Err(BuildError::invalid(node, format!("reduction '{other}' is not none, add, mul, max or min")));
        }
    };
    let axis = (node.op != "ScatterND").then(|| node.int_attr("axis", 0)).transpose()?;
    Ok(Box::new(Scatter { axis, reduction }))
}

/// Applies `(target, source)` updates to `data` in order.
fn scatter_into(
    data: &TensorData,
    updates: &TensorData,
    moves: &[(usize, usize)],
    r: Reduction,
) -> Result<TensorData, KernelError> {
    macro_rules! numeric {
        ($v:expr, $u:expr, $variant:ident) => {{
            let mut out = $v.clone();
            for &(t, s) in moves {
                let (a, b) = (out[t], $u[s]);
                out[t] = match r {
                    Reduction::None => b,
                    Reduction::Add => a + b,
                    Reduction::Mul => a * b,
                    Reduction::Max => {
                        if b > a {
                            b
                        } else {
                            a
                        }
                    }
                    Reduction::Min => {
                        if b < a {
                            b
                        } else {
                            a
                        }
                    }
                };
            }
            TensorData::$variant(out)
        }};
    }
    Ok(match (data, updates) {
        (TensorData::Float(v), TensorData::Float(u)) => numeric!(v, u, Float),
        (TensorData::Double(v), TensorData::Double(u)) => numeric!(v, u, Double),
        (TensorData::Int32(v), TensorData::Int32(u)) if r == Reduction::None => numeric!(v, u, Int32),
        (TensorData::Int64(v), TensorData::Int64(u)) if r == Reduction::None => numeric!(v, u, Int64),
        (a, b) if a.dtype() == b.dtype() && r == Reduction::None => {
            // Any element type: copy from data followed by the updates.
            let mut both = a.clone();
            both.extend_from(b, 0..b.len());
            let mut map: Vec<usize> = (0..a.len()).collect();
            for &(t, s) in moves {
                map[t] = a.len() + s;
            }
            both.select(&map)
        }
        (a, b) if a.dtype() != b.dtype() => {
            return Err(KernelError(format!("updates are {} but data is {}", b.dtype(), a.dtype())));
        }
        (a, _) => return Err(KernelError(format!("reduction {r:?} is not supported on {}", a.dtype()))),
    })
}

impl Kernel for Scatter {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let indices = required(inputs, 1, "indices")?;
        let updates = required(inputs, 2, "updates")?;
        let moves: Vec<(usize, usize)> = match self.axis {
            Some(axis) => {
                let rank = x.shape().len();
                let axis = normalize_axis(axis, rank)?;
                if indices.shape() != updates.shape() || indices.shape().len() != rank {
                    return Err(KernelError(format!(
                        "indices {:?} and updates {:?} must have one shape, of data's rank {rank}",
                        indices.shape(),
                        updates.shape()
                    )));
                }
                let picks = int_list(indices, "indices")?;
                let st = strides(x.shape());
                let mut k = 0;
                let mut bad = None;
                let targets = positions(indices.shape(), |i| {
                    let mut at = 0;
                    for d in 0..rank {
                        let v = if d == axis {
                            match index_in(picks[k], x.shape()[d], "index") {
                                Ok(v) => v,
                                Err(e) => {
                                    bad = Some(e);
                                    0
                                }
                            }
                        } else {
                            i[d]
                        };
                        if v >= x.shape()[d] {
                            bad = Some(KernelError(format!("indices reach outside data of shape {:?}", x.shape())));
                        }
                        at += v * st[d];
                    }
                    k += 1;
                    at
                });
                if let Some(e) = bad {
                    return Err(e);
                }
                targets.into_iter().enumerate().map(|(s, t)| (t, s)).collect()
            }
            None => {
                let NdOffsets { tuples, slice, offsets } = nd_offsets(x.shape(), indices, 0)?;
                let mut want = tuples;
                want.extend(&slice);
                if updates.shape() != want {
                    return Err(KernelError(format!("updates must have shape {want:?}, got {:?}", updates.shape())));
                }
                let len: usize = slice.iter().product();
                offsets.iter().enumerate().flat_map(|(t, &o)| (0..len).map(move |j| (o + j, t * len + j))).collect()
            }
        };
        let data = scatter_into(x.data(), updates.data(), &moves, self.reduction)?;
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// Trilu: keeps the upper (or lower) triangle of the last two dims from
/// diagonal `k`, zeroes the rest.
#[derive(Debug)]
struct Trilu {
    upper: bool,
}

impl Kernel for Trilu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let k = match inputs.get(1).copied().flatten() {
            Some(t) => scalar_int(t, "k")?,
            None => 0,
        };
        let r = x.shape().len();
        if r < 2 {
            return Err(KernelError(format!("input must have rank 2 or more, got shape {:?}", x.shape())));
        }
        let (zero, st) = (x.len(), strides(x.shape()));
        let idx = positions(x.shape(), |i| {
            let (row, col) = (i[r - 2] as i64, i[r - 1] as i64);
            let keep = if self.upper { col - row >= k } else { col - row <= k };
            if keep { i.iter().zip(&st).map(|(a, s)| a * s).sum() } else { zero }
        });
        Ok(vec![Tensor::new(x.shape().to_vec(), with_zero(x.data()).select(&idx))?])
    }
}

/// OneHot: `values[1]` where the index matches, `values[0]` elsewhere, on a
/// new axis of size `depth`.
#[derive(Debug)]
struct OneHot {
    axis: i64,
}

impl Kernel for OneHot {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let indices = required(inputs, 0, "indices")?;
        let depth_t = required(inputs, 1, "depth")?;
        let values = required(inputs, 2, "values")?;
        let depth = match depth_t.data() {
            TensorData::Float(v) if v.len() == 1 => v[0] as i64,
            TensorData::Double(v) if v.len() == 1 => v[0] as i64,
            _ => scalar_int(depth_t, "depth")?,
        };
        if depth < 1 {
            return Err(KernelError(format!("depth must be at least 1, got {depth}")));
        }
        if values.len() != 2 {
            return Err(KernelError(format!("values must hold [off, on], got shape {:?}", values.shape())));
        }
        let picks: Vec<i64> = match indices.data() {
            TensorData::Float(v) => v.iter().map(|&a| a as i64).collect(),
            TensorData::Double(v) => v.iter().map(|&a| a as i64).collect(),
            _ => int_list(indices, "indices")?,
        };
        let rank = indices.shape().len() + 1;
        let axis = normalize_axis(self.axis, rank)?;
        let mut shape = indices.shape().to_vec();
        shape.insert(axis, depth as usize);
        let ist = strides(indices.shape());
        let idx = positions(&shape, |i| {
            let at: usize = (0..rank).filter(|&d| d != axis).zip(&ist).map(|(d, s)| i[d] * s).sum();
            let want = if picks[at] < 0 { picks[at] + depth } else { picks[at] };
            usize::from(want == i[axis] as i64)
        });
        Ok(vec![Tensor::new(shape, values.data().select(&idx))?])
    }
}

#[derive(Debug)]
struct EyeLike {
    k: i64,
    dtype: Option<DataType>,
}

fn build_eye_like(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let dtype = match node.opt_int_attr("dtype")? {
        None => None,
        Some(code) => Some(
            super::onnx_dtype(code)
                .ok_or_else(|| BuildError::invalid(node, format!("dtype {code} is not supported")))?,
        ),
    };
    Ok(Box::new(EyeLike { k: node.int_attr("k", 0)?, dtype }))
}

impl Kernel for EyeLike {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let &[rows, cols] = x.shape() else {
            return Err(KernelError(format!("input must have rank 2, got shape {:?}", x.shape())));
        };
        let dtype = self.dtype.unwrap_or(x.dtype());
        let one = match dtype {
            DataType::Float => TensorData::Float(vec![0.0, 1.0]),
            DataType::Double => TensorData::Double(vec![0.0, 1.0]),
            DataType::Int32 => TensorData::Int32(vec![0, 1]),
            DataType::Int64 => TensorData::Int64(vec![0, 1]),
            DataType::UInt8 => TensorData::UInt8(vec![0, 1]),
            DataType::Int8 => TensorData::Int8(vec![0, 1]),
            DataType::Bool => TensorData::Bool(vec![false, true]),
            DataType::String => return Err(KernelError("EyeLike cannot make strings".into())),
        };
        let idx = positions(&[rows, cols], |i| usize::from(i[1] as i64 - i[0] as i64 == self.k));
        Ok(vec![Tensor::new(vec![rows, cols], one.select(&idx))?])
    }
}

/// True for the elements that are not zero (not false, not empty).
fn nonzero_mask(data: &TensorData) -> Vec<bool> {
    match data {
        TensorData::Float(v) => v.iter().map(|&a| a != 0.0).collect(),
        TensorData::Double(v) => v.iter().map(|&a| a != 0.0).collect(),
        TensorData::Int32(v) => v.iter().map(|&a| a != 0).collect(),
        TensorData::Int64(v) => v.iter().map(|&a| a != 0).collect(),
        TensorData::UInt8(v) => v.iter().map(|&a| a != 0).collect(),
        TensorData::Int8(v) => v.iter().map(|&a| a != 0).collect(),
        TensorData::Bool(v) => v.clone(),
        TensorData::String(v) => v.iter().map(|a| !a.is_empty()).collect(),
    }
}

#[derive(Debug)]
struct NonZero;

impl Kernel for NonZero {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let mask = nonzero_mask(x.data());
        let rank = x.shape().len();
        let st = strides(x.shape());
        let hits: Vec<usize> = mask.iter().enumerate().filter(|&(_, &m)| m).map(|(i, _)| i).collect();
        let mut out = vec![0i64; rank * hits.len()];
        for (j, &flat) in hits.iter().enumerate() {
            for d in 0..rank {
                out[d * hits.len() + j] = ((flat / st[d]) % x.shape()[d]) as i64;
            }
        }
        Ok(vec![Tensor::new(vec![rank, hits.len()], TensorData::Int64(out))?])
    }
}

#[derive(Debug)]
struct Compress {
    axis: Option<i64>,
}

impl Kernel for Compress {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let cond = nonzero_mask(required(inputs, 1, "condition")?.data());
        let Some(axis) = self.axis else {
            let idx: Vec<usize> = (0..x.len()).filter(|&i| cond.get(i).copied().unwrap_or(false)).collect();
            return Ok(vec![Tensor::new(vec![idx.len()], x.data().select(&idx))?]);
        };
        let axis = normalize_axis(axis, x.shape().len())?;
        if cond.len() > x.shape()[axis] {
            return Err(KernelError(format!(
                "condition has {} values for a dim of size {}",
                cond.len(),
                x.shape()[axis]
            )));
        }
        let kept: Vec<usize> = (0..cond.len()).filter(|&i| cond[i]).collect();
        let mut shape = x.shape().to_vec();
        shape[axis] = kept.len();
        let st = strides(x.shape());
        let idx = positions(&shape, |i| {
            i.iter().enumerate().map(|(d, &c)| if d == axis { kept[c] } else { c } * st[d]).sum()
        });
        Ok(vec![Tensor::new(shape, x.data().select(&idx))?])
    }
}

#[derive(Debug)]
struct ReverseSequence {
    batch_axis: i64,
    time_axis: i64,
}

impl Kernel for ReverseSequence {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let lens = int_list(required(inputs, 1, "sequence_lens")?, "sequence_lens")?;
        let rank = x.shape().len();
        let (b, t) = (normalize_axis(self.batch_axis, rank)?, normalize_axis(self.time_axis, rank)?);
        if b == t || lens.len() != x.shape()[b] {
            return Err(KernelError(format!(
                "sequence_lens must hold one length per batch entry ({}), and batch_axis differ from time_axis",
                x.shape()[b]
            )));
        }
        if let Some(l) = lens.iter().find(|&&l| l < 0 || l as usize > x.shape()[t]) {
            return Err(KernelError(format!("sequence length {l} is outside 0..={}", x.shape()[t])));
        }
        let st = strides(x.shape());
        let idx = positions(x.shape(), |i| {
            let len = lens[i[b]] as usize;
            (0..rank).map(|d| if d == t && i[t] < len { len - 1 - i[t] } else { i[d] } * st[d]).sum()
        });
        Ok(vec![Tensor::new(x.shape().to_vec(), x.data().select(&idx))?])
    }
}

/// An ordering of the elements of `data` (NaN above everything, as numpy
/// sorts it).
fn element_order(data: &TensorData) -> Result<Box<dyn Fn(usize, usize) -> Ordering + '_>, KernelError> {
    Ok(match data {
        TensorData::Float(v) => {
            Box::new(move |a, b| v[a].partial_cmp(&v[b]).unwrap_or_else(|| v[a].is_nan().cmp(&v[b].is_nan())))
        }
        TensorData::Double(v) => {
            Box::new(move |a, b| v[a].partial_cmp(&v[b]).unwrap_or_else(|| v[a].is_nan().cmp(&v[b].is_nan())))
        }
        TensorData::Int32(v) => Box::new(move |a, b| v[a].cmp(&v[b])),
        TensorData::Int64(v) => Box::new(move |a, b| v[a].cmp(&v[b])),
        TensorData::UInt8(v) => Box::new(move |a, b| v[a].cmp(&v[b])),
        TensorData::Int8(v) => Box::new(move |a, b| v[a].cmp(&v[b])),
        other => return Err(KernelError(format!("cannot order elements of {}", other.dtype()))),
    })
}

/// TopK: the k largest (or smallest) along an axis, with their indices;
/// equal values keep their input order.
#[derive(Debug)]
struct TopK {
    axis: i64,
    largest: bool,
    /// TopK-1's `k` attribute.
    k: Option<i64>,
}

fn build_top_k(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    // `sorted` 0 allows any order; the sorted one is as good as any.
    Ok(Box::new(TopK {
        axis: node.int_attr("axis", -1)?,
        largest: node.int_attr("largest", 1)? != 0,
        k: (ctx.opset < 10).then(|| node.int_attr("k", 1)).transpose()?,
    }))
}

impl Kernel for TopK {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let k = match self.k {
            Some(k) => k,
            None => scalar_int(required(inputs, 1, "K")?, "K")?,
        };
        let axis = normalize_axis(self.axis, x.shape().len())?;
        let n = x.shape()[axis];
        if k < 0 || k as usize > n {
            return Err(KernelError(format!("K {k} is outside 0..={n}, the size of dim {axis}")));
        }
        let k = k as usize;
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let outer: usize = x.shape()[..axis].iter().product();
        let order = element_order(x.data())?;
        let mut picks = Vec::with_capacity(outer * k * inner);
        let mut ids = vec![0i64; outer * k * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut lane: Vec<usize> = (0..n).map(|j| o * n * inner + j * inner + i).collect();
                lane.sort_by(|&a, &b| if self.largest { order(b, a) } else { order(a, b) }.then(a.cmp(&b)));
                for (r, &at) in lane.iter().take(k).enumerate() {
                    ids[o * k * inner + r * inner + i] = ((at / inner) % n) as i64;
                }
                picks.push(lane);
            }
        }
        let mut idx = vec![0usize; outer * k * inner];
        for o in 0..outer {
            for i in 0..inner {
                for r in 0..k {
                    idx[o * k * inner + r * inner + i] = picks[o * inner + i][r];
                }
            }
        }
        let mut shape = x.shape().to_vec();
        shape[axis] = k;
        Ok(vec![Tensor::new(shape.clone(), x.data().select(&idx))?, Tensor::new(shape, TensorData::Int64(ids))?])
    }
}

fn build_cumulative(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(CumSum {
        exclusive: ctx.node.int_attr("exclusive", 0)? != 0,
        reverse: ctx.node.int_attr("reverse", 0)? != 0,
        product: ctx.node.op == "CumProd",
    }))
}

/// CumSum (or CumProd) along the axis given as input 1, optionally
/// exclusive and from the end.
#[derive(Debug)]
struct CumSum {
    product: bool,
    exclusive: bool,
    reverse: bool,
}

impl Kernel for CumSum {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "x")?;
        let axis = normalize_axis(scalar_int(required(inputs, 1, "axis")?, "axis")?, x.shape().len())?;
        let n = x.shape()[axis];
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let outer: usize = x.shape()[..axis].iter().product();
        macro_rules! cumsum {
            ($v:expr, $variant:ident, $zero:expr, $one:expr) => {{
                let start = if self.product { $one } else { $zero };
                let mut out = vec![$zero; $v.len()];
                for o in 0..outer {
                    for i in 0..inner {
                        let mut acc = start;
                        for step in 0..n {
                            let j = if self.reverse { n - 1 - step } else { step };
                            let at = o * n * inner + j * inner + i;
                            let step = |acc, v| if self.product { acc * v } else { acc + v };
                            if self.exclusive {
                                out[at] = acc;
                                acc = step(acc, $v[at]);
                            } else {
                                acc = step(acc, $v[at]);
                                out[at] = acc;
                            }
                        }
                    }
                }
                TensorData::$variant(out)
            }};
        }
        let data = match x.data() {
            TensorData::Float(v) => cumsum!(v, Float, 0.0f32, 1.0f32),
            TensorData::Double(v) => cumsum!(v, Double, 0.0f64, 1.0f64),
            TensorData::Int32(v) => cumsum!(v, Int32, 0i32, 1i32),
            TensorData::Int64(v) => cumsum!(v, Int64, 0i64, 1i64),
            other => {
                return Err(KernelError(format!("x must be a float or int32/int64 tensor, not {}", other.dtype())));
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// CenterCropPad: each listed axis cropped or zero-padded to its target
/// size, centred (the odd element goes to the end).
#[derive(Debug)]
struct CenterCropPad {
    axes: Option<Vec<i64>>,
}

impl Kernel for CenterCropPad {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input_data")?;
        let target = int_list(required(inputs, 1, "shape")?, "shape")?;
        let rank = x.shape().len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&d| normalize_axis(d, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if target.len() != axes.len() || target.iter().any(|&t| t < 0) {
            return Err(KernelError(format!(
                "shape {target:?} must hold one size for each of the {} axes",
                axes.len()
            )));
        }
        let mut shape = x.shape().to_vec();
        // Per axis: the input coordinate of output coordinate 0 (negative
        // when padding).
        let mut shift = vec![0i64; rank];
        for (&a, &t) in axes.iter().zip(&target) {
            let dim = x.shape()[a] as i64;
            shift[a] = if t <= dim { (dim - t) / 2 } else { -((t - dim) / 2) };
            shape[a] = t as usize;
        }
        let st = strides(x.shape());
        let zero = x.len();
        let idx = positions(&shape, |i| {
            let mut at = 0;
            for d in 0..rank {
                let p = i[d] as i64 + shift[d];
                if p < 0 || p >= x.shape()[d] as i64 {
                    return zero;
                }
                at += p as usize * st[d];
            }
            at
        });
        Ok(vec![Tensor::new(shape, with_zero(x.data()).select(&idx))?])
    }
}

/// MaxUnpool: each value placed at its MaxPool index in a zero tensor of
/// the shape the pooling came from (or a larger `output_shape`, top-left).
#[derive(Debug)]
struct MaxUnpool {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    pads: Vec<usize>,
}

fn build_max_unpool(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let kernel: Vec<usize> = node
        .ints_attr("kernel_shape")?
        .ok_or_else(|| BuildError::invalid(node, "attribute 'kernel_shape' is required"))?
        .iter()
        .map(|&k| k.max(1) as usize)
        .collect();
    let r = kernel.len();
    let list = |name: &str, n: usize, default: usize| -> Result<Vec<usize>, BuildError> {
        match node.ints_attr(name)? {
            None => Ok(vec![default; n]),
            Some(v) if v.len() == n && v.iter().all(|&x| x >= 0) => Ok(v.iter().map(|&x| x as usize).collect()),
            Some(v) => Err(BuildError::invalid(node, format!("{name} must hold {n} non-negative values, got {v:?}"))),
        }
    };
    Ok(Box::new(MaxUnpool { strides: list("strides", r, 1)?, pads: list("pads", 2 * r, 0)?, kernel }))
}

impl Kernel for MaxUnpool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let indices = int_list(required(inputs, 1, "I")?, "I")?;
        let r = self.kernel.len();
        if x.shape().len() != r + 2 || indices.len() != x.len() {
            return Err(KernelError(format!(
                "X {:?} and I must have rank {} and one index per value",
                x.shape(),
                r + 2
            )));
        }
        let mut inferred = x.shape()[..2].to_vec();
        for d in 0..r {
            let full = (x.shape()[2 + d].max(1) - 1) * self.strides[d] + self.kernel[d];
            let cut = self.pads[d] + self.pads[r + d];
            inferred
                .push(full.checked_sub(cut).ok_or_else(|| KernelError("the pads exceed the unpooled size".into()))?);
        }
        let shape: Vec<usize> = match inputs.get(2).copied().flatten() {
            Some(t) => {
                let s = int_list(t, "output_shape")?;
                if s.len() != inferred.len() || s.iter().zip(&inferred).any(|(&a, &b)| a < b as i64) {
                    return Err(KernelError(format!("output_shape {s:?} must be at least {inferred:?}")));
                }
                s.iter().map(|&v| v as usize).collect()
            }
            None => inferred.clone(),
        };
        let total = element_count(&inferred).unwrap_or(0);
        let zero = x.len();
        let mut source = vec![zero; total];
        for (k, &i) in indices.iter().enumerate() {
            let i = usize::try_from(i)
                .ok()
                .filter(|&i| i < total)
                .ok_or_else(|| KernelError(format!("index {i} is outside the unpooled tensor of {total} elements")))?;
            source[i] = k;
        }
        let ist = strides(&inferred);
        let idx = positions(&shape, |i| {
            if i.iter().zip(&inferred).any(|(a, b)| a >= b) {
                return zero;
            }
            source[i.iter().zip(&ist).map(|(a, s)| a * s).sum::<usize>()]
        });
        Ok(vec![Tensor::new(shape, with_zero(x.data()).select(&idx))?])
    }
}
