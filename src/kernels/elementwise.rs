//! Arithmetic with numpy broadcasting: Add, Sub, Mul, Div, Mod and Pow, and
//! the variadic Max, Min, Sum and Mean.

use super::broadcast::binary;
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Add", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Add))));
    reg.register("Sub", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Sub))));
    reg.register("Mul", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Mul))));
    reg.register("Div", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Div))));
    reg.register("Mod", 10, MAX_OPSET, build_mod);
    reg.register("Pow", 7, MAX_OPSET, |_| Ok(Box::new(Pow)));
    // Opset 8 brought broadcasting to the variadic operators.
    reg.register("Max", 8, MAX_OPSET, |_| Ok(Box::new(Variadic(Fold::Max))));
    reg.register("Min", 8, MAX_OPSET, |_| Ok(Box::new(Variadic(Fold::Min))));
    reg.register("Sum", 8, MAX_OPSET, |_| Ok(Box::new(Variadic(Fold::Sum))));
    reg.register("Mean", 8, MAX_OPSET, |_| Ok(Box::new(Variadic(Fold::Mean))));
}

#[derive(Debug, Clone, Copy)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug)]
struct Arith(ArithOp);

macro_rules! float_arith {
    ($op:expr, $a:expr, $sa:expr, $b:expr, $sb:expr, $variant:ident) => {{
        let (shape, out) = match $op {
            ArithOp::Add => binary($a, $sa, $b, $sb, |x, y| x + y)?,
            ArithOp::Sub => binary($a, $sa, $b, $sb, |x, y| x - y)?,
            ArithOp::Mul => binary($a, $sa, $b, $sb, |x, y| x * y)?,
            ArithOp::Div => binary($a, $sa, $b, $sb, |x, y| x / y)?,
        };
        Tensor::new(shape, TensorData::$variant(out))?
    }};
}

/// Integers wrap on overflow, as numpy's and onnxruntime's kernels do;
/// division truncates toward zero, and division by zero (or the one
/// overflowing division, MIN / -1) yields 0 instead of a panic.
macro_rules! int_arith {
    ($op:expr, $a:expr, $sa:expr, $b:expr, $sb:expr, $variant:ident) => {{
        let (shape, out) = match $op {
            ArithOp::Add => binary($a, $sa, $b, $sb, |x, y| x.wrapping_add(y))?,
            ArithOp::Sub => binary($a, $sa, $b, $sb, |x, y| x.wrapping_sub(y))?,
            ArithOp::Mul => binary($a, $sa, $b, $sb, |x, y| x.wrapping_mul(y))?,
            ArithOp::Div => binary($a, $sa, $b, $sb, |x, y| x.checked_div(y).unwrap_or(0))?,
        };
        Tensor::new(shape, TensorData::$variant(out))?
    }};
}

impl Kernel for Arith {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let b = required(inputs, 1, "B")?;
        let (sa, sb) = (a.shape(), b.shape());
        let out = match (a.data(), b.data()) {
            (TensorData::Float(x), TensorData::Float(y)) => float_arith!(self.0, x, sa, y, sb, Float),
            (TensorData::Double(x), TensorData::Double(y)) => float_arith!(self.0, x, sa, y, sb, Double),
            (TensorData::Int32(x), TensorData::Int32(y)) => int_arith!(self.0, x, sa, y, sb, Int32),
            (TensorData::Int64(x), TensorData::Int64(y)) => int_arith!(self.0, x, sa, y, sb, Int64),
            (TensorData::UInt8(x), TensorData::UInt8(y)) => int_arith!(self.0, x, sa, y, sb, UInt8),
            (TensorData::Int8(x), TensorData::Int8(y)) => int_arith!(self.0, x, sa, y, sb, Int8),
            _ => {
                return Err(KernelError(format!(
                    "operands must have the same numeric type (float, double, int32, int64, uint8 or int8), got {} and {}",
                    a.dtype(),
                    b.dtype()
                )));
            }
        };
        Ok(vec![out])
    }
}

/// Mod: the remainder with the divisor's sign (`fmod = 0`, Python's `%`,
/// integers only) or with the dividend's (`fmod = 1`, C's `fmod`).
/// A zero divisor gives 0 for integers, as numpy.
#[derive(Debug)]
struct Mod {
    fmod: bool,
}

fn build_mod(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Mod { fmod: ctx.node.int_attr("fmod", 0)? != 0 }))
}

macro_rules! int_mod {
    ($fmod:expr, $a:expr, $sa:expr, $b:expr, $sb:expr, $variant:ident) => {{
        let fmod = $fmod;
        let (shape, out) = binary($a, $sa, $b, $sb, |x, y| {
            let r = x.checked_rem(y).unwrap_or(0);
            if !fmod && r != 0 && ((r < 0) != (y < 0)) { r.wrapping_add(y) } else { r }
        })?;
        Tensor::new(shape, TensorData::$variant(out))?
    }};
}

macro_rules! float_mod {
    ($fmod:expr, $a:expr, $sa:expr, $b:expr, $sb:expr, $variant:ident) => {{
        let fmod = $fmod;
        let (shape, out) = binary($a, $sa, $b, $sb, |x, y| {
            let r = x % y;
            if !fmod && r != 0.0 && ((r < 0.0) != (y < 0.0)) { r + y } else { r }
        })?;
        Tensor::new(shape, TensorData::$variant(out))?
    }};
}

impl Kernel for Mod {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let b = required(inputs, 1, "B")?;
        let (sa, sb) = (a.shape(), b.shape());
        let out = match (a.data(), b.data()) {
            (TensorData::Float(x), TensorData::Float(y)) => float_mod!(self.fmod, x, sa, y, sb, Float),
            (TensorData::Double(x), TensorData::Double(y)) => float_mod!(self.fmod, x, sa, y, sb, Double),
            (TensorData::Int32(x), TensorData::Int32(y)) => int_mod!(self.fmod, x, sa, y, sb, Int32),
            (TensorData::Int64(x), TensorData::Int64(y)) => int_mod!(self.fmod, x, sa, y, sb, Int64),
            (TensorData::UInt8(x), TensorData::UInt8(y)) => {
                // Unsigned: both conventions agree.
                let (shape, out) = binary(x, sa, y, sb, |p, q| p.checked_rem(q).unwrap_or(0))?;
                Tensor::new(shape, TensorData::UInt8(out))?
            }
            (TensorData::Int8(x), TensorData::Int8(y)) => int_mod!(self.fmod, x, sa, y, sb, Int8),
            _ => {
                return Err(KernelError(format!(
                    "Mod takes two operands of one numeric type, got {} and {}",
                    a.dtype(),
                    b.dtype()
                )));
            }
        };
        Ok(vec![out])
    }
}

/// The elements of a numeric tensor as f64 (Pow's exponent).
fn as_f64(t: &Tensor) -> Result<Vec<f64>, KernelError> {
    Ok(match t.data() {
        TensorData::Float(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Double(v) => v.clone(),
        TensorData::Int32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::UInt8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        other => return Err(KernelError(format!("Pow's exponent must be numeric, not {}", other.dtype()))),
    })
}

/// Pow: X to the power Y, in X's type (the exponent may be of any numeric
/// type).
#[derive(Debug)]
struct Pow;

impl Kernel for Pow {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let y = required(inputs, 1, "Y")?;
        let e = as_f64(y)?;
        let (sx, sy) = (x.shape(), y.shape());
        let (shape, data) = match x.data() {
            TensorData::Float(v) => {
                let (shape, out) = binary(v, sx, &e, sy, |a, b| f64::from(a).powf(b) as f32)?;
                (shape, TensorData::Float(out))
            }
            TensorData::Double(v) => {
                let (shape, out) = binary(v, sx, &e, sy, f64::powf)?;
                (shape, TensorData::Double(out))
            }
            TensorData::Int32(v) => {
                let (shape, out) = binary(v, sx, &e, sy, |a, b| f64::from(a).powf(b) as i32)?;
                (shape, TensorData::Int32(out))
            }
            TensorData::Int64(v) => {
                let (shape, out) = binary(v, sx, &e, sy, |a, b| (a as f64).powf(b) as i64)?;
                (shape, TensorData::Int64(out))
            }
            other => {
                return Err(KernelError(format!("Pow takes float, double, int32 or int64 X, not {}", other.dtype())));
            }
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[derive(Debug, Clone, Copy)]
enum Fold {
    Max,
    Min,
    Sum,
    Mean,
}

/// Max, Min, Sum and Mean of one or more operands, broadcast together.
#[derive(Debug)]
struct Variadic(Fold);

/// True for NaN, the one value not ordered against itself.
fn unordered<T: PartialOrd>(a: &T) -> bool {
    a.partial_cmp(a).is_none()
}

/// NaN wins, as in numpy.maximum.
fn max_nan<T: PartialOrd + Copy>(a: T, b: T) -> T {
    if unordered(&a) || a >= b { a } else { b }
}

fn min_nan<T: PartialOrd + Copy>(a: T, b: T) -> T {
    if unordered(&a) || a <= b { a } else { b }
}

macro_rules! fold {
    ($fold:expr, $acc:expr, $shape:expr, $next:expr, $variant:ident, $add:expr) => {{
        let (shape, out) = match $fold {
            Fold::Max => binary($acc, $shape, $next.0, $next.1, max_nan)?,
            Fold::Min => binary($acc, $shape, $next.0, $next.1, min_nan)?,
            Fold::Sum | Fold::Mean => binary($acc, $shape, $next.0, $next.1, $add)?,
        };
        (shape, TensorData::$variant(out))
    }};
}

impl Kernel for Variadic {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let operands: Vec<&Tensor> = inputs.iter().copied().flatten().collect();
        let Some((first, rest)) = operands.split_first() else {
            return Err(KernelError(format!("{:?} needs at least one input", self.0)));
        };
        let arithmetic = matches!(self.0, Fold::Sum | Fold::Mean);
        let mut shape = first.shape().to_vec();
        let mut acc = first.data().clone();
        for t in rest {
            let next = t.data();
            (shape, acc) = match (&acc, next) {
                (TensorData::Float(a), TensorData::Float(b)) => {
                    fold!(self.0, a, &shape, (b, t.shape()), Float, |x, y| x + y)
                }
                (TensorData::Double(a), TensorData::Double(b)) => {
                    fold!(self.0, a, &shape, (b, t.shape()), Double, |x, y| x + y)
                }
                (TensorData::Int32(a), TensorData::Int32(b)) if !arithmetic => {
                    fold!(self.0, a, &shape, (b, t.shape()), Int32, |x, _| x)
                }
                (TensorData::Int64(a), TensorData::Int64(b)) if !arithmetic => {
                    fold!(self.0, a, &shape, (b, t.shape()), Int64, |x, _| x)
                }
                (TensorData::UInt8(a), TensorData::UInt8(b)) if !arithmetic => {
                    fold!(self.0, a, &shape, (b, t.shape()), UInt8, |x, _| x)
                }
                (TensorData::Int8(a), TensorData::Int8(b)) if !arithmetic => {
                    fold!(self.0, a, &shape, (b, t.shape()), Int8, |x, _| x)
                }
                _ => {
                    return Err(KernelError(format!(
                        "{:?} takes operands of one {} type, got {} and {}",
                        self.0,
                        if arithmetic { "float" } else { "numeric" },
                        acc.dtype(),
                        next.dtype()
                    )));
                }
            };
        }
        if let Fold::Mean = self.0 {
            let n = operands.len();
            match &mut acc {
                TensorData::Float(v) => v.iter_mut().for_each(|x| *x /= n as f32),
                TensorData::Double(v) => v.iter_mut().for_each(|x| *x /= n as f64),
                other => return Err(KernelError(format!("Mean takes float or double, not {}", other.dtype()))),
            }
        }
        Ok(vec![Tensor::new(shape, acc)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::testing::{node, run};
    use crate::tensor::Tensor;

    #[test]
    fn add_broadcasts_a_bias() {
        let a = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = Tensor::from_f32(vec![3], vec![10.0, 20.0, 30.0]).unwrap();
        let out = run(&node("Add", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    }

    #[test]
    fn integer_ops_and_division_by_zero() {
        let a = Tensor::from_i64(vec![3], vec![7, -7, 5]).unwrap();
        let b = Tensor::from_i64(vec![3], vec![2, 2, 0]).unwrap();
        let out = run(&node("Div", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[3, -3, 0]);
        let out = run(&node("Mul", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[14, -14, 0]);
        let a = Tensor::new(vec![2], crate::tensor::TensorData::UInt8(vec![250, 3])).unwrap();
        let b = Tensor::new(vec![2], crate::tensor::TensorData::UInt8(vec![10, 4])).unwrap();
        let out = run(&node("Add", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].data(), &crate::tensor::TensorData::UInt8(vec![4, 7]), "uint8 wraps");
        let a = Tensor::new(vec![1], crate::tensor::TensorData::Int8(vec![-128])).unwrap();
        let b = Tensor::new(vec![1], crate::tensor::TensorData::Int8(vec![-1])).unwrap();
        let out = run(&node("Div", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].data(), &crate::tensor::TensorData::Int8(vec![0]), "MIN / -1 does not panic");
    }

    #[test]
    fn mod_follows_the_divisor_or_the_dividend() {
        let a = Tensor::from_i64(vec![4], vec![-4, 7, 5, 3]).unwrap();
        let b = Tensor::from_i64(vec![4], vec![3, -3, 0, 3]).unwrap();
        let out = run(&node("Mod", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[2, -2, 0, 0]);
        let fmod = vec![("fmod", crate::graph::Attribute::Int(1))];
        let out = run(&node("Mod", 2, fmod), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[-1, 1, 0, 0]);
    }

    #[test]
    fn pow_keeps_the_base_type_and_variadics_broadcast() {
        let x = Tensor::from_i64(vec![3], vec![1, 2, 3]).unwrap();
        let y = Tensor::from_f32(vec![1], vec![2.0]).unwrap();
        let out = run(&node("Pow", 2, vec![]), 15, &[&x, &y]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[1, 4, 9]);
        let a = Tensor::from_f32(vec![2, 1], vec![1.0, f32::NAN]).unwrap();
        let b = Tensor::from_f32(vec![2], vec![0.0, 5.0]).unwrap();
        let out = run(&node("Max", 2, vec![]), 13, &[&a, &b]).unwrap();
        let got = out[0].as_f32().unwrap();
        assert_eq!(&got[..2], &[1.0, 5.0]);
        assert!(got[2].is_nan() && got[3].is_nan(), "NaN propagates");
        let out = run(&node("Mean", 3, vec![]), 13, &[&b, &b, &b]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[0.0, 5.0]);
    }

    #[test]
    fn mixed_types_and_bad_shapes_are_errors() {
        let a = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_i64(vec![2], vec![1, 2]).unwrap();
        assert!(run(&node("Add", 2, vec![]), 13, &[&a, &b]).is_err());
        let c = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let err = run(&node("Sub", 2, vec![]), 13, &[&a, &c]).unwrap_err();
        assert!(err.0.contains("cannot be broadcast"), "{err}");
    }
}
