//! Pooling over NCHW tensors: MaxPool and AveragePool (1-D and 2-D), and
//! GlobalMaxPool and GlobalAveragePool (any spatial rank).

use rayon::prelude::*;

use super::conv::{Axis, Window};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("MaxPool", 1, MAX_OPSET, build_max_pool);
    reg.register("AveragePool", 1, MAX_OPSET, build_average_pool);
    reg.register("GlobalMaxPool", 1, MAX_OPSET, |_| Ok(Box::new(GlobalPool { max: true })));
    reg.register("GlobalAveragePool", 1, MAX_OPSET, |_| Ok(Box::new(GlobalPool { max: false })));
}

/// AveragePool: the mean of the taps inside the input, or, with
/// `count_include_pad`, divided by the taps inside the padded input.
#[derive(Debug)]
struct AveragePool {
    window: Window,
    count_include_pad: bool,
}

fn build_average_pool(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let Some(rank) = node.ints_attr("kernel_shape")?.map(<[i64]>::len) else {
        return Err(BuildError::invalid(node, "attribute 'kernel_shape' is required"));
    };
    if ctx.opset < 19 && node.ints_attr("dilations")?.is_some_and(|d| d.iter().any(|&x| x != 1)) {
        return Err(BuildError::invalid(node, "dilations need opset 19 or later"));
    }
    Ok(Box::new(AveragePool {
        window: Window::from_node(node, rank, true)?,
        count_include_pad: node.int_attr("count_include_pad", 0)? != 0,
    }))
}

impl Kernel for AveragePool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let [ah, aw] = geometry(&self.window, x)?;
        let xd = floats(x, "X")?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let (ih, iw, oh, ow) = (ah.input, aw.input, ah.output, aw.output);
        let plane = oh * ow;
        let include_pad = self.count_include_pad;
        // Taps of one window that fall inside [lo, hi) along an axis.
        let taps = |a: &Axis, o: usize, lo: i64, hi: i64| {
            (0..a.kernel)
                .filter(|&k| {
                    let p = (o * a.stride + k * a.dilation) as i64 - a.pad_begin as i64;
                    (lo..hi).contains(&p)
                })
                .count()
        };
        let mut y = vec![0.0f32; n * c * plane];
        if plane > 0 {
            y.par_chunks_mut(plane).enumerate().for_each(|(idx, out)| {
                let input = &xd[idx * ih * iw..(idx + 1) * ih * iw];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = 0.0f64;
                        for ky in 0..ah.kernel {
                            let iy = (oy * ah.stride + ky * ah.dilation) as i64 - ah.pad_begin as i64;
                            if !(0..ih as i64).contains(&iy) {
                                continue;
                            }
                            for kx in 0..aw.kernel {
                                let ix = (ox * aw.stride + kx * aw.dilation) as i64 - aw.pad_begin as i64;
                                if (0..iw as i64).contains(&ix) {
                                    sum += f64::from(input[iy as usize * iw + ix as usize]);
                                }
                            }
                        }
                        let count = if include_pad {
                            taps(&ah, oy, -(ah.pad_begin as i64), (ih + ah.pad_end) as i64)
                                * taps(&aw, ox, -(aw.pad_begin as i64), (iw + aw.pad_end) as i64)
                        } else {
                            taps(&ah, oy, 0, ih as i64) * taps(&aw, ox, 0, iw as i64)
                        };
                        out[oy * ow + ox] = if count == 0 { 0.0 } else { (sum / count as f64) as f32 };
                    }
                }
            });
        }
        Ok(vec![Tensor::from_f32(self.window.output_shape(n, c, [ah, aw]), y)?])
    }
}

/// GlobalMaxPool and GlobalAveragePool: one value per (batch, channel)
/// over all spatial dims, which stay as dims of 1.
#[derive(Debug)]
struct GlobalPool {
    max: bool,
}

impl Kernel for GlobalPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        if x.shape().len() < 2 {
            return Err(KernelError(format!("X must have rank 2 or more, got shape {:?}", x.shape())));
        }
        let spatial: usize = x.shape()[2..].iter().product();
        let lanes = x.shape()[0] * x.shape()[1];
        let pool = |lane: &[f64]| -> f64 {
            if self.max {
                lane.iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, |a, v| if v.is_nan() || a.is_nan() { f64::NAN } else { a.max(v) })
            } else {
                lane.iter().sum::<f64>() / lane.len() as f64
            }
        };
        let data = match x.data() {
            TensorData::Float(v) => {
                let wide: Vec<f64> = v.iter().map(|&a| f64::from(a)).collect();
                TensorData::Float((0..lanes).map(|l| pool(&wide[l * spatial..(l + 1) * spatial]) as f32).collect())
            }
            TensorData::Double(v) => {
                TensorData::Double((0..lanes).map(|l| pool(&v[l * spatial..(l + 1) * spatial])).collect())
            }
            other => return Err(KernelError(format!("X must be DT_FLOAT or DT_DOUBLE but is {}", other.dtype()))),
        };
        let shape = x.shape().iter().enumerate().map(|(d, &n)| if d < 2 { n } else { 1 }).collect();
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// Checks X's rank against a pooling window and resolves the window's
/// geometry on it.
fn geometry(window: &Window, x: &Tensor) -> Result<[Axis; 2], KernelError> {
    let rank = window.rank;
    if x.shape().len() != rank + 2 {
        return Err(KernelError(format!(
            "X must have rank {} for {rank}-D pooling, got shape {:?}",
            rank + 2,
            x.shape()
        )));
    }
    window.resolve(&x.shape()[2..], window.kernel.as_deref().unwrap_or_default())
}

#[derive(Debug)]
struct MaxPool {
    window: Window,
}

fn build_max_pool(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    if node.outputs.len() > 1 {
        return Err(BuildError::invalid(node, "the optional Indices output is not supported"));
    }
    if node.int_attr("storage_order", 0)? != 0 {
        return Err(BuildError::invalid(node, "storage_order 1 (column major) is not supported"));
    }
    let Some(rank) = node.ints_attr("kernel_shape")?.map(<[i64]>::len) else {
        return Err(BuildError::invalid(node, "attribute 'kernel_shape' is required"));
    };
    Ok(Box::new(MaxPool { window: Window::from_node(node, rank, true)? }))
}

impl Kernel for MaxPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let [ah, aw] = geometry(&self.window, x)?;
        let xd = floats(x, "X")?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let (ih, iw, oh, ow) = (ah.input, aw.input, ah.output, aw.output);
        let plane = oh * ow;
        let mut y = vec![f32::NEG_INFINITY; n * c * plane];
        if plane > 0 {
            y.par_chunks_mut(plane).enumerate().for_each(|(idx, out)| {
                let input = &xd[idx * ih * iw..(idx + 1) * ih * iw];
                for ky in 0..ah.kernel {
                    let rows = ah.valid_outputs(ky);
                    for kx in 0..aw.kernel {
                        let cols = aw.valid_outputs(kx);
                        for oy in rows.clone() {
                            let iy = oy * ah.stride + ky * ah.dilation - ah.pad_begin;
                            for ox in cols.clone() {
                                let ix = ox * aw.stride + kx * aw.dilation - aw.pad_begin;
                                let v = input[iy * iw + ix];
                                let o = &mut out[oy * ow + ox];
                                // NaN propagates, as in onnxruntime.
                                if v > *o || v.is_nan() {
                                    *o = v;
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok(vec![Tensor::from_f32(self.window.output_shape(n, c, [ah, aw]), y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, random_floats, run};
    use crate::tensor::Tensor;

    #[allow(clippy::too_many_arguments)]
    fn naive_max_pool(
        x: &[f32],
        h: usize,
        w: usize,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 4],
        oh: usize,
        ow: usize,
    ) -> Vec<f32> {
        let mut y = vec![f32::NEG_INFINITY; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..k[0] {
                    for kx in 0..k[1] {
                        let iy = (oy * s[0] + ky) as isize - p[0] as isize;
                        let ix = (ox * s[1] + kx) as isize - p[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            y[oy * ow + ox] = y[oy * ow + ox].max(x[iy as usize * w + ix as usize]);
                        }
                    }
                }
            }
        }
        y
    }

    fn ints(v: &[usize]) -> Attribute {
        Attribute::Ints(v.iter().map(|&x| x as i64).collect())
    }

    #[test]
    fn max_pool_2x2_and_padded_3x3_match_naive() {
        let x = random_floats(2 * 3 * 26 * 26, 1);
        let t = Tensor::from_f32(vec![2, 3, 26, 26], x.clone()).unwrap();
        let out =
            run(&node("MaxPool", 1, vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]), 12, &[&t])
                .unwrap();
        assert_eq!(out[0].shape(), &[2, 3, 13, 13]);
        let got = out[0].as_f32().unwrap();
        for plane in 0..6 {
            let exp = naive_max_pool(&x[plane * 676..(plane + 1) * 676], 26, 26, [2, 2], [2, 2], [0; 4], 13, 13);
            assert_eq!(&got[plane * 169..(plane + 1) * 169], exp.as_slice());
        }
        let out = run(
            &node(
                "MaxPool",
                1,
                vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            ),
            12,
            &[&t],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[2, 3, 13, 13]);
        let exp = naive_max_pool(&x[..676], 26, 26, [3, 3], [2, 2], [1, 1, 1, 1], 13, 13);
        assert_eq!(&out[0].as_f32().unwrap()[..169], exp.as_slice());
    }

    #[test]
    fn ceil_mode_adds_a_partial_window() {
        let x: Vec<f32> = (0..25).map(|v| v as f32).collect();
        let t = Tensor::from_f32(vec![1, 1, 5, 5], x).unwrap();
        let attrs = vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2])), ("ceil_mode", Attribute::Int(1))];
        let out = run(&node("MaxPool", 1, attrs), 12, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 3, 3]);
        assert_eq!(out[0].as_f32().unwrap(), &[6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]);
    }

    #[test]
    fn kernel_shape_is_required() {
        let t = Tensor::from_f32(vec![1, 1, 2, 2], vec![0.0; 4]).unwrap();
        let err = run(&node("MaxPool", 1, vec![]), 12, &[&t]).unwrap_err();
        assert!(err.0.contains("kernel_shape"), "{err}");
    }
}
