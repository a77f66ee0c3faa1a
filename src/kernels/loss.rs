//! The classification losses a model may end in: NegativeLogLikelihoodLoss
//! (over log-probabilities) and SoftmaxCrossEntropyLoss (over scores, with
//! the log-probabilities as an optional second output); class weights,
//! `ignore_index`, and the `none`, `sum` and `mean` reductions.

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, float_tensor_like, float_values, required,
};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("NegativeLogLikelihoodLoss", 12, MAX_OPSET, build);
    reg.register("SoftmaxCrossEntropyLoss", 12, MAX_OPSET, build);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

#[derive(Debug)]
struct Loss {
    softmax: bool,
    reduction: Reduction,
    ignore_index: Option<i64>,
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let reduction = match node.string_attr("reduction")?.unwrap_or("mean") {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        other => return Err(BuildError::invalid(node, format!("reduction '{other}' is not none, sum or mean"))),
    };
    let ignore_index = node.opt_int_attr("ignore_index")?;
    Ok(Box::new(Loss { softmax: node.op == "SoftmaxCrossEntropyLoss", reduction, ignore_index }))
}

impl Kernel for Loss {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let target_t = required(inputs, 1, "target")?;
        let shape = x.shape();
        if shape.len() < 2 || target_t.shape().len() != shape.len() - 1 || target_t.shape()[0] != shape[0] {
            return Err(KernelError(format!("input {shape:?} and target {:?} do not fit", target_t.shape())));
        }
        let target: Vec<i64> = match target_t.data() {
            TensorData::Int64(v) => v.clone(),
            TensorData::Int32(v) => v.iter().map(|&a| i64::from(a)).collect(),
            other => return Err(KernelError(format!("target must be int64 or int32, not {}", other.dtype()))),
        };
        let (n, c) = (shape[0], shape[1]);
        let d: usize = shape[2..].iter().product();
        if target_t.shape()[1..] != shape[2..] {
            return Err(KernelError(format!("target {:?} must be input {shape:?} without dim 1", target_t.shape())));
        }
        let mut logp = float_values(x, "input")?;
        if self.softmax {
            for i in 0..n {
                for k in 0..d {
                    let at = |j: usize| (i * c + j) * d + k;
                    let max = (0..c).map(|j| logp[at(j)]).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..c).map(|j| (logp[at(j)] - max).exp()).sum();
                    for j in 0..c {
                        logp[at(j)] = logp[at(j)] - max - sum.ln();
                    }
                }
            }
        }
        let weight = match inputs.get(2).copied().flatten() {
            Some(w) if w.shape() == [c] => Some(float_values(w, "weight")?),
            Some(w) => return Err(KernelError(format!("weight must have shape [{c}], got {:?}", w.shape()))),
            None => None,
        };
        let weighted =
            weight.is_some() || if self.softmax { self.ignore_index.is_some() } else { self.ignore_index != Some(-1) };
        let mut loss = vec![0.0f64; n * d];
        let mut weights = vec![1.0f64; n * d];
        for i in 0..n {
            for k in 0..d {
                let t = target[i * d + k];
                let ignored = Some(t) == self.ignore_index;
                if !ignored {
                    if !(0..c as i64).contains(&t) {
                        return Err(KernelError(format!("target {t} is outside the {c} classes")));
                    }
                    loss[i * d + k] = -logp[(i * c + t as usize) * d + k];
                }
                if weighted {
                    weights[i * d + k] = if ignored {
                        0.0
                    } else {
                        weight.as_ref().map_or(1.0, |w| w[t.clamp(0, c as i64 - 1) as usize])
                    };
                }
            }
        }
        if weighted {
            loss.iter_mut().zip(&weights).for_each(|(l, w)| *l *= w);
        }
        let value = match self.reduction {
            Reduction::None => None,
            Reduction::Sum => Some(loss.iter().sum::<f64>()),
            Reduction::Mean if weighted => Some(loss.iter().sum::<f64>() / weights.iter().sum::<f64>()),
            Reduction::Mean => Some(loss.iter().sum::<f64>() / loss.len() as f64),
        };
        let out = match value {
            Some(v) => float_tensor_like(x, vec![], vec![v])?,
            None => float_tensor_like(x, target_t.shape().to_vec(), loss)?,
        };
        let mut outputs = vec![out];
        if self.softmax {
            outputs.push(float_tensor_like(x, shape.to_vec(), logp)?);
        }
        Ok(outputs)
    }
}
