//! Reductions over axes: ReduceSum, ReduceMean, ReduceMax, ReduceMin,
//! ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp,
//! ReduceSumSquare; and ArgMax, ArgMin.
//!
//! The axes come from an attribute up to the opset where each operator
//! moved them to an optional input (13 for ReduceSum, 18 for the others).
//! Floats accumulate in f64; integers in i64 with wrapping, as numpy's
//! integer reductions do.

use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, normalize_axis, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    for op in [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ] {
        reg.register(op, 1, MAX_OPSET, build_reduce);
    }
    reg.register("ArgMax", 1, MAX_OPSET, build_arg);
    reg.register("ArgMin", 1, MAX_OPSET, build_arg);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

#[derive(Debug)]
struct Reduce {
    op: Op,
    keepdims: bool,
    /// Axes from the attribute (before they became an input).
    attr_axes: Option<Vec<i64>>,
    axes_input: bool,
    noop_with_empty_axes: bool,
}

fn build_reduce(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let (op, input_since) = match ctx.node.op.as_str() {
        "ReduceSum" => (Op::Sum, 13),
        "ReduceMean" => (Op::Mean, 18),
        "ReduceMax" => (Op::Max, 18),
        "ReduceMin" => (Op::Min, 18),
        "ReduceProd" => (Op::Prod, 18),
        "ReduceL1" => (Op::L1, 18),
        "ReduceL2" => (Op::L2, 18),
        "ReduceLogSum" => (Op::LogSum, 18),
        "ReduceLogSumExp" => (Op::LogSumExp, 18),
        "ReduceSumSquare" => (Op::SumSquare, 18),
        other => return Err(BuildError::invalid(ctx.node, format!("{other} is not a reduction"))),
    };
    let axes_input = ctx.opset >= input_since;
    let attr_axes = if axes_input { None } else { ctx.node.ints_attr("axes")?.map(<[i64]>::to_vec) };
    Ok(Box::new(Reduce {
        op,
        keepdims: ctx.node.int_attr("keepdims", 1)? != 0,
        attr_axes,
        axes_input,
        noop_with_empty_axes: ctx.node.int_attr("noop_with_empty_axes", 0)? != 0,
    }))
}

/// Where each input element lands in the output of a reduction over
/// `reduced` (per dim), and the output's element count.
fn output_index(shape: &[usize], reduced: &[bool]) -> (Vec<usize>, usize) {
    let rank = shape.len();
    let mut out_strides = vec![0usize; rank];
    let mut size = 1;
    for d in (0..rank).rev() {
        if !reduced[d] {
            out_strides[d] = size;
            size *= shape[d];
        }
    }
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; rank];
    let mut at = 0usize;
    let mut map = Vec::with_capacity(n);
    for _ in 0..n {
        map.push(at);
        for d in (0..rank).rev() {
            idx[d] += 1;
            at += out_strides[d];
            if idx[d] < shape[d] {
                break;
            }
            at -= out_strides[d] * shape[d];
            idx[d] = 0;
        }
    }
    (map, size)
}

fn reduce_f64(op: Op, values: impl Iterator<Item = f64>, map: &[usize], size: usize, count: usize) -> Vec<f64> {
    let init = match op {
        Op::Max | Op::LogSumExp => f64::NEG_INFINITY,
        Op::Min => f64::INFINITY,
        Op::Prod => 1.0,
        _ => 0.0,
    };
    let mut acc = vec![init; size];
    // LogSumExp shifts by the maximum first, so it takes two passes.
    let values: Vec<f64> = values.collect();
    let mut shift = vec![0.0; size];
    if op == Op::LogSumExp {
        let mut max = vec![f64::NEG_INFINITY; size];
        for (&v, &o) in values.iter().zip(map) {
            max[o] = max[o].max(v);
        }
        shift = max.iter().map(|&m| if m.is_finite() { m } else { 0.0 }).collect();
        acc = vec![0.0; size];
    }
    for (&v, &o) in values.iter().zip(map) {
        let a = &mut acc[o];
        *a = match op {
            Op::Sum | Op::Mean | Op::LogSum => *a + v,
            // NaN propagates, as numpy's max and min.
            Op::Max if a.is_nan() || v.is_nan() => f64::NAN,
            Op::Min if a.is_nan() || v.is_nan() => f64::NAN,
            Op::Max => a.max(v),
            Op::Min => a.min(v),
            Op::Prod => *a * v,
            Op::L1 => *a + v.abs(),
            Op::L2 | Op::SumSquare => *a + v * v,
            Op::LogSumExp => *a + (v - shift[o]).exp(),
        };
    }
    for (o, a) in acc.iter_mut().enumerate() {
        *a = match op {
            Op::Mean => *a / count as f64,
            Op::L2 => a.sqrt(),
            Op::LogSum => a.ln(),
            Op::LogSumExp => a.ln() + shift[o],
            _ => *a,
        };
    }
    acc
}

fn reduce_i64(op: Op, values: &[i64], map: &[usize], size: usize, count: usize) -> Vec<i64> {
    let exact = matches!(op, Op::Sum | Op::Max | Op::Min | Op::Prod | Op::L1 | Op::SumSquare);
    if !exact {
        // Mean, L2 and the logarithms go through f64 and truncate, as
        // numpy's float result cast back to the integer type.
        return reduce_f64(op, values.iter().map(|&v| v as f64), map, size, count)
            .into_iter()
            .map(|v| v as i64)
            .collect();
    }
    let init = match op {
        Op::Max => i64::MIN,
        Op::Min => i64::MAX,
        Op::Prod => 1,
        _ => 0,
    };
    let mut acc = vec![init; size];
    for (&v, &o) in values.iter().zip(map) {
        let a = &mut acc[o];
        *a = match op {
            Op::Max => (*a).max(v),
            Op::Min => (*a).min(v),
            Op::Prod => a.wrapping_mul(v),
            Op::L1 => a.wrapping_add(v.wrapping_abs()),
            Op::SumSquare => a.wrapping_add(v.wrapping_mul(v)),
            _ => a.wrapping_add(v),
        };
    }
    acc
}

impl Kernel for Reduce {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let rank = x.shape().len();
        let axes = if self.axes_input {
            match inputs.get(1).copied().flatten() {
                Some(t) => Some(match t.data() {
                    TensorData::Int64(v) => v.clone(),
                    other => return Err(KernelError(format!("axes must be int64, not {}", other.dtype()))),
                }),
                None => None,
            }
        } else {
            self.attr_axes.clone()
        };
        let axes = axes.unwrap_or_default();
        if axes.is_empty() && self.noop_with_empty_axes {
            return Ok(vec![x.clone()]);
        }
        let mut reduced = vec![axes.is_empty(); rank];
        for &a in &axes {
            reduced[normalize_axis(a, rank)?] = true;
        }
        let (map, size) = output_index(x.shape(), &reduced);
        let count = x.shape().iter().zip(&reduced).filter(|(_, r)| **r).map(|(n, _)| n).product::<usize>();
        let shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&reduced)
            .filter_map(|(&n, &r)| match (r, self.keepdims) {
                (false, _) => Some(n),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let op = self.op;
        let data = match x.data() {
            TensorData::Float(v) => TensorData::Float(
                reduce_f64(op, v.iter().map(|&a| f64::from(a)), &map, size, count)
                    .into_iter()
                    .map(|a| a as f32)
                    .collect(),
            ),
            TensorData::Double(v) => TensorData::Double(reduce_f64(op, v.iter().copied(), &map, size, count)),
            TensorData::Int64(v) => TensorData::Int64(reduce_i64(op, v, &map, size, count)),
            TensorData::Int32(v) => {
                let wide: Vec<i64> = v.iter().map(|&a| i64::from(a)).collect();
                TensorData::Int32(reduce_i64(op, &wide, &map, size, count).into_iter().map(|a| a as i32).collect())
            }
            TensorData::UInt8(v) => {
                let wide: Vec<i64> = v.iter().map(|&a| i64::from(a)).collect();
                TensorData::UInt8(reduce_i64(op, &wide, &map, size, count).into_iter().map(|a| a as u8).collect())
            }
            TensorData::Int8(v) => {
                let wide: Vec<i64> = v.iter().map(|&a| i64::from(a)).collect();
                TensorData::Int8(reduce_i64(op, &wide, &map, size, count).into_iter().map(|a| a as i8).collect())
            }
            TensorData::Bool(v) if matches!(op, Op::Max | Op::Min) => {
                let wide: Vec<i64> = v.iter().map(|&a| i64::from(a)).collect();
                let out = reduce_i64(op, &wide, &map, size, count);
                // An empty reduction gives Max = false and Min = true.
                TensorData::Bool(out.into_iter().map(|a| a > 0).collect())
            }
            other => return Err(KernelError(format!("{op:?} does not take {}", other.dtype()))),
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[derive(Debug)]
struct Arg {
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
}

fn build_arg(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Arg {
        max: ctx.node.op == "ArgMax",
        axis: ctx.node.int_attr("axis", 0)?,
        keepdims: ctx.node.int_attr("keepdims", 1)? != 0,
        last: ctx.node.int_attr("select_last_index", 0)? != 0,
    }))
}

impl Arg {
    /// The index of the extreme of `values` (a strided lane); NaN counts as
    /// the extreme, as numpy's argmax and argmin take the first NaN.
    fn pick(&self, len: usize, value: impl Fn(usize) -> f64) -> usize {
        let mut best = 0;
        for i in 1..len {
            let (b, v) = (value(best), value(i));
            if b.is_nan() {
                break;
            }
            let better = v.is_nan() || if self.max { v > b } else { v < b };
            let tie = v == b && self.last;
            if better || tie {
                best = i;
            }
        }
        best
    }
}

impl Kernel for Arg {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let rank = x.shape().len();
        let axis = normalize_axis(self.axis, rank)?;
        let values: Vec<f64> = match x.data() {
            TensorData::Float(v) => v.iter().map(|&a| f64::from(a)).collect(),
            TensorData::Double(v) => v.clone(),
            TensorData::Int32(v) => v.iter().map(|&a| f64::from(a)).collect(),
            TensorData::Int64(v) => v.iter().map(|&a| a as f64).collect(),
            TensorData::UInt8(v) => v.iter().map(|&a| f64::from(a)).collect(),
            TensorData::Int8(v) => v.iter().map(|&a| f64::from(a)).collect(),
            other => {
                return Err(KernelError(format!(
                    "{} does not take {}",
                    if self.max { "ArgMax" } else { "ArgMin" },
                    other.dtype()
                )));
            }
        };
        let len = x.shape()[axis];
        if len == 0 {
            return Err(KernelError(format!("cannot take the arg extreme of an empty dim {axis}")));
        }
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * len * inner + i;
                out.push(self.pick(len, |j| values[base + j * inner]) as i64);
            }
        }
        let mut shape = x.shape().to_vec();
        if self.keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        Ok(vec![Tensor::new(shape, TensorData::Int64(out))?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, run};
    use crate::tensor::Tensor;

    #[test]
    fn reductions_over_axes_with_and_without_keepdims() {
        let x = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let axes = Tensor::from_i64(vec![1], vec![1]).unwrap();
        let out = run(&node("ReduceSum", 2, vec![]), 13, &[&x, &axes]).unwrap();
        assert_eq!(out[0].shape(), [2, 1]);
        assert_eq!(out[0].as_f32().unwrap(), &[6.0, 15.0]);
        let keep0 = vec![("keepdims", Attribute::Int(0)), ("axes", Attribute::Ints(vec![0]))];
        let out = run(&node("ReduceMean", 1, keep0), 13, &[&x]).unwrap();
        assert_eq!(out[0].shape(), [3]);
        assert_eq!(out[0].as_f32().unwrap(), &[2.5, 3.5, 4.5]);
        let out = run(&node("ReduceLogSumExp", 1, vec![("keepdims", Attribute::Int(0))]), 18, &[&x]).unwrap();
        let expected = (1..=6).map(|v| (v as f64).exp()).sum::<f64>().ln() as f32;
        assert!((out[0].as_f32().unwrap()[0] - expected).abs() < 1e-5);
        let empty = Tensor::from_f32(vec![0, 2], vec![]).unwrap();
        let out = run(&node("ReduceMax", 1, vec![("keepdims", Attribute::Int(0))]), 18, &[&empty]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[f32::NEG_INFINITY]);
    }

    #[test]
    fn arg_extremes_take_the_first_or_last() {
        let x = Tensor::from_f32(vec![2, 3], vec![1.0, 5.0, 5.0, 7.0, 2.0, 7.0]).unwrap();
        let out = run(&node("ArgMax", 1, vec![("axis", Attribute::Int(1))]), 13, &[&x]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[1, 0]);
        let last = vec![("axis", Attribute::Int(1)), ("select_last_index", Attribute::Int(1))];
        let out = run(&node("ArgMax", 1, last), 13, &[&x]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[2, 2]);
        let out = run(&node("ArgMin", 1, vec![("keepdims", Attribute::Int(0))]), 13, &[&x]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[0, 1, 0]);
    }
}
