//! Cast and CastLike between the element types the server has, with
//! numpy's conversions: floats to integers truncate toward zero, anything
//! non-zero is true, strings parse and print numbers.

use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, required};
use crate::tensor::{DataType, Tensor, TensorData};

/// ONNX's element type numbers (`TensorProto.DataType`) that a Cast may
/// name, and the server's type for each it has.
const ONNX_TYPES: &[(i64, &str, Option<DataType>)] = &[
    (1, "FLOAT", Some(DataType::Float)),
    (2, "UINT8", Some(DataType::UInt8)),
    (3, "INT8", Some(DataType::Int8)),
    (4, "UINT16", None),
    (5, "INT16", None),
    (6, "INT32", Some(DataType::Int32)),
    (7, "INT64", Some(DataType::Int64)),
    (8, "STRING", Some(DataType::String)),
    (9, "BOOL", Some(DataType::Bool)),
    (10, "FLOAT16", None),
    (11, "DOUBLE", Some(DataType::Double)),
    (12, "UINT32", None),
    (13, "UINT64", None),
    (16, "BFLOAT16", None),
];

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Cast", 6, MAX_OPSET, build_cast);
    reg.register("CastLike", 15, MAX_OPSET, |_| Ok(Box::new(CastLike)));
}

#[derive(Debug)]
struct Cast {
    to: DataType,
}

/// The element type an ONNX type code (Cast's `to`) names, when the server
/// has it.
pub(crate) fn onnx_dtype(code: i64) -> Option<DataType> {
    ONNX_TYPES.iter().find(|(c, _, _)| *c == code).and_then(|(_, _, to)| *to)
}

fn build_cast(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let code = ctx.node.int_attr("to", -1)?;
    let to = match ONNX_TYPES.iter().find(|(c, _, _)| *c == code) {
        Some((_, _, Some(to))) => *to,
        Some((_, name, None)) => {
            return Err(BuildError::invalid(ctx.node, format!("casting to {name} is not supported")));
        }
        None => return Err(BuildError::invalid(ctx.node, format!("casting to element type {code} is not supported"))),
    };
    Ok(Box::new(Cast { to }))
}

impl Kernel for Cast {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        Ok(vec![Tensor::new(x.shape().to_vec(), cast(x.data(), self.to)?)?])
    }
}

#[derive(Debug)]
struct CastLike;

impl Kernel for CastLike {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let like = required(inputs, 1, "target_type")?;
        Ok(vec![Tensor::new(x.shape().to_vec(), cast(x.data(), like.dtype())?)?])
    }
}

/// One element on its way between types: every numeric type widens to f64
/// or i64 without loss (but for i64 beyond 2^53, which stays an integer).
#[derive(Clone, Copy)]
enum Num {
    F(f64),
    I(i64),
}

impl Num {
    fn f64(self) -> f64 {
        match self {
            Num::F(v) => v,
            Num::I(v) => v as f64,
        }
    }

    /// Integers keep their value; floats truncate toward zero (`as`
    /// saturates out of range and maps NaN to 0 where numpy's result is
    /// undefined).
    fn i64(self) -> i64 {
        match self {
            Num::F(v) => v as i64,
            Num::I(v) => v,
        }
    }
}

fn numbers(data: &TensorData) -> Result<Vec<Num>, KernelError> {
    Ok(match data {
        TensorData::Float(v) => v.iter().map(|&x| Num::F(f64::from(x))).collect(),
        TensorData::Double(v) => v.iter().map(|&x| Num::F(x)).collect(),
        TensorData::Int32(v) => v.iter().map(|&x| Num::I(i64::from(x))).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| Num::I(x)).collect(),
        TensorData::UInt8(v) => v.iter().map(|&x| Num::I(i64::from(x))).collect(),
        TensorData::Int8(v) => v.iter().map(|&x| Num::I(i64::from(x))).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| Num::I(i64::from(x))).collect(),
        TensorData::String(v) => v
            .iter()
            .map(|s| {
                let text = String::from_utf8_lossy(s);
                parse_number(text.trim()).ok_or_else(|| KernelError(format!("cannot cast string {text:?} to a number")))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// A number as numpy reads one from a string: integers, decimals, and the
/// spellings of infinity and NaN in any case.
fn parse_number(text: &str) -> Option<Num> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Num::I(i));
    }
    let lower = text.to_ascii_lowercase();
    let (sign, body) = match lower.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, lower.strip_prefix('+').unwrap_or(&lower)),
    };
    match body {
        "inf" | "infinity" => Some(Num::F(sign * f64::INFINITY)),
        "nan" => Some(Num::F(f64::NAN)),
        _ => text.parse::<f64>().ok().map(Num::F),
    }
}

/// A float as numpy prints a float32 or float64 (its shortest round-trip
/// form, in scientific notation below 1e-4 and from 1e16 on).
fn float_text(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = v.abs();
    let shortest = if single { format!("{:e}", v as f32) } else { format!("{v:e}") };
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust writes 1e-5 / 1.5e-7; numpy writes 1e-05 / 1.5e-07.
        let (mantissa, exp) = shortest.split_once('e').unwrap_or((&shortest, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let text = if single { format!("{}", v as f32) } else { format!("{v}") };
    if text.contains('.') { text } else { format!("{text}.0") }
}

fn cast(data: &TensorData, to: DataType) -> Result<TensorData, KernelError> {
    if data.dtype() == to {
        return Ok(data.clone());
    }
    let n = match (to, data) {
        (DataType::String, TensorData::Float(v)) => {
            return Ok(TensorData::String(v.iter().map(|&x| float_text(f64::from(x), true).into_bytes()).collect()));
        }
        (DataType::String, TensorData::Double(v)) => {
            return Ok(TensorData::String(v.iter().map(|&x| float_text(x, false).into_bytes()).collect()));
        }
        (DataType::String, TensorData::Bool(v)) => {
            let text = v.iter().map(|&x| if x { b"True".to_vec() } else { b"False".to_vec() }).collect();
            return Ok(TensorData::String(text));
        }
        _ => numbers(data)?,
    };
    Ok(match to {
        DataType::Float => TensorData::Float(n.iter().map(|x| x.f64() as f32).collect()),
        DataType::Double => TensorData::Double(n.iter().map(|x| x.f64()).collect()),
        // Narrowing wraps, as numpy's astype does for integers.
        DataType::Int32 => TensorData::Int32(n.iter().map(|x| x.i64() as i32).collect()),
        DataType::Int64 => TensorData::Int64(n.iter().map(|x| x.i64()).collect()),
        DataType::UInt8 => TensorData::UInt8(n.iter().map(|x| x.i64() as u8).collect()),
        DataType::Int8 => TensorData::Int8(n.iter().map(|x| x.i64() as i8).collect()),
        DataType::Bool => TensorData::Bool(n.iter().map(|x| x.f64() != 0.0).collect()),
        DataType::String => TensorData::String(n.iter().map(|x| x.i64().to_string().into_bytes()).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_as_numpy_converts_them() {
        let x = TensorData::Float(vec![-1.7, 0.0, 2.9, 300.0]);
        assert_eq!(cast(&x, DataType::Int32).unwrap(), TensorData::Int32(vec![-1, 0, 2, 300]));
        assert_eq!(cast(&x, DataType::UInt8).unwrap(), TensorData::UInt8(vec![255, 0, 2, 44]));
        assert_eq!(cast(&x, DataType::Bool).unwrap(), TensorData::Bool(vec![true, false, true, true]));
        let b = TensorData::Bool(vec![true, false]);
        assert_eq!(cast(&b, DataType::Double).unwrap(), TensorData::Double(vec![1.0, 0.0]));
    }

    #[test]
    fn strings_parse_and_print() {
        let s = TensorData::String(vec![b"1.5".to_vec(), b"-INF".to_vec(), b"7".to_vec()]);
        let f = cast(&s, DataType::Float).unwrap();
        assert_eq!(f, TensorData::Float(vec![1.5, f32::NEG_INFINITY, 7.0]));
        assert!(cast(&TensorData::String(vec![b"x".to_vec()]), DataType::Float).is_err());
        let f = TensorData::Float(vec![0.478_925_47, 1e-7, 3.0, f32::NAN]);
        assert_eq!(
            cast(&f, DataType::String).unwrap(),
            TensorData::String(vec![b"0.47892547".to_vec(), b"1e-07".to_vec(), b"3.0".to_vec(), b"nan".to_vec()])
        );
    }
}
