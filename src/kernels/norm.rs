//! Normalisation at inference: BatchNormalization (with the running
//! statistics), LayerNormalization, RMSNormalization, InstanceNormalization,
//! GroupNormalization, MeanVarianceNormalization, LpNormalization and LRN.
//! Statistics accumulate in f64.

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, float_tensor_like as narrow,
    float_values as wide, normalize_axis, required,
};
use crate::tensor::Tensor;

pub fn register(reg: &mut KernelRegistry) {
    reg.register("BatchNormalization", 7, MAX_OPSET, build_batch_norm);
    reg.register("LayerNormalization", 17, MAX_OPSET, build_layer_norm);
    reg.register("InstanceNormalization", 6, MAX_OPSET, build_instance_norm);
    reg.register("LRN", 1, MAX_OPSET, build_lrn);
    reg.register("RMSNormalization", 23, MAX_OPSET, build_layer_norm);
    reg.register("GroupNormalization", 18, MAX_OPSET, build_group_norm);
    reg.register("MeanVarianceNormalization", 9, MAX_OPSET, |ctx| {
        Ok(Box::new(MeanVarianceNorm {
            axes: ctx.node.ints_attr("axes")?.map_or_else(|| vec![0, 2, 3], <[i64]>::to_vec),
        }))
    });
    reg.register("LpNormalization", 1, MAX_OPSET, build_lp_norm);
}

/// One value per channel, checked.
fn per_channel(t: &Tensor, what: &str, channels: usize) -> Result<Vec<f64>, KernelError> {
    let v = wide(t, what)?;
    if v.len() != channels {
        return Err(KernelError(format!(
            "{what} must hold {channels} values (one per channel), got shape {:?}",
            t.shape()
        )));
    }
    Ok(v)
}

#[derive(Debug)]
struct BatchNorm {
    epsilon: f64,
}

fn build_batch_norm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    if ctx.node.int_attr("training_mode", 0)? != 0 || (ctx.opset < 9 && ctx.node.int_attr("spatial", 1)? == 0) {
        return Err(BuildError::invalid(
            ctx.node,
            "only inference is supported (training_mode = 0, and spatial = 1 before opset 9)",
        ));
    }
    if ctx.node.outputs.len() > 1 {
        return Err(BuildError::invalid(ctx.node, "the training outputs (running mean and variance) are not produced"));
    }
    Ok(Box::new(BatchNorm { epsilon: f64::from(ctx.node.float_attr("epsilon", 1e-5)?) }))
}

impl Kernel for BatchNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        if x.shape().len() < 2 {
            return Err(KernelError(format!("X must have rank 2 or more, got shape {:?}", x.shape())));
        }
        let c = x.shape()[1];
        let scale = per_channel(required(inputs, 1, "scale")?, "scale", c)?;
        let bias = per_channel(required(inputs, 2, "B")?, "B", c)?;
        let mean = per_channel(required(inputs, 3, "input_mean")?, "input_mean", c)?;
        let var = per_channel(required(inputs, 4, "input_var")?, "input_var", c)?;
        let spatial: usize = x.shape()[2..].iter().product();
        let xs = wide(x, "X")?;
        let y = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / spatial.max(1)) % c;
                (v - mean[ch]) / (var[ch] + self.epsilon).sqrt() * scale[ch] + bias[ch]
            })
            .collect();
        Ok(vec![narrow(x, x.shape().to_vec(), y)?])
    }
}

#[derive(Debug)]
struct LayerNorm {
    axis: i64,
    epsilon: f64,
    outputs: usize,
    /// RMSNormalization: no mean is subtracted and there is no bias.
    rms: bool,
}

fn build_layer_norm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let rms = ctx.node.op == "RMSNormalization";
    if rms && ctx.node.outputs.len() > 1 {
        return Err(BuildError::invalid(ctx.node, "RMSNormalization has one output"));
    }
    Ok(Box::new(LayerNorm {
        axis: ctx.node.int_attr("axis", -1)?,
        epsilon: f64::from(ctx.node.float_attr("epsilon", 1e-5)?),
        outputs: ctx.node.outputs.len(),
        rms,
    }))
}

/// `t` (shape a suffix of `norm` after numpy's rules) read at position `j`
/// of the normalised block of shape `norm`.
fn broadcast_in_block(t: &[f64], t_shape: &[usize], norm: &[usize], j: usize) -> f64 {
    let mut at = 0;
    let mut rest = j;
    let mut t_stride = 1;
    for d in (0..norm.len()).rev() {
        let i = rest % norm[d];
        rest /= norm[d];
        // The dim of `t` aligned with norm's dim d, if `t` reaches that far.
        if let Some(k) = (d + t_shape.len()).checked_sub(norm.len()) {
            if t_shape[k] != 1 {
                at += i * t_stride;
            }
            t_stride *= t_shape[k];
        }
    }
    t[at]
}

impl Kernel for LayerNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let scale_t = required(inputs, 1, "Scale")?;
        let rank = x.shape().len();
        let axis = normalize_axis(self.axis, rank)?;
        let norm = &x.shape()[axis..];
        let block: usize = norm.iter().product();
        let outer: usize = x.shape()[..axis].iter().product();
        let fits = |t: &Tensor| {
            t.shape().len() <= norm.len()
                && t.shape().iter().rev().zip(norm.iter().rev()).all(|(&a, &b)| a == b || a == 1)
        };
        if !fits(scale_t) {
            return Err(KernelError(format!("Scale of shape {:?} does not broadcast to {norm:?}", scale_t.shape())));
        }
        let scale = wide(scale_t, "Scale")?;
        let bias = match inputs.get(2).copied().flatten().filter(|_| !self.rms) {
            Some(b) if fits(b) => Some((wide(b, "B")?, b.shape().to_vec())),
            Some(b) => return Err(KernelError(format!("B of shape {:?} does not broadcast to {norm:?}", b.shape()))),
            None => None,
        };
        let xs = wide(x, "X")?;
        let mut y = vec![0.0; xs.len()];
        let mut means = Vec::with_capacity(outer);
        let mut inv_std = Vec::with_capacity(outer);
        for o in 0..outer {
            let lane = &xs[o * block..(o + 1) * block];
            let mean = if self.rms { 0.0 } else { lane.iter().sum::<f64>() / block as f64 };
            let var = lane.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / block as f64;
            let inv = 1.0 / (var + self.epsilon).sqrt();
            for j in 0..block {
                let mut v = (lane[j] - mean) * inv * broadcast_in_block(&scale, scale_t.shape(), norm, j);
                if let Some((b, bs)) = &bias {
                    v += broadcast_in_block(b, bs, norm, j);
                }
                y[o * block + j] = v;
            }
            means.push(mean);
            inv_std.push(inv);
        }
        let mut out = vec![narrow(x, x.shape().to_vec(), y)?];
        let stat_shape: Vec<usize> = x.shape().iter().enumerate().map(|(d, &n)| if d < axis { n } else { 1 }).collect();
        if self.outputs > 1 {
            out.push(narrow(x, stat_shape.clone(), means)?);
        }
        if self.outputs > 2 {
            out.push(narrow(x, stat_shape, inv_std)?);
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct InstanceNorm {
    epsilon: f64,
}

fn build_instance_norm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(InstanceNorm { epsilon: f64::from(ctx.node.float_attr("epsilon", 1e-5)?) }))
}

impl Kernel for InstanceNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        if x.shape().len() < 3 {
            return Err(KernelError(format!("input must have rank 3 or more, got shape {:?}", x.shape())));
        }
        let c = x.shape()[1];
        let scale = per_channel(required(inputs, 1, "scale")?, "scale", c)?;
        let bias = per_channel(required(inputs, 2, "B")?, "B", c)?;
        let spatial: usize = x.shape()[2..].iter().product();
        let xs = wide(x, "input")?;
        let mut y = vec![0.0; xs.len()];
        for (lane_index, lane) in xs.chunks(spatial.max(1)).enumerate() {
            let ch = lane_index % c;
            let mean = lane.iter().sum::<f64>() / spatial as f64;
            let var = lane.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / spatial as f64;
            let inv = 1.0 / (var + self.epsilon).sqrt();
            for (j, &v) in lane.iter().enumerate() {
                y[lane_index * spatial + j] = (v - mean) * inv * scale[ch] + bias[ch];
            }
        }
        Ok(vec![narrow(x, x.shape().to_vec(), y)?])
    }
}

/// Local response normalisation across channels.
#[derive(Debug)]
struct Lrn {
    size: usize,
    alpha: f64,
    beta: f64,
    bias: f64,
}

fn build_lrn(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let size = ctx.node.int_attr("size", 0)?;
    if size < 1 {
        return Err(BuildError::invalid(ctx.node, format!("size must be a positive integer, got {size}")));
    }
    Ok(Box::new(Lrn {
        size: size as usize,
        alpha: f64::from(ctx.node.float_attr("alpha", 1e-4)?),
        beta: f64::from(ctx.node.float_attr("beta", 0.75)?),
        bias: f64::from(ctx.node.float_attr("bias", 1.0)?),
    }))
}

impl Kernel for Lrn {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        if x.shape().len() < 2 {
            return Err(KernelError(format!("X must have rank 2 or more, got shape {:?}", x.shape())));
        }
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let spatial: usize = x.shape()[2..].iter().product();
        let xs = wide(x, "X")?;
        let (before, after) = ((self.size - 1) / 2, self.size.div_ceil(2) - 1);
        let mut y = vec![0.0; xs.len()];
        for b in 0..n {
            for ch in 0..c {
                let lo = ch.saturating_sub(before);
                let hi = (ch + after).min(c - 1);
                for s in 0..spatial {
                    let at = |k: usize| (b * c + k) * spatial + s;
                    let square_sum: f64 = (lo..=hi).map(|k| xs[at(k)] * xs[at(k)]).sum();
                    y[at(ch)] = xs[at(ch)] / (self.bias + self.alpha / self.size as f64 * square_sum).powf(self.beta);
                }
            }
        }
        Ok(vec![narrow(x, x.shape().to_vec(), y)?])
    }
}

/// GroupNormalization: channels split into `num_groups` groups, each
/// (batch, group) normalised over its channels and spatial positions, then
/// scaled and shifted per channel (opset 21) or per group (opset 18).
#[derive(Debug)]
struct GroupNorm {
    groups: usize,
    epsilon: f64,
    per_group_params: bool,
}

fn build_group_norm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let groups = ctx.node.int_attr("num_groups", 0)?;
    if groups < 1 {
        return Err(BuildError::invalid(ctx.node, format!("num_groups must be at least 1, got {groups}")));
    }
    Ok(Box::new(GroupNorm {
        groups: groups as usize,
        epsilon: f64::from(ctx.node.float_attr("epsilon", 1e-5)?),
        per_group_params: ctx.opset < 21,
    }))
}

impl Kernel for GroupNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        if x.shape().len() < 2 || x.shape()[1] % self.groups != 0 {
            return Err(KernelError(format!(
                "X of shape {:?} must have rank 2 or more and channels divisible by num_groups {}",
                x.shape(),
                self.groups
            )));
        }
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let params = if self.per_group_params { self.groups } else { c };
        let scale = per_channel(required(inputs, 1, "scale")?, "scale", params)?;
        let bias = per_channel(required(inputs, 2, "bias")?, "bias", params)?;
        let spatial: usize = x.shape()[2..].iter().product();
        let per_group = c / self.groups;
        let block = per_group * spatial;
        let xs = wide(x, "X")?;
        let mut y = vec![0.0; xs.len()];
        for b in 0..n {
            for g in 0..self.groups {
                let start = (b * c + g * per_group) * spatial;
                let lane = &xs[start..start + block];
                let mean = lane.iter().sum::<f64>() / block.max(1) as f64;
                let var = lane.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / block.max(1) as f64;
                let inv = 1.0 / (var + self.epsilon).sqrt();
                for (j, &v) in lane.iter().enumerate() {
                    let p = if self.per_group_params { g } else { g * per_group + j / spatial.max(1) };
                    y[start + j] = (v - mean) * inv * scale[p] + bias[p];
                }
            }
        }
        Ok(vec![narrow(x, x.shape().to_vec(), y)?])
    }
}

/// MeanVarianceNormalization: `(X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9)`
/// over `axes` (ONNX's function body).
#[derive(Debug)]
struct MeanVarianceNorm {
    axes: Vec<i64>,
}

/// For each element of a tensor of `shape`, the index of its lane when
/// `axes` are reduced, and the number of lanes.
fn lanes(shape: &[usize], axes: &[usize]) -> (Vec<usize>, usize) {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    let lane_count: usize = kept.iter().map(|&d| shape[d]).product();
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        out.push(kept.iter().fold(0, |acc, &d| acc * shape[d] + idx[d]));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (out, lane_count)
}

impl Kernel for MeanVarianceNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let axes = self.axes.iter().map(|&a| normalize_axis(a, x.shape().len())).collect::<Result<Vec<_>, _>>()?;
        let (lane_of, count) = lanes(x.shape(), &axes);
        let xs = wide(x, "X")?;
        let per_lane = xs.len() / count.max(1);
        let (mut sum, mut sq) = (vec![0.0f64; count], vec![0.0f64; count]);
        for (&v, &l) in xs.iter().zip(&lane_of) {
            sum[l] += v;
            sq[l] += v * v;
        }
        let y = xs
            .iter()
            .zip(&lane_of)
            .map(|(&v, &l)| {
                let mean = sum[l] / per_lane as f64;
                let std = (sq[l] / per_lane as f64 - mean * mean).max(0.0).sqrt();
                (v - mean) / (std + 1e-9)
            })
            .collect();
        Ok(vec![narrow(x, x.shape().to_vec(), y)?])
    }
}

/// LpNormalization: X divided by its L1 or L2 norm along `axis` (a zero
/// norm leaves zeros).
#[derive(Debug)]
struct LpNorm {
    axis: i64,
    p: i64,
}

fn build_lp_norm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let p = ctx.node.int_attr("p", 2)?;
    if p != 1 && p != 2 {
        return Err(BuildError::invalid(ctx.node, format!("p must be 1 or 2, got {p}")));
    }
    Ok(Box::new(LpNorm { axis: ctx.node.int_attr("axis", -1)?, p }))
}

impl Kernel for LpNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let axis = normalize_axis(self.axis, x.shape().len())?;
        let (lane_of, count) = lanes(x.shape(), &[axis]);
        let xs = wide(x, "input")?;
        let mut norm = vec![0.0f64; count];
        for (&v, &l) in xs.iter().zip(&lane_of) {
            norm[l] += if self.p == 1 { v.abs() } else { v * v };
        }
        if self.p == 2 {
            norm.iter_mut().for_each(|n| *n = n.sqrt());
        }
        let y = xs.iter().zip(&lane_of).map(|(&v, &l)| if norm[l] == 0.0 { 0.0 } else { v / norm[l] }).collect();
        Ok(vec![narrow(x, x.shape().to_vec(), y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, run};
    use crate::tensor::Tensor;

    #[test]
    fn batch_norm_uses_the_running_statistics() {
        let x = Tensor::from_f32(vec![1, 2, 2], vec![1.0, 3.0, 10.0, 20.0]).unwrap();
        let ones = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let zeros = Tensor::from_f32(vec![2], vec![0.0, 1.0]).unwrap();
        let mean = Tensor::from_f32(vec![2], vec![2.0, 15.0]).unwrap();
        let var = Tensor::from_f32(vec![2], vec![1.0, 25.0]).unwrap();
        let eps = vec![("epsilon", Attribute::Float(0.0))];
        let out = run(&node("BatchNormalization", 5, eps), 15, &[&x, &ones, &zeros, &mean, &var]).unwrap();
        assert_close(out[0].as_f32().unwrap(), &[-1.0, 1.0, -1.0, 3.0]);
    }

    #[test]
    fn layer_and_instance_norm_normalise_their_lanes() {
        let x = Tensor::from_f32(vec![2, 2], vec![1.0, 3.0, 5.0, 5.0]).unwrap();
        let scale = Tensor::from_f32(vec![2], vec![1.0, 1.0]).unwrap();
        let eps = vec![("epsilon", Attribute::Float(0.0))];
        let mut layer = node("LayerNormalization", 2, eps.clone());
        layer.outputs = vec![2, 3];
        let out = run(&layer, 17, &[&x, &scale]).unwrap();
        let y = out[0].as_f32().unwrap();
        assert_close(&y[..2], &[-1.0, 1.0]);
        assert!(y[2].is_nan(), "a constant lane with epsilon 0 divides by zero");
        assert_eq!(out[1].shape(), [2, 1]);
        assert_close(out[1].as_f32().unwrap(), &[2.0, 5.0]);
        let x = Tensor::from_f32(vec![1, 1, 2], vec![1.0, 3.0]).unwrap();
        let one = Tensor::from_f32(vec![1], vec![1.0]).unwrap();
        let zero = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
        let out = run(&node("InstanceNormalization", 3, eps), 6, &[&x, &one, &zero]).unwrap();
        assert_close(out[0].as_f32().unwrap(), &[-1.0, 1.0]);
    }
}
