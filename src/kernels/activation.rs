//! Activations: Relu, Softmax, LogSoftmax and Hardmax (the elementwise ones
//! live in `unary.rs`).

use rayon::prelude::*;

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, normalize_axis, required,
};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Relu", 6, MAX_OPSET, |_| Ok(Box::new(Relu)));
    reg.register("Softmax", 1, MAX_OPSET, build_softmax);
    reg.register("LogSoftmax", 1, MAX_OPSET, build_softmax);
    reg.register("Hardmax", 1, MAX_OPSET, build_softmax);
}

#[derive(Debug)]
struct Relu;

impl Kernel for Relu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let data = floats(x, "X")?;
        // NaN stays NaN, as in onnxruntime and TensorFlow.
        let out = data.iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect();
        Ok(vec![Tensor::from_f32(x.shape().to_vec(), out)?])
    }
}

/// Softmax along one axis (opset 13 and later), or over the flattened
/// trailing dims from `axis` on (opsets 1 to 12, where the input is coerced
/// to 2-D).
#[derive(Debug)]
struct Softmax {
    axis: i64,
    coerce_2d: bool,
    /// LogSoftmax: x - max - ln(sum(exp(x - max))).
    log: bool,
    /// Hardmax: 1 at the first maximum of each lane, 0 elsewhere.
    hard: bool,
}

fn build_softmax(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let coerce_2d = ctx.opset < 13;
    let axis = ctx.node.int_attr("axis", if coerce_2d { 1 } else { -1 })?;
    Ok(Box::new(Softmax { axis, coerce_2d, log: ctx.node.op == "LogSoftmax", hard: ctx.node.op == "Hardmax" }))
}

/// Normalises every [n] lane (stride `inner`) of `data`, viewed as
/// [outer, n, inner]; with `log`, writes the log of the result. Written once
/// for f32 and f64.
macro_rules! softmax_lanes {
    ($data:expr, $t:ty, $n:expr, $inner:expr, $log:expr) => {{
        let (n, inner, log) = ($n, $inner, $log);
        $data.par_chunks_mut(n * inner).for_each(|block| {
            for i in 0..inner {
                let max = (0..n).map(|j| block[j * inner + i]).fold(<$t>::NEG_INFINITY, <$t>::max);
                if log {
                    let sum: $t = (0..n).map(|j| (block[j * inner + i] - max).exp()).sum();
                    let offset = max + sum.ln();
                    for j in 0..n {
                        block[j * inner + i] -= offset;
                    }
                    continue;
                }
                let mut sum: $t = 0.0;
                for j in 0..n {
                    let e = (block[j * inner + i] - max).exp();
                    block[j * inner + i] = e;
                    sum += e;
                }
                for j in 0..n {
                    block[j * inner + i] /= sum;
                }
            }
        });
    }};
}

impl Kernel for Softmax {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len())?;
        // View the tensor as [outer, n, inner] and normalise over n.
        let outer: usize = shape[..axis].iter().product();
        let (n, inner) = if self.coerce_2d {
            (shape[axis..].iter().product::<usize>(), 1)
        } else {
            (shape.get(axis).copied().unwrap_or(1), shape[axis + 1..].iter().product())
        };
        let mut data = x.data().clone();
        if self.hard {
            macro_rules! hardmax {
                ($v:expr) => {
                    $v.par_chunks_mut((n * inner).max(1)).for_each(|block| {
                        for i in 0..inner {
                            let best =
                                (0..n).fold(0, |b, j| if block[j * inner + i] > block[b * inner + i] { j } else { b });
                            for j in 0..n {
                                block[j * inner + i] = if j == best { 1.0 } else { 0.0 };
                            }
                        }
                    })
                };
            }
            match &mut data {
                TensorData::Float(v) => hardmax!(v),
                TensorData::Double(v) => hardmax!(v),
                other => {
                    return Err(KernelError(format!("input must be DT_FLOAT or DT_DOUBLE but is {}", other.dtype())));
                }
            }
            return Ok(vec![Tensor::new(shape.to_vec(), data)?]);
        }
        if n > 0 && outer > 0 && inner > 0 {
            match &mut data {
                TensorData::Float(v) => softmax_lanes!(v, f32, n, inner, self.log),
                TensorData::Double(v) => softmax_lanes!(v, f64, n, inner, self.log),
                other => {
                    return Err(KernelError(format!("input must be DT_FLOAT or DT_DOUBLE but is {}", other.dtype())));
                }
            }
        }
        Ok(vec![Tensor::new(shape.to_vec(), data)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, random_floats, run};
    use crate::tensor::Tensor;

    fn naive_softmax(row: &[f32]) -> Vec<f32> {
        let e: Vec<f64> = row.iter().map(|&v| (v as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| (v / s) as f32).collect()
    }

    #[test]
    fn relu_zeroes_negatives() {
        let x = Tensor::from_f32(vec![4], vec![-1.0, 0.0, 2.5, -0.0]).unwrap();
        let out = run(&node("Relu", 1, vec![]), 14, &[&x]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[0.0, 0.0, 2.5, 0.0]);
    }

    #[test]
    fn softmax_last_axis_matches_naive() {
        let data = random_floats(3 * 7, 1).iter().map(|v| v * 20.0).collect::<Vec<_>>();
        let x = Tensor::from_f32(vec![3, 7], data.clone()).unwrap();
        let out = run(&node("Softmax", 1, vec![]), 13, &[&x]).unwrap();
        let expected: Vec<f32> = data.chunks(7).flat_map(naive_softmax).collect();
        assert_close(out[0].as_f32().unwrap(), &expected);
    }

    #[test]
    fn softmax_middle_axis_opset13() {
        // [2,3,2] along axis 1: normalise each (i, :, k) column.
        let data = random_floats(12, 2);
        let x = Tensor::from_f32(vec![2, 3, 2], data.clone()).unwrap();
        let out = run(&node("Softmax", 1, vec![("axis", Attribute::Int(1))]), 13, &[&x]).unwrap();
        let got = out[0].as_f32().unwrap();
        for i in 0..2 {
            for k in 0..2 {
                let col: Vec<f32> = (0..3).map(|j| data[i * 6 + j * 2 + k]).collect();
                let exp = naive_softmax(&col);
                for j in 0..3 {
                    assert!((got[i * 6 + j * 2 + k] - exp[j]).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn log_softmax_is_the_log_of_softmax() {
        let data = random_floats(12, 4).iter().map(|v| v * 30.0).collect::<Vec<_>>();
        let x = Tensor::from_f32(vec![3, 4], data.clone()).unwrap();
        let out = run(&node("LogSoftmax", 1, vec![]), 13, &[&x]).unwrap();
        let expected: Vec<f32> = data.chunks(4).flat_map(naive_softmax).map(f32::ln).collect();
        assert_close(out[0].as_f32().unwrap(), &expected);
    }

    #[test]
    fn softmax_opset11_flattens_trailing_dims() {
        let data = random_floats(12, 3);
        let x = Tensor::from_f32(vec![2, 3, 2], data.clone()).unwrap();
        let out = run(&node("Softmax", 1, vec![("axis", Attribute::Int(1))]), 11, &[&x]).unwrap();
        let expected: Vec<f32> = data.chunks(6).flat_map(naive_softmax).collect();
        assert_close(out[0].as_f32().unwrap(), &expected);
    }
}
