//! Elementwise functions of one tensor: math (Abs, Neg, Sqrt, Exp, Log,
//! Reciprocal, Floor, Ceil, Round, Sign, Erf, the trigonometric and
//! hyperbolic functions) and activations (Sigmoid, Tanh, Softplus, Softsign,
//! LeakyRelu, Elu, Selu, Celu, HardSigmoid, HardSwish, ThresholdedRelu,
//! Gelu, Mish, Swish), plus Clip and PRelu.
//!
//! Float and double inputs are computed in f64 and rounded back, which keeps
//! every function within a rounding step of the exact value. Abs, Neg, Sign
//! and Clip also take integers.

use super::broadcast::binary;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, required};
use crate::tensor::{Tensor, TensorData};

/// A function of one element, with the attributes it was built with.
#[derive(Debug, Clone, Copy)]
enum Op {
    Abs,
    Neg,
    Sqrt,
    Exp,
    Log,
    Reciprocal,
    Floor,
    Ceil,
    Round,
    Sign,
    Erf,
    /// TensorFlow's Erfc, Rsqrt, Log1p and Expm1 (no ONNX operator has
    /// them; composing them from ONNX ones loses precision).
    Erfc,
    Rsqrt,
    Log1p,
    Expm1,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Sigmoid,
    Tanh,
    Softplus,
    Softsign,
    LeakyRelu {
        alpha: f64,
    },
    Elu {
        alpha: f64,
    },
    Selu {
        alpha: f64,
        gamma: f64,
    },
    Celu {
        alpha: f64,
    },
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    HardSwish,
    ThresholdedRelu {
        alpha: f64,
    },
    Gelu {
        tanh: bool,
    },
    Mish,
    Swish {
        alpha: f64,
    },
    /// `x + bias` below `-lambd`, `x - bias` above `lambd`, else 0.
    Shrink {
        lambd: f64,
        bias: f64,
    },
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) }
}

/// ln(1 + e^x) without overflow for large x.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl Op {
    fn apply(self, x: f64) -> f64 {
        match self {
            Op::Abs => x.abs(),
            Op::Neg => -x,
            Op::Sqrt => x.sqrt(),
            Op::Exp => x.exp(),
            Op::Log => x.ln(),
            Op::Reciprocal => 1.0 / x,
            Op::Floor => x.floor(),
            Op::Ceil => x.ceil(),
            // numpy's rounding: halves go to the even neighbour.
            Op::Round => x.round_ties_even(),
            Op::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            }
            Op::Erf => libm::erf(x),
            Op::Erfc => libm::erfc(x),
            Op::Rsqrt => 1.0 / x.sqrt(),
            Op::Log1p => x.ln_1p(),
            Op::Expm1 => x.exp_m1(),
            Op::Sin => x.sin(),
            Op::Cos => x.cos(),
            Op::Tan => x.tan(),
            Op::Asin => x.asin(),
            Op::Acos => x.acos(),
            Op::Atan => x.atan(),
            Op::Sinh => x.sinh(),
            Op::Cosh => x.cosh(),
            Op::Asinh => x.asinh(),
            Op::Acosh => x.acosh(),
            Op::Atanh => x.atanh(),
            Op::Sigmoid => sigmoid(x),
            Op::Tanh => x.tanh(),
            Op::Softplus => softplus(x),
            Op::Softsign => x / (1.0 + x.abs()),
            Op::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Op::Elu { alpha } => {
                if x < 0.0 {
                    alpha * x.exp_m1()
                } else {
                    x
                }
            }
            Op::Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * alpha * x.exp_m1()
                } else {
                    gamma * x
                }
            }
            Op::Celu { alpha } => x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0),
            Op::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Op::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Op::ThresholdedRelu { alpha } => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            Op::Gelu { tanh: false } => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Op::Gelu { tanh: true } => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Op::Mish => x * softplus(x).tanh(),
            Op::Swish { alpha } => x * sigmoid(alpha * x),
            Op::Shrink { lambd, bias } => {
                if x < -lambd {
                    x + bias
                } else if x > lambd {
                    x - bias
                } else {
                    0.0
                }
            }
        }
    }

    /// The integer form, for the functions defined on integers.
    fn apply_int<T: num::Int>(self, x: T) -> Option<T> {
        match self {
            Op::Abs => Some(x.abs_wrapping()),
            Op::Neg => Some(x.neg_wrapping()),
            Op::Sign => Some(x.signum()),
            _ => None,
        }
    }
}

/// The few integer operations the integer forms need, over every integer
/// element type.
mod num {
    pub trait Int: Copy + PartialOrd {
        fn abs_wrapping(self) -> Self;
        fn neg_wrapping(self) -> Self;
        fn signum(self) -> Self;
    }

    macro_rules! signed {
        ($($t:ty),*) => {$(
            impl Int for $t {
                fn abs_wrapping(self) -> Self { self.wrapping_abs() }
                fn neg_wrapping(self) -> Self { self.wrapping_neg() }
                fn signum(self) -> Self { <$t>::signum(self) }
            }
        )*};
    }
    signed!(i8, i32, i64);

    impl Int for u8 {
        fn abs_wrapping(self) -> Self {
            self
        }
        fn neg_wrapping(self) -> Self {
            self.wrapping_neg()
        }
        fn signum(self) -> Self {
            u8::from(self > 0)
        }
    }
}

#[derive(Debug)]
struct Unary(Op);

fn map_ints<T: num::Int>(v: &[T], op: Op) -> Option<Vec<T>> {
    v.iter().map(|&x| op.apply_int(x)).collect()
}

impl Kernel for Unary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let op = self.0;
        let data = match x.data() {
            TensorData::Float(v) => Some(TensorData::Float(v.iter().map(|&a| op.apply(f64::from(a)) as f32).collect())),
            TensorData::Double(v) => Some(TensorData::Double(v.iter().map(|&a| op.apply(a)).collect())),
            TensorData::Int32(v) => map_ints(v, op).map(TensorData::Int32),
            TensorData::Int64(v) => map_ints(v, op).map(TensorData::Int64),
            TensorData::Int8(v) => map_ints(v, op).map(TensorData::Int8),
            TensorData::UInt8(v) => map_ints(v, op).map(TensorData::UInt8),
            TensorData::Bool(_) | TensorData::String(_) => None,
        };
        let data = data.ok_or_else(|| KernelError(format!("{op:?} does not take {} input", x.dtype())))?;
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

fn float_attr(ctx: &BuildContext<'_>, name: &str, default: f64) -> Result<f64, BuildError> {
    Ok(f64::from(ctx.node.float_attr(name, default as f32)?))
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let a = |name, default| float_attr(ctx, name, default);
    let op = match ctx.node.op.as_str() {
        "Abs" => Op::Abs,
        "Neg" => Op::Neg,
        "Sqrt" => Op::Sqrt,
        "Exp" => Op::Exp,
        "Log" => Op::Log,
        "Reciprocal" => Op::Reciprocal,
        "Floor" => Op::Floor,
        "Ceil" => Op::Ceil,
        "Round" => Op::Round,
        "Sign" => Op::Sign,
        "Erf" => Op::Erf,
        "tf.Erfc" => Op::Erfc,
        "tf.Rsqrt" => Op::Rsqrt,
        "tf.Log1p" => Op::Log1p,
        "tf.Expm1" => Op::Expm1,
        "Sin" => Op::Sin,
        "Cos" => Op::Cos,
        "Tan" => Op::Tan,
        "Asin" => Op::Asin,
        "Acos" => Op::Acos,
        "Atan" => Op::Atan,
        "Sinh" => Op::Sinh,
        "Cosh" => Op::Cosh,
        "Asinh" => Op::Asinh,
        "Acosh" => Op::Acosh,
        "Atanh" => Op::Atanh,
        "Sigmoid" => Op::Sigmoid,
        "Tanh" => Op::Tanh,
        "Softplus" => Op::Softplus,
        "Softsign" => Op::Softsign,
        "LeakyRelu" => Op::LeakyRelu { alpha: a("alpha", 0.01)? },
        "Elu" => Op::Elu { alpha: a("alpha", 1.0)? },
        // The defaults are the float32 values ONNX specifies.
        "Selu" => Op::Selu { alpha: a("alpha", 1.673_263_192_176_818_8)?, gamma: a("gamma", 1.050_701_022_148_132_3)? },
        "Celu" => Op::Celu { alpha: a("alpha", 1.0)? },
        "HardSigmoid" => Op::HardSigmoid { alpha: a("alpha", 0.2)?, beta: a("beta", 0.5)? },
        "HardSwish" => Op::HardSwish,
        "ThresholdedRelu" => Op::ThresholdedRelu { alpha: a("alpha", 1.0)? },
        "Gelu" => match ctx.node.string_attr("approximate")?.unwrap_or("none") {
            "none" => Op::Gelu { tanh: false },
            "tanh" => Op::Gelu { tanh: true },
            other => {
                return Err(BuildError::invalid(
                    ctx.node,
                    format!("approximate must be \"none\" or \"tanh\", got \"{other}\""),
                ));
            }
        },
        "Mish" => Op::Mish,
        "Swish" => Op::Swish { alpha: a("alpha", 1.0)? },
        "Shrink" => Op::Shrink { lambd: a("lambd", 0.5)?, bias: a("bias", 0.0)? },
        other => return Err(BuildError::invalid(ctx.node, format!("{other} is not an elementwise function"))),
    };
    if matches!(op, Op::Celu { alpha } if alpha == 0.0) {
        return Err(BuildError::invalid(ctx.node, "alpha must not be 0"));
    }
    Ok(Box::new(Unary(op)))
}

pub fn register(reg: &mut KernelRegistry) {
    // (operator, first opset); later versions only added element types.
    const OPS: &[(&str, i64)] = &[
        ("Abs", 1),
        ("Neg", 1),
        ("Sqrt", 1),
        ("Exp", 1),
        ("Log", 1),
        ("Reciprocal", 1),
        ("Floor", 1),
        ("Ceil", 1),
        ("Round", 11),
        ("Sign", 9),
        ("Erf", 9),
        ("Sin", 7),
        ("Cos", 7),
        ("Tan", 7),
        ("Asin", 7),
        ("Acos", 7),
        ("Atan", 7),
        ("Sinh", 9),
        ("Cosh", 9),
        ("Asinh", 9),
        ("Acosh", 9),
        ("Atanh", 9),
        ("Sigmoid", 1),
        ("Tanh", 1),
        ("Softplus", 1),
        ("Softsign", 1),
        ("LeakyRelu", 1),
        ("Elu", 1),
        ("Selu", 1),
        ("Celu", 12),
        ("HardSigmoid", 1),
        ("HardSwish", 14),
        ("ThresholdedRelu", 10),
        ("Gelu", 20),
        ("Mish", 18),
        ("Swish", 24),
        ("Shrink", 9),
        ("tf.Erfc", 1),
        ("tf.Rsqrt", 1),
        ("tf.Log1p", 1),
        ("tf.Expm1", 1),
    ];
    for &(op, first) in OPS {
        reg.register(op, first, MAX_OPSET, build);
    }
    reg.register("Clip", 1, MAX_OPSET, build_clip);
    reg.register("PRelu", 1, MAX_OPSET, |_| Ok(Box::new(PRelu)));
}

/// Clip: bounds from the `min`/`max` attributes (opsets before 11) or from
/// the optional scalar inputs 1 and 2.
#[derive(Debug)]
struct Clip {
    /// Attribute bounds (before opset 11).
    attrs: Option<(f32, f32)>,
}

fn build_clip(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let attrs = if ctx.opset < 11 {
        Some((ctx.node.float_attr("min", f32::MIN)?, ctx.node.float_attr("max", f32::MAX)?))
    } else {
        None
    };
    Ok(Box::new(Clip { attrs }))
}

/// The one element of a scalar bound input (a 1-element tensor).
fn bound<'a>(inputs: &[Option<&'a Tensor>], index: usize, x: &Tensor) -> Result<Option<&'a Tensor>, KernelError> {
    let Some(t) = inputs.get(index).copied().flatten() else {
        return Ok(None);
    };
    if t.len() != 1 || t.dtype() != x.dtype() {
        return Err(KernelError(format!(
            "Clip bound {index} must be one {} value, got {} of shape {:?}",
            x.dtype(),
            t.dtype(),
            t.shape()
        )));
    }
    Ok(Some(t))
}

macro_rules! clip {
    ($v:expr, $lo:expr, $hi:expr, $variant:ident, $min:expr, $max:expr) => {{
        let lo = match $lo.map(Tensor::data) {
            Some(TensorData::$variant(b)) => b[0],
            _ => $min,
        };
        let hi = match $hi.map(Tensor::data) {
            Some(TensorData::$variant(b)) => b[0],
            _ => $max,
        };
        // max-then-min, as numpy.clip: NaN stays NaN, and lo > hi gives hi.
        TensorData::$variant(
            $v.iter().map(|&x| if x < lo { lo } else { x }).map(|x| if x > hi { hi } else { x }).collect(),
        )
    }};
}

impl Kernel for Clip {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let data = if let Some((lo, hi)) = self.attrs {
            match x.data() {
                TensorData::Float(v) => clip!(v, None::<&Tensor>, None::<&Tensor>, Float, lo, hi),
                other => return Err(KernelError(format!("Clip before opset 11 takes float, not {}", other.dtype()))),
            }
        } else {
            let (lo, hi) = (bound(inputs, 1, x)?, bound(inputs, 2, x)?);
            match x.data() {
                TensorData::Float(v) => clip!(v, lo, hi, Float, f32::NEG_INFINITY, f32::INFINITY),
                TensorData::Double(v) => clip!(v, lo, hi, Double, f64::NEG_INFINITY, f64::INFINITY),
                TensorData::Int32(v) => clip!(v, lo, hi, Int32, i32::MIN, i32::MAX),
                TensorData::Int64(v) => clip!(v, lo, hi, Int64, i64::MIN, i64::MAX),
                TensorData::Int8(v) => clip!(v, lo, hi, Int8, i8::MIN, i8::MAX),
                TensorData::UInt8(v) => clip!(v, lo, hi, UInt8, u8::MIN, u8::MAX),
                other => return Err(KernelError(format!("Clip does not take {}", other.dtype()))),
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// PRelu: `x < 0 ? slope * x : x`, the slope broadcast to x's shape.
#[derive(Debug)]
struct PRelu;

impl Kernel for PRelu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let slope = required(inputs, 1, "slope")?;
        let (shape, data) = match (x.data(), slope.data()) {
            (TensorData::Float(a), TensorData::Float(s)) => {
                let (shape, out) = binary(a, x.shape(), s, slope.shape(), |v, k| if v < 0.0 { v * k } else { v })?;
                (shape, TensorData::Float(out))
            }
            (TensorData::Double(a), TensorData::Double(s)) => {
                let (shape, out) = binary(a, x.shape(), s, slope.shape(), |v, k| if v < 0.0 { v * k } else { v })?;
                (shape, TensorData::Double(out))
            }
            _ => {
                return Err(KernelError(format!(
                    "PRelu takes float or double X and slope of the same type, got {} and {}",
                    x.dtype(),
                    slope.dtype()
                )));
            }
        };
        if shape != x.shape() {
            return Err(KernelError(format!(
                "slope of shape {:?} must broadcast to X's shape {:?}",
                slope.shape(),
                x.shape()
            )));
        }
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, run};
    use crate::tensor::{Tensor, TensorData};

    fn one(op: &str, attrs: Vec<(&str, Attribute)>, x: f32) -> f32 {
        let t = Tensor::from_f32(vec![1], vec![x]).unwrap();
        run(&node(op, 1, attrs), 22, &[&t]).unwrap()[0].as_f32().unwrap()[0]
    }

    #[test]
    fn functions_at_known_points() {
        assert_eq!(one("Abs", vec![], -2.0), 2.0);
        assert_eq!(one("Round", vec![], 2.5), 2.0);
        assert_eq!(one("Round", vec![], -1.5), -2.0);
        assert!((one("Erf", vec![], 1.0) - 0.842_700_8).abs() < 1e-6);
        assert!((one("Sigmoid", vec![], 0.0) - 0.5).abs() < 1e-7);
        assert_eq!(one("Sigmoid", vec![], -1000.0), 0.0);
        assert_eq!(one("Softplus", vec![], 1000.0), 1000.0, "no overflow");
        assert!((one("LeakyRelu", vec![], -1.0) + 0.01).abs() < 1e-7);
        assert!((one("Gelu", vec![], 1.0) - 0.841_344_7).abs() < 1e-6);
        let tanh = vec![("approximate", Attribute::String("tanh".into()))];
        assert!((one("Gelu", tanh, 1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(one("HardSwish", vec![], 3.0), 3.0);
        assert_eq!(one("ThresholdedRelu", vec![], 0.5), 0.0);
    }

    #[test]
    fn integers_where_defined() {
        let t = Tensor::new(vec![3], TensorData::Int8(vec![-128, -3, 4])).unwrap();
        let out = run(&node("Abs", 1, vec![]), 13, &[&t]).unwrap();
        assert_eq!(out[0].data(), &TensorData::Int8(vec![-128, 3, 4]), "wraps as numpy");
        let out = run(&node("Sign", 1, vec![]), 13, &[&t]).unwrap();
        assert_eq!(out[0].data(), &TensorData::Int8(vec![-1, -1, 1]));
        let t = Tensor::from_i64(vec![1], vec![4]).unwrap();
        assert!(run(&node("Sqrt", 1, vec![]), 13, &[&t]).is_err());
    }

    #[test]
    fn clip_takes_attributes_or_inputs() {
        let x = Tensor::from_f32(vec![3], vec![-5.0, 0.5, 5.0]).unwrap();
        let attrs = vec![("min", Attribute::Float(-1.0)), ("max", Attribute::Float(1.0))];
        let out = run(&node("Clip", 1, attrs), 6, &[&x]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[-1.0, 0.5, 1.0]);
        let lo = Tensor::from_f32(vec![], vec![0.0]).unwrap();
        let out = run(&node("Clip", 2, vec![]), 13, &[&x, &lo]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[0.0, 0.5, 5.0]);
    }

    #[test]
    fn prelu_broadcasts_the_slope() {
        let x = Tensor::from_f32(vec![2, 2], vec![-1.0, 2.0, -3.0, 4.0]).unwrap();
        let slope = Tensor::from_f32(vec![2], vec![0.5, 0.25]).unwrap();
        let out = run(&node("PRelu", 2, vec![]), 16, &[&x, &slope]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[-0.5, 2.0, -1.5, 4.0]);
        let big = Tensor::from_f32(vec![3, 2, 2], vec![1.0; 12]).unwrap();
        assert!(run(&node("PRelu", 2, vec![]), 16, &[&x, &big]).is_err());
    }
}
