//! JSON to tensors and back for REST Predict, with TensorFlow Serving's
//! rules (spec 4.3 and 4.4): the dtype comes from the signature, integers
//! are strict, shapes come from the first element at each level, every row
//! of `instances` has the same shape.

use std::collections::BTreeMap;

use base64::Engine;

use super::json::{Json, format_float, to_string};
use crate::error::ServeError;
use crate::servable::Signature;
use crate::tensor::{DataType, Tensor, TensorData};

/// Which request format was used; it decides the answer's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `instances`: rows, answered as `predictions`.
    Row,
    /// `inputs`: whole tensors, answered as `outputs`.
    Columnar,
}

fn invalid(message: String) -> ServeError {
    ServeError::InvalidArgument(message)
}

/// TensorFlow Serving truncates JSON values quoted in messages.
fn quoted(v: &Json) -> String {
    let mut text = to_string(v);
    if text.len() > 256 {
        let mut end = 256;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Elements of one dtype, collected while walking the JSON.
struct Elements {
    dtype: DataType,
    data: TensorData,
}

impl Elements {
    fn new(dtype: DataType) -> Elements {
        Elements { dtype, data: TensorData::zeros(dtype, 0) }
    }

    fn push(&mut self, v: &Json) -> Result<(), ServeError> {
        let wrong = || {
            invalid(format!(
                "JSON Value: {} Type: {} is not of expected type: {}",
                quoted(v),
                v.type_name(),
                self.dtype.tf_name()
            ))
        };
        match (&mut self.data, v) {
            (TensorData::Float(out), Json::Int(i)) => out.push(*i as f32),
            (TensorData::Float(out), Json::UInt(u)) => out.push(*u as f32),
            (TensorData::Float(out), Json::Float(f)) => out.push(*f as f32),
            (TensorData::Double(out), Json::Int(i)) => out.push(*i as f64),
            (TensorData::Double(out), Json::UInt(u)) => out.push(*u as f64),
            (TensorData::Double(out), Json::Float(f)) => out.push(*f),
            (TensorData::Int32(out), Json::Int(i)) => out.push(i32::try_from(*i).map_err(|_| wrong())?),
            (TensorData::Int64(out), Json::Int(i)) => out.push(*i),
            (TensorData::UInt8(out), Json::Int(i)) => out.push(u8::try_from(*i).map_err(|_| wrong())?),
            (TensorData::Int8(out), Json::Int(i)) => out.push(i8::try_from(*i).map_err(|_| wrong())?),
            (TensorData::Bool(out), Json::Bool(b)) => out.push(*b),
            (TensorData::String(out), Json::String(text)) => out.push(text.as_bytes().to_vec()),
            (TensorData::String(out), Json::Object(_)) => match super::examples::b64_member(v) {
                Some(encoded) => out.push(super::examples::decode_b64(encoded)?),
                None => return Err(wrong()),
            },
            _ => return Err(wrong()),
        }
        Ok(())
    }
}

/// Walks a nested list, checking it is rectangular, and appends its
/// elements; returns its shape.
fn flatten(v: &Json, out: &mut Elements) -> Result<Vec<usize>, ServeError> {
    // The shape comes from the first element at each level.
    let mut shape = Vec::new();
    let mut probe = v;
    while let Json::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    walk(v, 0, &shape, out)?;
    Ok(shape)
}

fn walk(v: &Json, level: usize, shape: &[usize], out: &mut Elements) -> Result<(), ServeError> {
    match v {
        Json::Array(items) => {
            if level >= shape.len() {
                return Err(invalid(format!(
                    "Encountered list at unexpected level: {level} expected < {}",
                    shape.len()
                )));
            }
            if items.len() != shape[level] {
                return Err(invalid(format!(
                    "Encountered list at unexpected size: {} at level: {} expected size: {}",
                    items.len(),
                    level,
                    shape[level]
                )));
            }
            items.iter().try_for_each(|item| walk(item, level + 1, shape, out))
        }
        _ if level != shape.len() => Err(invalid(format!(
            "JSON Value: {} found at incorrect level: {} in the JSON DOM. Expected at level: {}",
            quoted(v),
            level + 1,
            shape.len()
        ))),
        scalar => out.push(scalar),
    }
}

fn dims(shape: &[usize]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

/// The tensors of a REST Predict body (already parsed), by input alias,
/// and the format used.
///
/// # Errors
/// With TensorFlow Serving's messages for a malformed body.
pub fn request_tensors(body: &Json, signature: &Signature) -> Result<(Vec<(String, Tensor)>, Format), ServeError> {
    let doc = || quoted(body);
    let Json::Object(_) = body else {
        return Err(invalid(format!("JSON Value: {} Is not object", doc())));
    };
    match (body.get("instances"), body.get("inputs")) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "JSON Value: {} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
            doc()
        ))),
        (None, None) => Err(invalid("Missing 'inputs' or 'instances' key".into())),
        (Some(instances), None) => Ok((rows(instances, signature, doc)?, Format::Row)),
        (None, Some(inputs)) => Ok((columns(inputs, signature)?, Format::Columnar)),
    }
}

fn rows(
    instances: &Json,
    signature: &Signature,
    doc: impl Fn() -> String,
) -> Result<Vec<(String, Tensor)>, ServeError> {
    let Json::Array(items) = instances else {
        return Err(invalid(format!("JSON Value: {} Expecting 'instances' to be an list/array", doc())));
    };
    if items.is_empty() {
        return Err(invalid(format!("JSON Value: {} No values in 'instances' array", doc())));
    }
    let aliases: Vec<&String> = signature.inputs.keys().collect();
    let mut out: BTreeMap<&str, (Elements, Option<Vec<usize>>)> =
        signature.inputs.iter().map(|(a, s)| (a.as_str(), (Elements::new(s.dtype), None))).collect();
    // With one input, `{"b64": ...}` is a value, not an object of inputs.
    let named = matches!(items[0], Json::Object(_))
        && !(aliases.len() == 1 && super::examples::b64_member(&items[0]).is_some());
    if aliases.len() > 1 && !named {
        return Err(invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map".into(),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let element_error = |e: ServeError| {
            invalid(format!("Failed to process element: {i} of 'instances' list. Error: INVALID_ARGUMENT: {e}"))
        };
        let values: Vec<(&str, &Json)> = match item {
            Json::Object(members) if named => {
                let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                let expected: Vec<&str> = aliases.iter().map(|a| a.as_str()).collect();
                if keys != expected {
                    if let Some(missing) = expected.iter().find(|a| !keys.contains(a)) {
                        return Err(invalid(format!(
                            "Failed to process element: {i} key: {missing} of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have named input: {missing}"
                        )));
                    }
                    return Err(invalid(format!(
                        "Failed to process element: {i} of 'instances' list. JSON object: {} keys must be equal to: {}",
                        quoted(item),
                        expected.join(",")
                    )));
                }
                members.iter().map(|(k, v)| (k.as_str(), v)).collect()
            }
            _ if named => {
                return Err(element_error(invalid(format!("JSON Value: {} Is not object", quoted(item)))));
            }
            v => vec![(aliases[0].as_str(), v)],
        };
        for (alias, v) in values {
            let (elements, shape) = out.get_mut(alias).expect("keys checked against the signature");
            let got = flatten(v, elements).map_err(element_error)?;
            match shape {
                None => *shape = Some(got),
                Some(expected) if *expected != got => {
                    return Err(element_error(invalid(format!(
                        "Expecting shape {} but got: {}",
                        dims(expected),
                        dims(&got)
                    ))));
                }
                Some(_) => {}
            }
        }
    }
    out.into_iter()
        .map(|(alias, (elements, shape))| {
            let mut full = vec![items.len()];
            full.extend(shape.unwrap_or_default());
            Ok((alias.to_string(), Tensor::new(full, elements.data).map_err(|e| invalid(e.to_string()))?))
        })
        .collect()
}

fn columns(inputs: &Json, signature: &Signature) -> Result<Vec<(String, Tensor)>, ServeError> {
    let one = |alias: &str, v: &Json| -> Result<(String, Tensor), ServeError> {
        let mut elements = Elements::new(signature.inputs[alias].dtype);
        let shape = flatten(v, &mut elements)?;
        Ok((alias.to_string(), Tensor::new(shape, elements.data).map_err(|e| invalid(e.to_string()))?))
    };
    if signature.inputs.len() == 1 {
        let alias = signature.inputs.keys().next().expect("one input");
        // A single input may also be given by name.
        let value = match inputs {
            Json::Object(_) => inputs.get(alias).unwrap_or(inputs),
            v => v,
        };
        return Ok(vec![one(alias, value)?]);
    }
    if !matches!(inputs, Json::Object(_)) {
        return Err(invalid(
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map".into(),
        ));
    }
    signature
        .inputs
        .keys()
        .map(|alias| {
            let v = inputs
                .get(alias)
                .ok_or_else(|| invalid(format!("Missing named input: {alias} in 'inputs' object.")))?;
            one(alias, v)
        })
        .collect()
}

/// TensorFlow Serving writes a string output as `{"b64": ...}` only when
/// its alias ends with this.
const BYTES_SUFFIX: &str = "_bytes";

/// Element `index` of a tensor as JSON; strings base64-wrapped with `b64`,
/// else as text (bytes that are not UTF-8 replaced by U+FFFD).
fn element(data: &TensorData, index: usize, b64: bool) -> Json {
    match data {
        TensorData::String(v) if b64 => Json::Object(vec![(
            "b64".into(),
            Json::String(base64::engine::general_purpose::STANDARD.encode(&v[index])),
        )]),
        TensorData::String(v) => Json::String(String::from_utf8_lossy(&v[index]).into_owned()),
        TensorData::Float(v) => Json::Float(v[index] as f64),
        TensorData::Double(v) => Json::Float(v[index]),
        TensorData::Int32(v) => Json::Int(v[index] as i64),
        TensorData::Int64(v) => Json::Int(v[index]),
        TensorData::UInt8(v) => Json::Int(v[index] as i64),
        TensorData::Int8(v) => Json::Int(v[index] as i64),
        TensorData::Bool(v) => Json::Bool(v[index]),
    }
}

/// The nested lists of `shape` starting at element `offset`.
fn nested(data: &TensorData, shape: &[usize], offset: usize, b64: bool) -> Json {
    match shape {
        [] => element(data, offset, b64),
        [n, rest @ ..] => {
            let stride: usize = rest.iter().product();
            Json::Array((0..*n).map(|i| nested(data, rest, offset + i * stride, b64)).collect())
        }
    }
}

/// Writes floats as float32 values (six digits or nine), not as the f64
/// they widen to.
fn write_value(out: &mut String, v: &Json, single: bool) {
    match v {
        Json::Float(f) => out.push_str(&format_float(*f, single)),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, single);
            }
            out.push(']');
        }
        other => super::json::write(out, other),
    }
}

/// One output unwrapped, or several as an object by alias; `part` picks
/// what of each tensor is written (all of it, or one row).
fn write_outputs(out: &mut String, outputs: &[(String, Tensor)], part: impl Fn(&Tensor, bool) -> Json) {
    let single = |t: &Tensor| t.dtype() == DataType::Float;
    let b64 = |alias: &str| alias.ends_with(BYTES_SUFFIX);
    if let [(alias, t)] = outputs {
        write_value(out, &part(t, b64(alias)), single(t));
        return;
    }
    out.push('{');
    for (i, (alias, t)) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        super::json::write_string(out, alias);
        out.push(':');
        write_value(out, &part(t, b64(alias)), single(t));
    }
    out.push('}');
}

/// The answer to a REST Predict.
///
/// # Errors
/// For row-format answers whose outputs do not share a batch dim, with
/// TensorFlow Serving's messages.
pub fn response_json(outputs: &[(String, Tensor)], format: Format) -> Result<String, ServeError> {
    let mut out = String::new();
    match format {
        Format::Columnar => {
            out.push_str("{\"outputs\":");
            write_outputs(&mut out, outputs, |t, b64| nested(t.data(), t.shape(), 0, b64));
            out.push('}');
        }
        Format::Row => {
            let mut batch = None;
            for (alias, t) in outputs {
                let Some(&n) = t.shape().first() else {
                    return Err(invalid(format!("Tensor name: {alias} has no shape information ")));
                };
                match batch {
                    None => batch = Some(n),
                    Some(b) if b != n => {
                        return Err(invalid(format!(
                            "Tensor name: {alias} has inconsistent batch size: {n} expecting: {b}"
                        )));
                    }
                    Some(_) => {}
                }
            }
            out.push_str("{\"predictions\":[");
            for row in 0..batch.unwrap_or(0) {
                if row > 0 {
                    out.push(',');
                }
                write_outputs(&mut out, outputs, |t, b64| {
                    let rest = &t.shape()[1..];
                    nested(t.data(), rest, row * rest.iter().product::<usize>(), b64)
                });
            }
            out.push_str("]}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Vec<(String, Tensor)> {
        vec![
            ("a".to_string(), Tensor::from_f32(vec![2, 2], vec![1.0, 0.5, 9e6, f32::NAN]).unwrap()),
            ("b".to_string(), Tensor::from_i64(vec![2], vec![7, -1]).unwrap()),
        ]
    }

    #[test]
    fn several_outputs_by_row_and_by_column() {
        assert_eq!(
            response_json(&outputs(), Format::Row).unwrap(),
            r#"{"predictions":[{"a":[1.0,0.5],"b":7},{"a":[9e+06,NaN],"b":-1}]}"#
        );
        assert_eq!(
            response_json(&outputs(), Format::Columnar).unwrap(),
            r#"{"outputs":{"a":[[1.0,0.5],[9e+06,NaN]],"b":[7,-1]}}"#
        );
        let one = &outputs()[..1];
        assert_eq!(response_json(one, Format::Row).unwrap(), r#"{"predictions":[[1.0,0.5],[9e+06,NaN]]}"#);
        let mut ragged = outputs();
        ragged[1].1 = Tensor::from_i64(vec![3], vec![1, 2, 3]).unwrap();
        assert_eq!(
            response_json(&ragged, Format::Row).unwrap_err().to_string(),
            "Tensor name: b has inconsistent batch size: 3 expecting: 2"
        );
        let scalar = vec![("s".to_string(), Tensor::from_f32(vec![], vec![1.0]).unwrap())];
        assert_eq!(response_json(&scalar, Format::Columnar).unwrap(), r#"{"outputs":1.0}"#);
        assert!(response_json(&scalar, Format::Row).is_err());
    }
}
