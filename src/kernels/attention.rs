//! Attention (opset 23 onward): scaled dot-product attention over 3-D
//! ([batch, seq, heads x head_size]) or 4-D ([batch, heads, seq, head_size])
//! inputs, with a boolean or additive mask, causal and sliding-window masks,
//! past key and value caches, per-batch valid key lengths, grouped-query
//! heads and softcap; the reference form, in f64, one (batch, head) block
//! at a time.

use rayon::prelude::*;

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, float_tensor_like, float_values,
};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Attention", 23, MAX_OPSET, build);
}

#[derive(Debug)]
struct Attention {
    causal: bool,
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    mode: i64,
    scale: Option<f64>,
    softcap: f64,
    left: i64,
    right: i64,
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let heads = |name: &str| -> Result<Option<usize>, BuildError> {
        match node.int_attr(name, 0)? {
            0 => Ok(None),
            h if h > 0 => Ok(Some(h as usize)),
            h => Err(BuildError::invalid(node, format!("{name} must be positive, got {h}"))),
        }
    };
    let mode = node.int_attr("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return Err(BuildError::invalid(node, format!("qk_matmul_output_mode must be 0 to 3, got {mode}")));
    }
    Ok(Box::new(Attention {
        causal: node.int_attr("is_causal", 0)? != 0,
        q_heads: heads("q_num_heads")?,
        kv_heads: heads("kv_num_heads")?,
        mode,
        scale: node.opt_float_attr("scale")?.map(f64::from),
        softcap: f64::from(node.float_attr("softcap", 0.0)?),
        left: node.int_attr("left_window_size", -1)?,
        right: node.int_attr("right_window_size", -1)?,
    }))
}

/// A [batch, heads, seq, size] view of Q, K or V.
struct Heads {
    data: Vec<f64>,
    batch: usize,
    heads: usize,
    seq: usize,
    size: usize,
}

impl Heads {
    /// From a 4-D tensor, or a 3-D [batch, seq, heads x size] one.
    fn new(t: &Tensor, heads: Option<usize>, what: &str) -> Result<Heads, KernelError> {
        let v = float_values(t, what)?;
        match (t.shape(), heads) {
            (&[batch, h, seq, size], _) => Ok(Heads { data: v, batch, heads: h, seq, size }),
            (&[batch, seq, hidden], Some(h)) if hidden % h == 0 => {
                let size = hidden / h;
                let mut data = vec![0.0; v.len()];
                for b in 0..batch {
                    for s in 0..seq {
                        for hh in 0..h {
                            for d in 0..size {
                                data[((b * h + hh) * seq + s) * size + d] = v[(b * seq + s) * hidden + hh * size + d];
                            }
                        }
                    }
                }
                Ok(Heads { data, batch, heads: h, seq, size })
            }
            (shape, _) => Err(KernelError(format!(
                "{what} must be 4-D, or 3-D with its head count given (q_num_heads, kv_num_heads), got {shape:?}"
            ))),
        }
    }

    fn at(&self, b: usize, h: usize, s: usize) -> &[f64] {
        let start = ((b * self.heads + h) * self.seq + s) * self.size;
        &self.data[start..start + self.size]
    }

    /// Appends `more` along the sequence axis (a cache and the new keys).
    fn concat(past: Heads, more: Heads) -> Result<Heads, KernelError> {
        if (past.batch, past.heads, past.size) != (more.batch, more.heads, more.size) {
            return Err(KernelError("the past cache and the new keys or values differ in batch, heads or size".into()));
        }
        let seq = past.seq + more.seq;
        let mut data = Vec::with_capacity(past.data.len() + more.data.len());
        for b in 0..past.batch {
            for h in 0..past.heads {
                for s in 0..past.seq {
                    data.extend_from_slice(past.at(b, h, s));
                }
                for s in 0..more.seq {
                    data.extend_from_slice(more.at(b, h, s));
                }
            }
        }
        Ok(Heads { data, seq, ..past })
    }

    fn tensor(&self, like: &Tensor) -> Result<Tensor, KernelError> {
        float_tensor_like(like, vec![self.batch, self.heads, self.seq, self.size], self.data.clone())
    }
}

/// The additive bias an `attn_mask` gives at (b, h, i, j): 0 or -inf for a
/// boolean mask, its value for a float one, broadcast numpy-style, and
/// -inf past its last column (a mask shorter than the keys).
fn mask_bias(mask: &Tensor, b: usize, h: usize, i: usize, j: usize) -> f64 {
    let shape = mask.shape();
    let full = [b, h, i, j];
    let mut at = 0;
    let mut stride = 1;
    for d in (0..shape.len()).rev() {
        let k = 4 - (shape.len() - d);
        let idx = if shape[d] == 1 { 0 } else { full[k] };
        if k == 3 && idx >= shape[d] {
            return f64::NEG_INFINITY;
        }
        at += idx.min(shape[d].saturating_sub(1)) * stride;
        stride *= shape[d];
    }
    match mask.data() {
        TensorData::Bool(v) => {
            if v[at] {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        }
        TensorData::Float(v) => f64::from(v[at]),
        TensorData::Double(v) => v[at],
        _ => 0.0,
    }
}

impl Kernel for Attention {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let get = |i: usize| inputs.get(i).copied().flatten();
        let need = |i: usize, what: &str| get(i).ok_or_else(|| KernelError(format!("missing required input {what}")));
        let (qt, kt, vt) = (need(0, "Q")?, need(1, "K")?, need(2, "V")?);
        let three_d = qt.shape().len() == 3;
        if kt.shape().len() != qt.shape().len() || vt.shape().len() != qt.shape().len() {
            return Err(KernelError("Q, K and V must have the same rank".into()));
        }
        let q = Heads::new(qt, self.q_heads, "Q")?;
        let mut k = Heads::new(kt, self.kv_heads, "K")?;
        let mut v = Heads::new(vt, self.kv_heads, "V")?;
        let past = match (get(4), get(5)) {
            (Some(pk), Some(pv)) => {
                let past_len = pk.shape().get(2).copied().unwrap_or(0);
                k = Heads::concat(Heads::new(pk, None, "past_key")?, k)?;
                v = Heads::concat(Heads::new(pv, None, "past_value")?, v)?;
                Some(past_len)
            }
            (None, None) => None,
            _ => return Err(KernelError("past_key and past_value must be given together".into())),
        };
        let nonpad: Option<Vec<i64>> = match get(6) {
            Some(t) => Some(match t.data() {
                TensorData::Int64(v) => v.clone(),
                TensorData::Int32(v) => v.iter().map(|&a| i64::from(a)).collect(),
                other => return Err(KernelError(format!("nonpad_kv_seqlen must be int64, not {}", other.dtype()))),
            }),
            None => None,
        };
        if q.batch != k.batch || k.batch != v.batch || k.seq != v.seq || q.size != k.size {
            return Err(KernelError(format!(
                "Q, K and V do not fit: batches {}, {}, {}; key and value lengths {}, {}; Q and K head sizes {}, {}",
                q.batch, k.batch, v.batch, k.seq, v.seq, q.size, k.size
            )));
        }
        if k.heads == 0 || q.heads % k.heads != 0 || k.heads != v.heads {
            return Err(KernelError(format!("{} query heads cannot share {} key heads", q.heads, k.heads)));
        }
        if nonpad.as_ref().is_some_and(|n| n.len() != q.batch) {
            return Err(KernelError("nonpad_kv_seqlen must hold one length per batch entry".into()));
        }
        let mask = get(3);
        let scale = self.scale.unwrap_or(1.0 / (q.size as f64).sqrt());
        let (sq, skv, group) = (q.seq, k.seq, q.heads / k.heads);
        let blocks = q.batch * q.heads;
        // Per (batch, head): the output rows and the requested QK output.
        let results: Vec<(Vec<f64>, Vec<f64>)> = (0..blocks)
            .into_par_iter()
            .map(|block| {
                let (b, h) = (block / q.heads, block % q.heads);
                let kh = h / group;
                let offset = match (&nonpad, past) {
                    (Some(n), None) => n[b] - sq as i64,
                    (_, Some(p)) => p as i64,
                    (None, None) => 0,
                };
                let mut y = vec![0.0; sq * v.size];
                let mut qk_out = vec![0.0; sq * skv];
                for i in 0..sq {
                    let qi = q.at(b, h, i);
                    let mut logits = vec![0.0; skv];
                    let mut bias = vec![0.0; skv];
                    for j in 0..skv {
                        let mut s: f64 = qi.iter().zip(k.at(b, kh, j)).map(|(a, c)| a * c).sum::<f64>() * scale;
                        if self.softcap > 0.0 {
                            s = self.softcap * (s / self.softcap).tanh();
                        }
                        logits[j] = s;
                        let mut bj = mask.map_or(0.0, |m| mask_bias(m, b, h, i, j));
                        let diff = i as i64 + offset - j as i64;
                        if self.causal && diff < 0 {
                            bj = f64::NEG_INFINITY;
                        }
                        if (self.left >= 0 && diff > self.left) || (self.right >= 0 && -diff > self.right) {
                            bj = f64::NEG_INFINITY;
                        }
                        if nonpad.as_ref().is_some_and(|n| j as i64 >= n[b]) {
                            bj = f64::NEG_INFINITY;
                        }
                        bias[j] = bj;
                    }
                    let with_bias: Vec<f64> = logits.iter().zip(&bias).map(|(a, c)| a + c).collect();
                    let all_masked = bias.iter().all(|&c| c == f64::NEG_INFINITY);
                    let max = with_bias.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let safe = if max == f64::NEG_INFINITY { 0.0 } else { max };
                    let exps: Vec<f64> = with_bias.iter().map(|&a| (a - safe).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    let probs: Vec<f64> = exps
                        .iter()
                        .map(|&e| if all_masked { 0.0 } else { e / if sum == 0.0 { 1.0 } else { sum } })
                        .collect();
                    let row = match self.mode {
                        2 => &with_bias,
                        3 => &probs,
                        _ => &logits,
                    };
                    qk_out[i * skv..(i + 1) * skv].copy_from_slice(row);
                    for (j, &p) in probs.iter().enumerate() {
                        if p != 0.0 {
                            for (o, &x) in y[i * v.size..(i + 1) * v.size].iter_mut().zip(v.at(b, kh, j)) {
                                *o += p * x;
                            }
                        }
                    }
                }
                (y, qk_out)
            })
            .collect();
        let (heads, dv) = (q.heads, v.size);
        let mut y = vec![0.0; q.batch * heads * sq * dv];
        let mut qk = Vec::with_capacity(blocks * sq * skv);
        for (block, (rows, qk_rows)) in results.into_iter().enumerate() {
            let (b, h) = (block / heads, block % heads);
            for i in 0..sq {
                let at = if three_d { ((b * sq + i) * heads + h) * dv } else { ((b * heads + h) * sq + i) * dv };
                y[at..at + dv].copy_from_slice(&rows[i * dv..(i + 1) * dv]);
            }
            qk.extend(qk_rows);
        }
        let y_shape = if three_d { vec![q.batch, sq, heads * dv] } else { vec![q.batch, heads, sq, dv] };
        Ok(vec![
            float_tensor_like(qt, y_shape, y)?,
            k.tensor(qt)?,
            v.tensor(qt)?,
            float_tensor_like(qt, vec![q.batch, heads, sq, skv], qk)?,
        ])
    }
}
