//! Einsum: products summed over the letters an equation contracts, with
//! numpy's rules (explicit `->` or implicit output, `...` broadcast dims,
//! repeated letters as diagonals).
//!
//! The reference form: every output element sums over the contracted
//! letters in row-major order, each operand read through a stride per
//! letter. Parallel over output elements only.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::broadcast::broadcast_shape;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Einsum", 12, MAX_OPSET, build);
}

/// One subscript of a term: a letter, or the ellipsis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Letter(u8),
    Ellipsis,
}

#[derive(Debug)]
struct Einsum {
    inputs: Vec<Vec<Sub>>,
    /// `None`: implicit output (the letters seen once, sorted, after the
    /// broadcast dims).
    output: Option<Vec<Sub>>,
}

fn parse_term(term: &str) -> Result<Vec<Sub>, String> {
    let mut subs = Vec::new();
    let mut rest = term.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            if subs.contains(&Sub::Ellipsis) {
                return Err(format!("term '{term}' has two ellipses"));
            }
            subs.push(Sub::Ellipsis);
            rest = r;
            continue;
        }
        let c = rest.as_bytes()[0];
        if !c.is_ascii_alphabetic() {
            return Err(format!("term '{term}' holds '{}', which is not a letter or '...'", c as char));
        }
        subs.push(Sub::Letter(c));
        rest = &rest[1..];
    }
    Ok(subs)
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let equation = node
        .string_attr("equation")?
        .ok_or_else(|| BuildError::invalid(node, "attribute 'equation' is required"))?
        .replace(' ', "");
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (equation.clone(), None),
    };
    let parse = |t: &str| parse_term(t).map_err(|e| BuildError::invalid(node, e));
    let inputs = lhs.split(',').map(parse).collect::<Result<Vec<_>, _>>()?;
    if inputs.len() != node.inputs.len() {
        return Err(BuildError::invalid(
            node,
            format!("the equation has {} terms for {} inputs", inputs.len(), node.inputs.len()),
        ));
    }
    let output = rhs.as_deref().map(parse).transpose()?;
    if let Some(out) = &output {
        for s in out {
            if let Sub::Letter(c) = s
                && !inputs.iter().flatten().any(|i| i == s)
            {
                return Err(BuildError::invalid(node, format!("output letter '{}' is in no input", *c as char)));
            }
        }
    }
    Ok(Box::new(Einsum { inputs, output }))
}

/// The numbers an operand is read through: per letter (or broadcast dim) its
/// size and stride.
struct Operand {
    /// (letter, size, stride) of each named axis, repeated letters merged.
    letters: Vec<(u8, usize, usize)>,
    /// Size and stride of each broadcast dim, aligned right.
    ellipsis: Vec<(usize, usize)>,
}

impl Einsum {
    fn operands(&self, tensors: &[&Tensor]) -> Result<(Vec<Operand>, Vec<usize>), KernelError> {
        let mut out = Vec::with_capacity(tensors.len());
        let mut ellipsis_shapes = Vec::new();
        for (term, t) in self.inputs.iter().zip(tensors) {
            let shape = t.shape();
            let named = term.iter().filter(|s| matches!(s, Sub::Letter(_))).count();
            let has_ellipsis = term.contains(&Sub::Ellipsis);
            if shape.len() < named || (!has_ellipsis && shape.len() != named) {
                return Err(KernelError(format!(
                    "an operand of shape {shape:?} does not fit its term of {named} letters{}",
                    if has_ellipsis { " and '...'" } else { "" }
                )));
            }
            let broadcast = shape.len() - named;
            let strides = crate::tensor::strides(shape);
            let mut letters: Vec<(u8, usize, usize)> = Vec::new();
            let mut ellipsis = Vec::new();
            let mut axis = 0;
            for s in term {
                match s {
                    Sub::Ellipsis => {
                        for _ in 0..broadcast {
                            ellipsis.push((shape[axis], strides[axis]));
                            axis += 1;
                        }
                    }
                    Sub::Letter(c) => {
                        match letters.iter_mut().find(|(l, _, _)| l == c) {
                            Some(entry) if entry.1 == shape[axis] => entry.2 += strides[axis],
                            Some(entry) => {
                                return Err(KernelError(format!(
                                    "letter '{}' has sizes {} and {} in one operand",
                                    *c as char, entry.1, shape[axis]
                                )));
                            }
                            None => letters.push((*c, shape[axis], strides[axis])),
                        }
                        axis += 1;
                    }
                }
            }
            ellipsis_shapes.push(ellipsis.iter().map(|&(n, _)| n).collect::<Vec<_>>());
            out.push(Operand { letters, ellipsis });
        }
        let mut broadcast: Vec<usize> = Vec::new();
        for s in &ellipsis_shapes {
            broadcast = broadcast_shape(&broadcast, s)
                .map_err(|_| KernelError(format!("the '...' dims {broadcast:?} and {s:?} do not broadcast")))?;
        }
        Ok((out, broadcast))
    }
}

impl Kernel for Einsum {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let tensors: Vec<&Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| KernelError(format!("missing input {i}"))))
            .collect::<Result<_, _>>()?;
        let (operands, broadcast) = self.operands(&tensors)?;
        // Every letter's size, checked across operands (1 broadcasts).
        let mut sizes: BTreeMap<u8, usize> = BTreeMap::new();
        for op in &operands {
            for &(c, n, _) in &op.letters {
                let e = sizes.entry(c).or_insert(n);
                if *e == 1 {
                    *e = n;
                } else if n != 1 && n != *e {
                    return Err(KernelError(format!("letter '{}' has sizes {} and {n}", c as char, *e)));
                }
            }
        }
        let output: Vec<Sub> = match &self.output {
            Some(o) => o.clone(),
            None => {
                let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
                for term in &self.inputs {
                    for s in term {
                        if let Sub::Letter(c) = s {
                            *counts.entry(*c).or_default() += 1;
                        }
                    }
                }
                let mut o = vec![Sub::Ellipsis];
                o.extend(counts.into_iter().filter(|&(_, n)| n == 1).map(|(c, _)| Sub::Letter(c)));
                o
            }
        };
        // Output axes: broadcast dims where the ellipsis is, then letters.
        // Each axis is (size, per-operand stride).
        let stride_of =
            |op: &Operand, c: u8| op.letters.iter().find(|l| l.0 == c).map_or(0, |l| if l.1 == 1 { 0 } else { l.2 });
        let broadcast_strides = |k: usize| -> Vec<usize> {
            operands
                .iter()
                .map(|op| {
                    let offset = broadcast.len() - op.ellipsis.len();
                    if k < offset {
                        0
                    } else {
                        let (n, s) = op.ellipsis[k - offset];
                        if n == 1 { 0 } else { s }
                    }
                })
                .collect()
        };
        let mut out_axes: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut out_shape = Vec::new();
        for s in &output {
            match s {
                Sub::Ellipsis => {
                    for (k, &n) in broadcast.iter().enumerate() {
                        out_axes.push((n, broadcast_strides(k)));
                        out_shape.push(n);
                    }
                }
                Sub::Letter(c) => {
                    let n = sizes[c];
                    out_axes.push((n, operands.iter().map(|op| stride_of(op, *c)).collect()));
                    out_shape.push(n);
                }
            }
        }
        if !output.contains(&Sub::Ellipsis) && broadcast.iter().any(|&n| n != 1) {
            return Err(KernelError("the output drops '...' dims that are not 1".into()));
        }
        let summed: Vec<(usize, Vec<usize>)> = sizes
            .iter()
            .filter(|(c, _)| !output.contains(&Sub::Letter(**c)))
            .map(|(&c, &n)| (n, operands.iter().map(|op| stride_of(op, c)).collect()))
            .collect();
        let total: usize = out_shape.iter().product();
        let inner: usize = summed.iter().map(|a| a.0).product();
        let values: Vec<Vec<f64>> =
            tensors.iter().map(|t| super::float_values(t, "an operand")).collect::<Result<_, _>>()?;
        // The offset of each operand at a multi-index over `axes`.
        let offsets = |axes: &[(usize, Vec<usize>)], mut flat: usize, into: &mut [usize]| {
            into.iter_mut().for_each(|o| *o = 0);
            for (n, strides) in axes.iter().rev() {
                let i = flat % n;
                flat /= n;
                for (o, s) in into.iter_mut().zip(strides) {
                    *o += i * s;
                }
            }
        };
        let mut y = vec![0.0f64; total];
        y.par_iter_mut().enumerate().for_each(|(o, out)| {
            let mut base = vec![0usize; operands.len()];
            offsets(&out_axes, o, &mut base);
            let mut at = vec![0usize; operands.len()];
            let mut sum = 0.0;
            for r in 0..inner {
                offsets(&summed, r, &mut at);
                let mut p = 1.0;
                for (k, v) in values.iter().enumerate() {
                    p *= v[base[k] + at[k]];
                }
                sum += p;
            }
            *out = sum;
        });
        let like = tensors.first().copied().ok_or_else(|| KernelError("Einsum needs an input".into()))?;
        match like.data() {
            TensorData::Float(_) | TensorData::Double(_) => Ok(vec![super::float_tensor_like(like, out_shape, y)?]),
            other => Err(KernelError(format!("Einsum takes float or double operands, not {}", other.dtype()))),
        }
    }
}
