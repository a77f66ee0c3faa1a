//! Recurrent layers: RNN, GRU and LSTM, forward, reverse or bidirectional,
//! with optional biases, initial states, per-batch sequence lengths,
//! peepholes (LSTM), `clip`, custom activations and both layouts.
//!
//! One direction, one time step: gates = f(W x_t + R h_{t-1} + Wb + Rb),
//! with the gate order ONNX defines (GRU: z, r, h; LSTM: i, o, f, c). Steps
//! past a batch entry's sequence length leave zeros in Y and do not move
//! its state. Everything is computed in f64 and rounded to the input type.

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, float_tensor_like, float_values as wide,
    required,
};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("RNN", 7, MAX_OPSET, build);
    reg.register("GRU", 7, MAX_OPSET, build);
    reg.register("LSTM", 7, MAX_OPSET, build);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm,
}

impl Cell {
    /// Gates per hidden unit.
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm => 4,
        }
    }

    /// Activation functions per direction.
    fn activations(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 2,
            Cell::Lstm => 3,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f64) -> f64 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x < 0.0 {
                    a * x.exp_m1()
                } else {
                    x
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        }
    }
}

#[derive(Debug)]
struct Recurrent {
    cell: Cell,
    hidden: Option<usize>,
    directions: Vec<bool>, // true = reverse
    /// Per direction, the cell's activations.
    acts: Vec<Vec<Act>>,
    clip: Option<f64>,
    batch_first: bool,
    outputs: usize,
}

fn parse_acts(ctx: &BuildContext<'_>, cell: Cell, dirs: usize) -> Result<Vec<Vec<Act>>, BuildError> {
    let node = ctx.node;
    let per = cell.activations();
    let names: Vec<String> = match node.attributes.get("activations") {
        Some(crate::graph::Attribute::Strings(v)) => v.clone(),
        Some(_) => return Err(BuildError::invalid(node, "activations must be a list of strings")),
        None => {
            let default: &[&str] = match cell {
                Cell::Rnn => &["Tanh"],
                Cell::Gru { .. } => &["Sigmoid", "Tanh"],
                Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            };
            default.iter().cycle().take(per * dirs).map(|s| s.to_string()).collect()
        }
    };
    if names.len() != per * dirs {
        return Err(BuildError::invalid(
            node,
            format!("activations must list {} functions, got {}", per * dirs, names.len()),
        ));
    }
    let floats = |name: &str| -> Result<Vec<f64>, BuildError> {
        match node.attributes.get(name) {
            Some(crate::graph::Attribute::Floats(v)) => Ok(v.iter().map(|&x| f64::from(x)).collect()),
            Some(_) => Err(BuildError::invalid(node, format!("{name} must be a list of floats"))),
            None => Ok(Vec::new()),
        }
    };
    // alpha and beta values are consumed in order by the functions that
    // take them.
    let (alphas, betas) = (floats("activation_alpha")?, floats("activation_beta")?);
    let (mut ai, mut bi) = (0, 0);
    let next = |v: &Vec<f64>, i: &mut usize, default: f64| {
        let x = v.get(*i).copied().unwrap_or(default);
        *i += 1;
        x
    };
    let mut acts = Vec::with_capacity(names.len());
    for name in &names {
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(next(&alphas, &mut ai, 1.0), next(&betas, &mut bi, 0.0)),
            "leakyrelu" => Act::LeakyRelu(next(&alphas, &mut ai, 0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(next(&alphas, &mut ai, 1.0)),
            "scaledtanh" => Act::ScaledTanh(next(&alphas, &mut ai, 1.0), next(&betas, &mut bi, 1.0)),
            "hardsigmoid" => Act::HardSigmoid(next(&alphas, &mut ai, 0.2), next(&betas, &mut bi, 0.5)),
            "elu" => Act::Elu(next(&alphas, &mut ai, 1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            other => return Err(BuildError::invalid(node, format!("unknown activation function {other}"))),
        };
        acts.push(act);
    }
    Ok(acts.chunks(per).map(<[Act]>::to_vec).collect())
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let cell = match node.op.as_str() {
        "RNN" => Cell::Rnn,
        "GRU" => Cell::Gru { linear_before_reset: node.int_attr("linear_before_reset", 0)? != 0 },
        _ => {
            if node.int_attr("input_forget", 0)? != 0 {
                return Err(BuildError::invalid(node, "input_forget = 1 is not supported"));
            }
            Cell::Lstm
        }
    };
    let directions = match node.string_attr("direction")?.unwrap_or("forward") {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        other => return Err(BuildError::invalid(node, format!("unknown direction \"{other}\""))),
    };
    let hidden = node.opt_int_attr("hidden_size")?;
    let hidden = match hidden {
        Some(h) if h < 1 => return Err(BuildError::invalid(node, format!("hidden_size must be positive, got {h}"))),
        h => h.map(|h| h as usize),
    };
    let clip = node.opt_float_attr("clip")?;
    Ok(Box::new(Recurrent {
        cell,
        hidden,
        acts: parse_acts(ctx, cell, directions.len())?,
        directions,
        clip: clip.map(f64::from),
        batch_first: ctx.opset >= 14 && node.int_attr("layout", 0)? != 0,
        outputs: node.outputs.len(),
    }))
}

fn check_shape(t: &Tensor, what: &str, want: &[usize]) -> Result<(), KernelError> {
    if t.shape() != want {
        return Err(KernelError(format!("{what} must have shape {want:?}, got {:?}", t.shape())));
    }
    Ok(())
}

/// `y[r] += sum_k m[r][k] * v[k]` for an [rows, cols] matrix.
fn mat_vec_add(m: &[f64], v: &[f64], y: &mut [f64]) {
    let cols = v.len();
    for (r, out) in y.iter_mut().enumerate() {
        *out += m[r * cols..(r + 1) * cols].iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
    }
}

impl Kernel for Recurrent {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let w = required(inputs, 1, "W")?;
        let r = required(inputs, 2, "R")?;
        let opt = |i: usize| inputs.get(i).copied().flatten();
        if x.shape().len() != 3 {
            return Err(KernelError(format!("X must have rank 3, got shape {:?}", x.shape())));
        }
        let (seq, batch, input) = if self.batch_first {
            (x.shape()[1], x.shape()[0], x.shape()[2])
        } else {
            (x.shape()[0], x.shape()[1], x.shape()[2])
        };
        let dirs = self.directions.len();
        let g = self.cell.gates();
        let hidden = match self.hidden {
            Some(h) => h,
            None => r.shape().get(2).copied().ok_or_else(|| KernelError("R must have rank 3".into()))?,
        };
        check_shape(w, "W", &[dirs, g * hidden, input])?;
        check_shape(r, "R", &[dirs, g * hidden, hidden])?;
        let (wv, rv) = (wide(w, "W")?, wide(r, "R")?);
        let bias = match opt(3) {
            Some(b) => {
                check_shape(b, "B", &[dirs, 2 * g * hidden])?;
                wide(b, "B")?
            }
            None => vec![0.0; dirs * 2 * g * hidden],
        };
        let lens: Vec<usize> = match opt(4) {
            Some(t) => {
                let v: Vec<i64> = match t.data() {
                    TensorData::Int32(v) => v.iter().map(|&a| i64::from(a)).collect(),
                    TensorData::Int64(v) => v.clone(),
                    other => return Err(KernelError(format!("sequence_lens must be int32, not {}", other.dtype()))),
                };
                if v.len() != batch || v.iter().any(|&l| l < 0 || l as usize > seq) {
                    return Err(KernelError(format!("sequence_lens {v:?} must hold {batch} lengths of 0 to {seq}")));
                }
                v.iter().map(|&l| l as usize).collect()
            }
            None => vec![seq; batch],
        };
        let state_shape = if self.batch_first { [batch, dirs, hidden] } else { [dirs, batch, hidden] };
        let state = |i: usize, what: &str| -> Result<Vec<f64>, KernelError> {
            match opt(i) {
                Some(t) => {
                    check_shape(t, what, &state_shape)?;
                    let v = wide(t, what)?;
                    // Internally [dirs, batch, hidden].
                    Ok(if self.batch_first {
                        let mut out = vec![0.0; v.len()];
                        for b in 0..batch {
                            for d in 0..dirs {
                                for h in 0..hidden {
                                    out[(d * batch + b) * hidden + h] = v[(b * dirs + d) * hidden + h];
                                }
                            }
                        }
                        out
                    } else {
                        v
                    })
                }
                None => Ok(vec![0.0; dirs * batch * hidden]),
            }
        };
        let mut h_state = state(5, "initial_h")?;
        let is_lstm = self.cell == Cell::Lstm;
        let mut c_state = if is_lstm { state(6, "initial_c")? } else { Vec::new() };
        let peep = match (is_lstm, opt(7)) {
            (true, Some(p)) => {
                check_shape(p, "P", &[dirs, 3 * hidden])?;
                wide(p, "P")?
            }
            _ => vec![0.0; dirs * 3 * hidden],
        };
        let xv = wide(x, "X")?;
        let x_at = |t: usize, b: usize| {
            let base = if self.batch_first { (b * seq + t) * input } else { (t * batch + b) * input };
            &xv[base..base + input]
        };
        // Y internally [seq, dirs, batch, hidden].
        let mut y = vec![0.0; seq * dirs * batch * hidden];
        let clip = |v: f64| match self.clip {
            Some(c) => v.clamp(-c, c),
            None => v,
        };
        for (d, &reverse) in self.directions.iter().enumerate() {
            let wd = &wv[d * g * hidden * input..(d + 1) * g * hidden * input];
            let rd = &rv[d * g * hidden * hidden..(d + 1) * g * hidden * hidden];
            let (wb, rb) = bias[d * 2 * g * hidden..(d + 1) * 2 * g * hidden].split_at(g * hidden);
            let acts = &self.acts[d];
            let pd = &peep[d * 3 * hidden..(d + 1) * 3 * hidden];
            for (b, &len) in lens.iter().enumerate() {
                let hs = d * batch * hidden + b * hidden;
                let mut h = h_state[hs..hs + hidden].to_vec();
                let mut c = if is_lstm { c_state[hs..hs + hidden].to_vec() } else { Vec::new() };
                for step in 0..len {
                    let t = if reverse { len - 1 - step } else { step };
                    // W x_t + Wb, and R h_{t-1} + Rb, per gate row.
                    let mut wx = wb.to_vec();
                    mat_vec_add(wd, x_at(t, b), &mut wx);
                    let mut rh = rb.to_vec();
                    mat_vec_add(rd, &h, &mut rh);
                    let mut next = vec![0.0; hidden];
                    match self.cell {
                        Cell::Rnn => {
                            for k in 0..hidden {
                                next[k] = acts[0].apply(clip(wx[k] + rh[k]));
                            }
                        }
                        Cell::Gru { linear_before_reset } => {
                            let (f, gf) = (acts[0], acts[1]);
                            let z: Vec<f64> = (0..hidden).map(|k| f.apply(clip(wx[k] + rh[k]))).collect();
                            let rg: Vec<f64> =
                                (0..hidden).map(|k| f.apply(clip(wx[hidden + k] + rh[hidden + k]))).collect();
                            let cand: Vec<f64> = if linear_before_reset {
                                (0..hidden)
                                    .map(|k| gf.apply(clip(wx[2 * hidden + k] + rg[k] * rh[2 * hidden + k])))
                                    .collect()
                            } else {
                                // R_h (r ⊙ h) + Rb_h.
                                let rh_h: Vec<f64> = h.iter().zip(&rg).map(|(a, b)| a * b).collect();
                                let mut lin = rb[2 * hidden..3 * hidden].to_vec();
                                mat_vec_add(&rd[2 * hidden * hidden..3 * hidden * hidden], &rh_h, &mut lin);
                                (0..hidden).map(|k| gf.apply(clip(wx[2 * hidden + k] + lin[k]))).collect()
                            };
                            for k in 0..hidden {
                                next[k] = (1.0 - z[k]) * cand[k] + z[k] * h[k];
                            }
                        }
                        Cell::Lstm => {
                            let (f, gc, hc) = (acts[0], acts[1], acts[2]);
                            let pre = |gate: usize, k: usize| wx[gate * hidden + k] + rh[gate * hidden + k];
                            let mut new_c = vec![0.0; hidden];
                            for k in 0..hidden {
                                let i = f.apply(clip(pre(0, k) + pd[k] * c[k]));
                                let fg = f.apply(clip(pre(2, k) + pd[2 * hidden + k] * c[k]));
                                let cand = gc.apply(clip(pre(3, k)));
                                new_c[k] = fg * c[k] + i * cand;
                                let o = f.apply(clip(pre(1, k) + pd[hidden + k] * new_c[k]));
                                next[k] = o * hc.apply(new_c[k]);
                            }
                            c = new_c;
                        }
                    }
                    h = next;
                    let at = ((t * dirs + d) * batch + b) * hidden;
                    y[at..at + hidden].copy_from_slice(&h);
                }
                h_state[hs..hs + hidden].copy_from_slice(&h);
                if is_lstm {
                    c_state[hs..hs + hidden].copy_from_slice(&c);
                }
            }
        }
        let like = |shape: Vec<usize>, v: Vec<f64>| float_tensor_like(x, shape, v);
        // Back to the requested layout.
        let (y, y_shape) = if self.batch_first {
            let mut out = vec![0.0; y.len()];
            for t in 0..seq {
                for d in 0..dirs {
                    for b in 0..batch {
                        let from = ((t * dirs + d) * batch + b) * hidden;
                        let to = ((b * seq + t) * dirs + d) * hidden;
                        out[to..to + hidden].copy_from_slice(&y[from..from + hidden]);
                    }
                }
            }
            (out, vec![batch, seq, dirs, hidden])
        } else {
            (y, vec![seq, dirs, batch, hidden])
        };
        let final_state = |v: Vec<f64>| -> Vec<f64> {
            if !self.batch_first {
                return v;
            }
            let mut out = vec![0.0; v.len()];
            for d in 0..dirs {
                for b in 0..batch {
                    let (from, to) = ((d * batch + b) * hidden, (b * dirs + d) * hidden);
                    out[to..to + hidden].copy_from_slice(&v[from..from + hidden]);
                }
            }
            out
        };
        let mut outputs = vec![like(y_shape, y)?];
        if self.outputs > 1 {
            outputs.push(like(state_shape.to_vec(), final_state(h_state))?);
        }
        if self.outputs > 2 && is_lstm {
            outputs.push(like(state_shape.to_vec(), final_state(c_state))?);
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, run};
    use crate::tensor::Tensor;

    #[test]
    fn rnn_is_tanh_of_the_affine_recurrence() {
        // One unit, one input: h_t = tanh(0.5 x_t + 2 h_{t-1}).
        let x = Tensor::from_f32(vec![2, 1, 1], vec![1.0, -1.0]).unwrap();
        let w = Tensor::from_f32(vec![1, 1, 1], vec![0.5]).unwrap();
        let r = Tensor::from_f32(vec![1, 1, 1], vec![2.0]).unwrap();
        let mut n = node("RNN", 3, vec![("hidden_size", Attribute::Int(1))]);
        n.outputs = vec![3, 4];
        let out = run(&n, 14, &[&x, &w, &r]).unwrap();
        let h1 = 0.5f64.tanh();
        let h2 = (-0.5 + 2.0 * h1).tanh();
        assert_close(out[0].as_f32().unwrap(), &[h1 as f32, h2 as f32]);
        assert_close(out[1].as_f32().unwrap(), &[h2 as f32]);
        assert_eq!(out[0].shape(), [2, 1, 1, 1]);
    }

    #[test]
    fn shapes_are_checked() {
        let x = Tensor::from_f32(vec![2, 1, 3], vec![0.0; 6]).unwrap();
        let w = Tensor::from_f32(vec![1, 4, 2], vec![0.0; 8]).unwrap();
        let r = Tensor::from_f32(vec![1, 4, 1], vec![0.0; 4]).unwrap();
        let err = run(&node("LSTM", 3, vec![("hidden_size", Attribute::Int(1))]), 14, &[&x, &w, &r]).unwrap_err();
        assert!(err.0.contains("W must have shape [1, 4, 3]"), "{err}");
    }
}
