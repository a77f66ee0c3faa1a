//! Binary arithmetic with numpy broadcasting: Add, Sub, Mul, Div.

use super::broadcast::binary;
use super::{Kernel, KernelError, KernelRegistry, MAX_OPSET, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Add", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Add))));
    reg.register("Sub", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Sub))));
    reg.register("Mul", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Mul))));
    reg.register("Div", 7, MAX_OPSET, |_| Ok(Box::new(Arith(ArithOp::Div))));
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
    fn mixed_types_and_bad_shapes_are_errors() {
        let a = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_i64(vec![2], vec![1, 2]).unwrap();
        assert!(run(&node("Add", 2, vec![]), 13, &[&a, &b]).is_err());
        let c = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let err = run(&node("Sub", 2, vec![]), 13, &[&a, &c]).unwrap_err();
        assert!(err.0.contains("cannot be broadcast"), "{err}");
    }
}
