//! Comparisons and logic, with numpy broadcasting: Equal, Less, Greater,
//! LessOrEqual, GreaterOrEqual (to bool), And, Or, Xor, Not on bool, IsNaN
//! and IsInf, and Where (select by a bool condition).

use super::broadcast::{binary, ternary};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Equal", 1, MAX_OPSET, |_| Ok(Box::new(Compare(Cmp::Equal))));
    reg.register("Less", 1, MAX_OPSET, |_| Ok(Box::new(Compare(Cmp::Less))));
    reg.register("Greater", 1, MAX_OPSET, |_| Ok(Box::new(Compare(Cmp::Greater))));
    reg.register("LessOrEqual", 12, MAX_OPSET, |_| Ok(Box::new(Compare(Cmp::LessOrEqual))));
    reg.register("GreaterOrEqual", 12, MAX_OPSET, |_| Ok(Box::new(Compare(Cmp::GreaterOrEqual))));
    reg.register("And", 1, MAX_OPSET, |_| Ok(Box::new(Logic(LogicOp::And))));
    reg.register("Or", 1, MAX_OPSET, |_| Ok(Box::new(Logic(LogicOp::Or))));
    reg.register("Xor", 1, MAX_OPSET, |_| Ok(Box::new(Logic(LogicOp::Xor))));
    reg.register("Not", 1, MAX_OPSET, |_| Ok(Box::new(Not)));
    reg.register("IsNaN", 9, MAX_OPSET, |_| Ok(Box::new(IsNaN)));
    reg.register("IsInf", 10, MAX_OPSET, build_is_inf);
    reg.register("Where", 9, MAX_OPSET, |_| Ok(Box::new(Where)));
    reg.register("BitwiseAnd", 18, MAX_OPSET, |_| Ok(Box::new(Bitwise(BitOp::And))));
    reg.register("BitwiseOr", 18, MAX_OPSET, |_| Ok(Box::new(Bitwise(BitOp::Or))));
    reg.register("BitwiseXor", 18, MAX_OPSET, |_| Ok(Box::new(Bitwise(BitOp::Xor))));
    reg.register("BitwiseNot", 18, MAX_OPSET, |_| Ok(Box::new(Bitwise(BitOp::Not))));
    reg.register("BitShift", 11, MAX_OPSET, |ctx| {
        let op = match ctx.node.string_attr("direction")? {
            Some("LEFT") => BitOp::Left,
            Some("RIGHT") => BitOp::Right,
            other => {
                return Err(BuildError::invalid(ctx.node, format!("direction must be LEFT or RIGHT, got {other:?}")));
            }
        };
        Ok(Box::new(Bitwise(op)))
    });
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BitOp {
    And,
    Or,
    Xor,
    Not,
    Left,
    Right,
}

/// Bitwise operators on integers, broadcast.
#[derive(Debug)]
struct Bitwise(BitOp);

impl Kernel for Bitwise {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let op = self.0;
        macro_rules! apply {
            ($x:expr, $variant:ident, $t:ty) => {{
                if op == BitOp::Not {
                    (a.shape().to_vec(), TensorData::$variant($x.iter().map(|v| !v).collect()))
                } else {
                    let b = required(inputs, 1, "B")?;
                    let TensorData::$variant(y) = b.data() else {
                        return Err(KernelError(format!("B is {} but A is {}", b.dtype(), a.dtype())));
                    };
                    let bits = i64::from(<$t>::BITS);
                    let (shape, out) = super::broadcast::binary($x, a.shape(), y, b.shape(), |p: $t, q: $t| {
                        // Shifts outside 0..bits give 0 (or -1 shifting a
                        // negative number right); left shifts wrap.
                        let outside = (q as i64) < 0 || (q as i64) >= bits;
                        match op {
                            BitOp::And => p & q,
                            BitOp::Or => p | q,
                            BitOp::Xor => p ^ q,
                            BitOp::Left if outside => 0,
                            BitOp::Left => p.wrapping_shl(q as u32),
                            BitOp::Right if outside => {
                                if (p as i64) < 0 {
                                    !0
                                } else {
                                    0
                                }
                            }
                            BitOp::Right => p >> q,
                            BitOp::Not => !p,
                        }
                    })?;
                    (shape, TensorData::$variant(out))
                }
            }};
        }
        let (shape, data) = match a.data() {
            TensorData::UInt8(x) => apply!(x, UInt8, u8),
            TensorData::Int8(x) => apply!(x, Int8, i8),
            TensorData::Int32(x) => apply!(x, Int32, i32),
            TensorData::Int64(x) => apply!(x, Int64, i64),
            other => {
                return Err(KernelError(format!("{op:?} does not take {}", other.dtype())));
            }
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
}

impl Cmp {
    fn test<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Equal => a == b,
            Cmp::Less => a < b,
            Cmp::Greater => a > b,
            Cmp::LessOrEqual => a <= b,
            Cmp::GreaterOrEqual => a >= b,
        }
    }
}

#[derive(Debug)]
struct Compare(Cmp);

impl Kernel for Compare {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let b = required(inputs, 1, "B")?;
        let (sa, sb) = (a.shape(), b.shape());
        let op = self.0;
        let (shape, out) = match (a.data(), b.data()) {
            (TensorData::Float(x), TensorData::Float(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::Double(x), TensorData::Double(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::Int32(x), TensorData::Int32(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::Int64(x), TensorData::Int64(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::UInt8(x), TensorData::UInt8(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::Int8(x), TensorData::Int8(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::Bool(x), TensorData::Bool(y)) => binary(x, sa, y, sb, |p, q| op.test(p, q))?,
            (TensorData::String(x), TensorData::String(y)) if matches!(op, Cmp::Equal) => {
                let idx: Vec<usize> = (0..x.len()).collect();
                let idy: Vec<usize> = (0..y.len()).collect();
                binary(&idx, sa, &idy, sb, |i, j| x[i] == y[j])?
            }
            _ => {
                return Err(KernelError(format!(
                    "{op:?} takes two operands of one type, got {} and {}",
                    a.dtype(),
                    b.dtype()
                )));
            }
        };
        Ok(vec![Tensor::new(shape, TensorData::Bool(out))?])
    }
}

#[derive(Debug, Clone, Copy)]
enum LogicOp {
    And,
    Or,
    Xor,
}

#[derive(Debug)]
struct Logic(LogicOp);

fn bools<'a>(t: &'a Tensor, what: &str) -> Result<&'a [bool], KernelError> {
    match t.data() {
        TensorData::Bool(v) => Ok(v),
        _ => Err(KernelError(format!("{what} must be DT_BOOL but is {}", t.dtype()))),
    }
}

impl Kernel for Logic {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let b = required(inputs, 1, "B")?;
        let (x, y) = (bools(a, "A")?, bools(b, "B")?);
        let (shape, out) = match self.0 {
            LogicOp::And => binary(x, a.shape(), y, b.shape(), |p, q| p && q)?,
            LogicOp::Or => binary(x, a.shape(), y, b.shape(), |p, q| p || q)?,
            LogicOp::Xor => binary(x, a.shape(), y, b.shape(), |p, q| p != q)?,
        };
        Ok(vec![Tensor::new(shape, TensorData::Bool(out))?])
    }
}

#[derive(Debug)]
struct Not;

impl Kernel for Not {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let out = bools(x, "X")?.iter().map(|v| !v).collect();
        Ok(vec![Tensor::new(x.shape().to_vec(), TensorData::Bool(out))?])
    }
}

#[derive(Debug)]
struct IsNaN;

impl Kernel for IsNaN {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let out = match x.data() {
            TensorData::Float(v) => v.iter().map(|a| a.is_nan()).collect(),
            TensorData::Double(v) => v.iter().map(|a| a.is_nan()).collect(),
            _ => return Err(KernelError(format!("IsNaN takes float or double, not {}", x.dtype()))),
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), TensorData::Bool(out))?])
    }
}

#[derive(Debug)]
struct IsInf {
    negative: bool,
    positive: bool,
}

fn build_is_inf(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(IsInf {
        negative: ctx.node.int_attr("detect_negative", 1)? != 0,
        positive: ctx.node.int_attr("detect_positive", 1)? != 0,
    }))
}

impl Kernel for IsInf {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let test = |a: f64| (a == f64::INFINITY && self.positive) || (a == f64::NEG_INFINITY && self.negative);
        let out = match x.data() {
            TensorData::Float(v) => v.iter().map(|&a| test(f64::from(a))).collect(),
            TensorData::Double(v) => v.iter().map(|&a| test(a)).collect(),
            _ => return Err(KernelError(format!("IsInf takes float or double, not {}", x.dtype()))),
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), TensorData::Bool(out))?])
    }
}

#[derive(Debug)]
struct Where;

macro_rules! select {
    ($c:expr, $sc:expr, $x:expr, $sx:expr, $y:expr, $sy:expr, $variant:ident) => {{
        let (shape, out) =
            ternary(
                ($c, $sc),
                ($x.as_slice(), $sx),
                ($y.as_slice(), $sy),
                |c, p, q| {
                    if c { p.clone() } else { q.clone() }
                },
            )?;
        Tensor::new(shape, TensorData::$variant(out))?
    }};
}

impl Kernel for Where {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let c = required(inputs, 0, "condition")?;
        let x = required(inputs, 1, "X")?;
        let y = required(inputs, 2, "Y")?;
        let cond = bools(c, "condition")?;
        let (sc, sx, sy) = (c.shape(), x.shape(), y.shape());
        let out = match (x.data(), y.data()) {
            (TensorData::Float(p), TensorData::Float(q)) => select!(cond, sc, p, sx, q, sy, Float),
            (TensorData::Double(p), TensorData::Double(q)) => select!(cond, sc, p, sx, q, sy, Double),
            (TensorData::Int32(p), TensorData::Int32(q)) => select!(cond, sc, p, sx, q, sy, Int32),
            (TensorData::Int64(p), TensorData::Int64(q)) => select!(cond, sc, p, sx, q, sy, Int64),
            (TensorData::UInt8(p), TensorData::UInt8(q)) => select!(cond, sc, p, sx, q, sy, UInt8),
            (TensorData::Int8(p), TensorData::Int8(q)) => select!(cond, sc, p, sx, q, sy, Int8),
            (TensorData::Bool(p), TensorData::Bool(q)) => select!(cond, sc, p, sx, q, sy, Bool),
            (TensorData::String(p), TensorData::String(q)) => select!(cond, sc, p, sx, q, sy, String),
            _ => {
                return Err(KernelError(format!(
                    "Where takes X and Y of one type, got {} and {}",
                    x.dtype(),
                    y.dtype()
                )));
            }
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::testing::{node, run};
    use crate::tensor::{Tensor, TensorData};

    #[test]
    fn comparisons_broadcast_to_bool() {
        let a = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, f32::NAN]).unwrap();
        let b = Tensor::from_f32(vec![1], vec![2.0]).unwrap();
        let out = run(&node("Less", 2, vec![]), 13, &[&a, &b]).unwrap();
        assert_eq!(out[0].data(), &TensorData::Bool(vec![true, false, false, false]));
        let out = run(&node("GreaterOrEqual", 2, vec![]), 16, &[&a, &b]).unwrap();
        assert_eq!(out[0].data(), &TensorData::Bool(vec![false, true, true, false]), "NaN compares false");
        let i = Tensor::from_i64(vec![1], vec![2]).unwrap();
        assert!(run(&node("Equal", 2, vec![]), 13, &[&a, &i]).is_err());
    }

    #[test]
    fn logic_and_where() {
        let t = Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap();
        let f = Tensor::new(vec![1], TensorData::Bool(vec![true])).unwrap();
        let out = run(&node("Xor", 2, vec![]), 7, &[&t, &f]).unwrap();
        assert_eq!(out[0].data(), &TensorData::Bool(vec![false, true]));
        let x = Tensor::from_i64(vec![2], vec![1, 2]).unwrap();
        let y = Tensor::from_i64(vec![], vec![9]).unwrap();
        let out = run(&node("Where", 3, vec![]), 16, &[&t, &x, &y]).unwrap();
        assert_eq!(out[0].as_i64().unwrap(), &[1, 9]);
        assert!(run(&node("Where", 3, vec![]), 16, &[&x, &x, &y]).is_err(), "the condition must be bool");
    }
}
