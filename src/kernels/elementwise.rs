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

macro_rules! arith {
    ($op:expr, $a:expr, $sa:expr, $b:expr, $sb:expr, $variant:ident, $div:expr) => {{
        let (shape, out) = match $op {
            ArithOp::Add => binary($a, $sa, $b, $sb, |x, y| x + y)?,
            ArithOp::Sub => binary($a, $sa, $b, $sb, |x, y| x - y)?,
            ArithOp::Mul => binary($a, $sa, $b, $sb, |x, y| x * y)?,
            ArithOp::Div => binary($a, $sa, $b, $sb, $div)?,
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
            (TensorData::Float(x), TensorData::Float(y)) => arith!(self.0, x, sa, y, sb, Float, |x, y| x / y),
            (TensorData::Double(x), TensorData::Double(y)) => arith!(self.0, x, sa, y, sb, Double, |x, y| x / y),
            // Integer division truncates toward zero, as numpy's C kernels and
            // onnxruntime do; division by zero yields 0 instead of a panic.
            (TensorData::Int32(x), TensorData::Int32(y)) => {
                arith!(self.0, x, sa, y, sb, Int32, |x: i32, y: i32| x.checked_div(y).unwrap_or(0))
            }
            (TensorData::Int64(x), TensorData::Int64(y)) => {
                arith!(self.0, x, sa, y, sb, Int64, |x: i64, y: i64| x.checked_div(y).unwrap_or(0))
            }
            _ => {
                return Err(KernelError(format!(
                    "operands must have the same numeric type (float, double, int32 or int64), got {} and {}",
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
