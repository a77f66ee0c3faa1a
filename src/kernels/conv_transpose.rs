//! ConvTranspose over N-D inputs: the gradient of Conv, as ONNX defines it
//! (groups, strides, dilations, pads or auto_pad, output_padding,
//! output_shape). Each input element scatters its products with the kernel
//! into the output.

use super::conv::AutoPad;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::tensor::Tensor;

pub fn register(reg: &mut KernelRegistry) {
    reg.register("ConvTranspose", 1, MAX_OPSET, build);
}

#[derive(Debug)]
struct ConvTranspose {
    group: usize,
    kernel: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
    auto_pad: AutoPad,
}

fn list(ctx: &BuildContext<'_>, name: &str, min: i64) -> Result<Option<Vec<usize>>, BuildError> {
    match ctx.node.ints_attr(name)? {
        None => Ok(None),
        Some(v) if v.iter().all(|&x| x >= min) => Ok(Some(v.iter().map(|&x| x as usize).collect())),
        Some(v) => Err(BuildError::invalid(
            ctx.node,
            format!("attribute '{name}' must hold integers of {min} or more, got {v:?}"),
        )),
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let group = ctx.node.int_attr("group", 1)?;
    if group < 1 {
        return Err(BuildError::invalid(ctx.node, format!("group must be at least 1, got {group}")));
    }
    let auto_pad = AutoPad::from_node(ctx.node)?;
    Ok(Box::new(ConvTranspose {
        group: group as usize,
        kernel: list(ctx, "kernel_shape", 1)?,
        strides: list(ctx, "strides", 1)?,
        dilations: list(ctx, "dilations", 1)?,
        pads: list(ctx, "pads", 0)?,
        output_padding: list(ctx, "output_padding", 0)?,
        output_shape: list(ctx, "output_shape", 0)?,
        auto_pad,
    }))
}

fn per_dim(v: &Option<Vec<usize>>, rank: usize, default: usize, name: &str) -> Result<Vec<usize>, KernelError> {
    match v {
        None => Ok(vec![default; rank]),
        Some(v) if v.len() == rank => Ok(v.clone()),
        Some(v) => Err(KernelError(format!("{name} {v:?} must hold {rank} values"))),
    }
}

impl Kernel for ConvTranspose {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let w = required(inputs, 1, "W")?;
        let xr = x.shape().len();
        if xr < 3 || w.shape().len() != xr {
            return Err(KernelError(format!(
                "X and W must have one rank of 3 or more, got shapes {:?} and {:?}",
                x.shape(),
                w.shape()
            )));
        }
        let rank = xr - 2;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let g = self.group;
        let (wc, m_per_group) = (w.shape()[0], w.shape()[1]);
        if wc != c || c % g != 0 {
            return Err(KernelError(format!(
                "W of shape {:?} does not fit {c} input channels in {g} groups",
                w.shape()
            )));
        }
        let m = m_per_group * g;
        let kernel = w.shape()[2..].to_vec();
        if let Some(k) = &self.kernel
            && *k != kernel
        {
            return Err(KernelError(format!("kernel_shape {k:?} differs from the weights' {kernel:?}")));
        }
        let strides = per_dim(&self.strides, rank, 1, "strides")?;
        let dilations = per_dim(&self.dilations, rank, 1, "dilations")?;
        let out_pad = per_dim(&self.output_padding, rank, 0, "output_padding")?;
        let input = &x.shape()[2..];
        // The output size without any padding removed, per dim.
        let full: Vec<usize> =
            (0..rank).map(|d| strides[d] * (input[d] - 1) + out_pad[d] + (kernel[d] - 1) * dilations[d] + 1).collect();
        let (begin, out): (Vec<usize>, Vec<usize>) = match (&self.output_shape, self.auto_pad) {
            (Some(shape), mode) => {
                let shape = if shape.len() == rank {
                    shape.clone()
                } else if shape.len() == rank + 2 {
                    shape[2..].to_vec()
                } else {
                    return Err(KernelError(format!("output_shape {shape:?} must hold {rank} dims")));
                };
                // A larger output than the input produces is padded at the
                // end (as onnxruntime does), so the padding never goes below 0.
                let begin = (0..rank)
                    .map(|d| {
                        let total = full[d].saturating_sub(shape[d]);
                        if mode == AutoPad::SameUpper { total / 2 } else { total - total / 2 }
                    })
                    .collect();
                (begin, shape)
            }
            (None, AutoPad::SameUpper | AutoPad::SameLower) => {
                let shape: Vec<usize> = (0..rank).map(|d| input[d] * strides[d]).collect();
                let begin = (0..rank)
                    .map(|d| {
                        let total = full[d].saturating_sub(shape[d]);
                        if self.auto_pad == AutoPad::SameUpper { total / 2 } else { total - total / 2 }
                    })
                    .collect();
                (begin, shape)
            }
            (None, AutoPad::Valid) => (vec![0; rank], full.clone()),
            (None, AutoPad::NotSet) => {
                let pads = per_dim(&self.pads, 2 * rank, 0, "pads")?;
                let mut out = Vec::with_capacity(rank);
                for d in 0..rank {
                    out.push(full[d].checked_sub(pads[d] + pads[d + rank]).ok_or_else(|| {
                        KernelError(format!("pads {pads:?} remove more than the output's dim {d} ({})", full[d]))
                    })?);
                }
                (pads[..rank].to_vec(), out)
            }
        };
        let xd = floats(x, "X")?;
        let wd = floats(w, "W")?;
        let bias = match inputs.get(2).copied().flatten() {
            Some(b) if b.shape() == [m] => Some(floats(b, "B")?),
            Some(b) => return Err(KernelError(format!("B must have shape [{m}], got {:?}", b.shape()))),
            None => None,
        };
        let in_size: usize = input.iter().product();
        let k_size: usize = kernel.iter().product();
        let out_size: usize = out.iter().product();
        let c_per_group = c / g;
        // Row-major coordinates of a flat index.
        let coords = |mut i: usize, dims: &[usize]| -> Vec<usize> {
            let mut v = vec![0; dims.len()];
            for d in (0..dims.len()).rev() {
                v[d] = i % dims[d];
                i /= dims[d];
            }
            v
        };
        let in_coords: Vec<Vec<usize>> = (0..in_size).map(|i| coords(i, input)).collect();
        let k_coords: Vec<Vec<usize>> = (0..k_size).map(|i| coords(i, &kernel)).collect();
        let mut y = vec![0.0f32; n * m * out_size];
        for b in 0..n {
            for oc in 0..m {
                let plane = &mut y[(b * m + oc) * out_size..(b * m + oc + 1) * out_size];
                plane.fill(bias.map_or(0.0, |bv| bv[oc]));
                let (grp, ocg) = (oc / m_per_group, oc % m_per_group);
                for icg in 0..c_per_group {
                    let ic = grp * c_per_group + icg;
                    let xs = &xd[(b * c + ic) * in_size..(b * c + ic + 1) * in_size];
                    let ws = &wd[(ic * m_per_group + ocg) * k_size..(ic * m_per_group + ocg + 1) * k_size];
                    for (ii, ip) in in_coords.iter().enumerate() {
                        let xv = xs[ii];
                        'taps: for (ki, kp) in k_coords.iter().enumerate() {
                            let mut at = 0;
                            for d in 0..rank {
                                let pos = (ip[d] * strides[d] + kp[d] * dilations[d]) as i64 - begin[d] as i64;
                                if pos < 0 || pos as usize >= out[d] {
                                    continue 'taps;
                                }
                                at = at * out[d] + pos as usize;
                            }
                            plane[at] += xv * ws[ki];
                        }
                    }
                }
            }
        }
        let mut shape = vec![n, m];
        shape.extend_from_slice(&out);
        Ok(vec![Tensor::from_f32(shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, run};
    use crate::tensor::Tensor;

    #[test]
    fn stride_two_spreads_each_input_over_the_kernel() {
        // 1-D: x = [1, 2], w = [1, 1, 1], stride 2 -> [1, 1, 3, 2, 2].
        let x = Tensor::from_f32(vec![1, 1, 2], vec![1.0, 2.0]).unwrap();
        let w = Tensor::from_f32(vec![1, 1, 3], vec![1.0, 1.0, 1.0]).unwrap();
        let out = run(&node("ConvTranspose", 2, vec![("strides", Attribute::Ints(vec![2]))]), 11, &[&x, &w]).unwrap();
        assert_eq!(out[0].shape(), [1, 1, 5]);
        assert_eq!(out[0].as_f32().unwrap(), &[1.0, 1.0, 3.0, 2.0, 2.0]);
        let pads = vec![("strides", Attribute::Ints(vec![2])), ("pads", Attribute::Ints(vec![1, 1]))];
        let out = run(&node("ConvTranspose", 2, pads), 11, &[&x, &w]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[1.0, 3.0, 2.0]);
    }
}
