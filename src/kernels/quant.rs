//! Linear quantization as quantize-dequantize (QDQ) models use it:
//! QuantizeLinear, DequantizeLinear (per tensor, per axis or per block),
//! DynamicQuantizeLinear, and MatMulInteger. Quantized values are int8 or
//! uint8 (int32 too for DequantizeLinear's input); scales are float.

use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, normalize_axis, required};
use crate::tensor::{DataType, Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("QuantizeLinear", 10, MAX_OPSET, build);
    reg.register("DequantizeLinear", 10, MAX_OPSET, build);
    reg.register("DynamicQuantizeLinear", 11, MAX_OPSET, |_| Ok(Box::new(DynamicQuantize)));
    reg.register("MatMulInteger", 10, MAX_OPSET, |_| Ok(Box::new(MatMulInteger { qlinear: false })));
    reg.register("QLinearMatMul", 10, MAX_OPSET, |_| Ok(Box::new(MatMulInteger { qlinear: true })));
}

#[derive(Debug)]
struct Linear {
    quantize: bool,
    axis: i64,
    /// Block size along `axis` (opset 21); 0 for per-tensor or per-axis.
    block: usize,
    /// QuantizeLinear's `output_dtype` (opset 21), when no zero point says.
    output: Option<DataType>,
    saturate: bool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let block = node.int_attr("block_size", 0)?;
    if block < 0 {
        return Err(BuildError::invalid(node, format!("block_size must not be negative, got {block}")));
    }
    let output = match node.int_attr("output_dtype", 0)? {
        0 => None,
        code => Some(
            super::onnx_dtype(code)
                .ok_or_else(|| BuildError::invalid(node, format!("output_dtype {code} is not supported")))?,
        ),
    };
    Ok(Box::new(Linear {
        quantize: node.op == "QuantizeLinear",
        axis: node.int_attr("axis", 1)?,
        block: block as usize,
        output,
        saturate: node.int_attr("saturate", 1)? != 0,
    }))
}

/// The elements of an int8, uint8 or int32 tensor as i64.
fn ints(t: &Tensor, what: &str) -> Result<Vec<i64>, KernelError> {
    Ok(match t.data() {
        TensorData::Int8(v) => v.iter().map(|&a| i64::from(a)).collect(),
        TensorData::UInt8(v) => v.iter().map(|&a| i64::from(a)).collect(),
        TensorData::Int32(v) => v.iter().map(|&a| i64::from(a)).collect(),
        other => return Err(KernelError(format!("{what} must be int8, uint8 or int32, not {}", other.dtype()))),
    })
}

/// Range and constructor of a quantized element type.
fn quantized(dtype: DataType, values: Vec<i64>) -> Result<TensorData, KernelError> {
    Ok(match dtype {
        DataType::UInt8 => TensorData::UInt8(values.into_iter().map(|v| v.clamp(0, 255) as u8).collect()),
        DataType::Int8 => TensorData::Int8(values.into_iter().map(|v| v.clamp(-128, 127) as i8).collect()),
        DataType::Int32 => {
            TensorData::Int32(values.into_iter().map(|v| v.clamp(i32::MIN.into(), i32::MAX.into()) as i32).collect())
        }
        other => return Err(KernelError(format!("quantizing to {other} is not supported"))),
    })
}

impl Linear {
    /// For each element of `x`, the index of its scale (and zero point).
    fn param_index(&self, x: &[usize], scale: &[usize]) -> Result<Box<dyn Fn(usize) -> usize>, KernelError> {
        let count: usize = scale.iter().product();
        if count == 1 && self.block == 0 {
            return Ok(Box::new(|_| 0));
        }
        let axis = normalize_axis(self.axis, x.len())?;
        let inner: usize = x[axis + 1..].iter().product();
        let n = x[axis];
        if self.block == 0 {
            if scale.len() != 1 || scale[0] != n {
                return Err(KernelError(format!("a per-axis scale must have shape [{n}], got {scale:?}")));
            }
            return Ok(Box::new(move |i| (i / inner) % n));
        }
        let blocks = n.div_ceil(self.block);
        let mut want = x.to_vec();
        want[axis] = blocks;
        if scale != want.as_slice() {
            return Err(KernelError(format!("a blocked scale must have shape {want:?}, got {scale:?}")));
        }
        let block = self.block;
        Ok(Box::new(move |i| {
            let (outer, rest) = (i / (n * inner), i % (n * inner));
            let (a, j) = (rest / inner, rest % inner);
            (outer * blocks + a / block) * inner + j
        }))
    }
}

impl Kernel for Linear {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "x")?;
        let scale_t = required(inputs, 1, "scale")?;
        let scale = super::float_values(scale_t, "scale")?;
        let zero = inputs.get(2).copied().flatten();
        let at = self.param_index(x.shape(), scale_t.shape())?;
        if let Some(z) = zero
            && z.shape() != scale_t.shape()
        {
            return Err(KernelError(format!(
                "zero point shape {:?} differs from scale shape {:?}",
                z.shape(),
                scale_t.shape()
            )));
        }
        if self.quantize {
            let values = super::float_values(x, "x")?;
            let dtype = zero.map(Tensor::dtype).or(self.output).unwrap_or(DataType::UInt8);
            let zp = match zero {
                Some(z) => ints(z, "zero point")?,
                None => vec![0; scale.len()],
            };
            let _ = self.saturate; // int8 and uint8 always saturate; the flag is for float8.
            // Float inputs divide in float, as the specification's reference does.
            let single = x.dtype() == DataType::Float;
            let q = values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let k = at(i);
                    let ratio = if single { f64::from(v as f32 / scale[k] as f32) } else { v / scale[k] };
                    let r = ratio.round_ties_even();
                    if r.is_nan() { zp[k] } else { (r.clamp(-1e18, 1e18) as i64).saturating_add(zp[k]) }
                })
                .collect();
            return Ok(vec![Tensor::new(x.shape().to_vec(), quantized(dtype, q)?)?]);
        }
        let q = ints(x, "x")?;
        let zp = match zero {
            Some(z) => ints(z, "zero point")?,
            None => vec![0; scale.len()],
        };
        let y = q.iter().enumerate().map(|(i, &v)| (v - zp[at(i)]) as f64 * scale[at(i)]).collect();
        Ok(vec![super::float_tensor_like(scale_t, x.shape().to_vec(), y)?])
    }
}

/// DynamicQuantizeLinear: uint8 with the scale and zero point that map
/// [min(0, x), max(0, x)] onto [0, 255].
#[derive(Debug)]
struct DynamicQuantize;

impl Kernel for DynamicQuantize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "x")?;
        let v = super::floats(x, "x")?;
        let lo = v.iter().copied().fold(0.0f32, f32::min);
        let hi = v.iter().copied().fold(0.0f32, f32::max);
        let scale = (hi - lo) / 255.0;
        let zp = if scale == 0.0 { 0.0 } else { (-lo / scale).round_ties_even().clamp(0.0, 255.0) };
        let y = v
            .iter()
            .map(
                |&a| if scale == 0.0 { zp as u8 } else { ((a / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8 },
            )
            .collect();
        Ok(vec![
            Tensor::new(x.shape().to_vec(), TensorData::UInt8(y))?,
            Tensor::from_f32(vec![], vec![scale])?,
            Tensor::new(vec![], TensorData::UInt8(vec![zp as u8]))?,
        ])
    }
}

/// MatMulInteger: (A - a_zero_point) · (B - b_zero_point) in int32, with
/// numpy's batch broadcasting; zero points per tensor, per row of A or per
/// column of B. QLinearMatMul (inputs a, a_scale, a_zero_point, b, b_scale,
/// b_zero_point, y_scale, y_zero_point): the same sum times a_scale *
/// b_scale / y_scale, plus y_zero_point, rounded half to even and
/// saturated to y's type.
#[derive(Debug)]
struct MatMulInteger {
    qlinear: bool,
}

impl Kernel for MatMulInteger {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let (ia, ib, iaz, ibz) = if self.qlinear { (0, 3, 2, 5) } else { (0, 1, 2, 3) };
        let a = required(inputs, ia, "A")?;
        let b = required(inputs, ib, "B")?;
        let (av, bv) = (ints(a, "A")?, ints(b, "B")?);
        let zp = |i: usize, what: &str| -> Result<Vec<i64>, KernelError> {
            inputs.get(i).copied().flatten().map_or(Ok(vec![0]), |t| ints(t, what))
        };
        let (azp, bzp) = (zp(iaz, "a_zero_point")?, zp(ibz, "b_zero_point")?);
        let (ra, rb) = (a.shape().len(), b.shape().len());
        if ra < 2 || rb < 2 {
            return Err(KernelError(format!("A {:?} and B {:?} must have rank 2 or more", a.shape(), b.shape())));
        }
        let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
        if b.shape()[rb - 2] != k {
            return Err(KernelError(format!("A {:?} and B {:?} have different inner dims", a.shape(), b.shape())));
        }
        if (azp.len() != 1 && azp.len() != m) || (bzp.len() != 1 && bzp.len() != n) {
            return Err(KernelError("zero points must be scalars, per row of A or per column of B".into()));
        }
        let batch = super::broadcast::broadcast_shape(&a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
        let count: usize = batch.iter().product();
        let index = |shape: &[usize], bi: usize| -> usize {
            // The batch index of an operand whose batch dims broadcast to `batch`.
            let mut rest = bi;
            let mut at = 0;
            let mut stride = 1;
            for d in (0..batch.len()).rev() {
                let i = rest % batch[d];
                rest /= batch[d];
                if let Some(k) = (d + shape.len()).checked_sub(batch.len()) {
                    if shape[k] != 1 {
                        at += i * stride;
                    }
                    stride *= shape[k];
                }
            }
            at
        };
        let mut y = vec![0i64; count * m * n];
        for bi in 0..count {
            let (ao, bo) = (index(&a.shape()[..ra - 2], bi) * m * k, index(&b.shape()[..rb - 2], bi) * k * n);
            for i in 0..m {
                let za = azp[if azp.len() == 1 { 0 } else { i }];
                for j in 0..n {
                    let zb = bzp[if bzp.len() == 1 { 0 } else { j }];
                    let s: i64 = (0..k).map(|p| (av[ao + i * k + p] - za) * (bv[bo + p * n + j] - zb)).sum();
                    y[(bi * m + i) * n + j] = s;
                }
            }
        }
        let mut shape = batch;
        shape.extend([m, n]);
        if !self.qlinear {
            let y = y.into_iter().map(|v| v.clamp(i32::MIN.into(), i32::MAX.into()) as i32).collect();
            return Ok(vec![Tensor::new(shape, TensorData::Int32(y))?]);
        }
        let scale = |i: usize, what: &str| -> Result<f32, KernelError> {
            match super::floats(required(inputs, i, what)?, what)? {
                [v] => Ok(*v),
                other => Err(KernelError(format!("{what} must be one value, got {}", other.len()))),
            }
        };
        let factor = f64::from(scale(1, "a_scale")? * scale(4, "b_scale")? / scale(6, "y_scale")?);
        let (zero, dtype) = match inputs.get(7).copied().flatten() {
            Some(z) => (ints(z, "y_zero_point")?.first().copied().unwrap_or(0), z.dtype()),
            None => (0, a.dtype()),
        };
        let q = y
            .into_iter()
            .map(|v| (v as f64 * factor + zero as f64).round_ties_even().clamp(-1e18, 1e18) as i64)
            .collect();
        Ok(vec![Tensor::new(shape, quantized(dtype, q)?)?])
    }
}
