//! JSON to `tf.Example`s and results back for REST `:classify` and
//! `:regress`, with TensorFlow Serving's rules (spec 4.5): a JSON string or
//! `{"b64": ...}` is a bytes feature, a number with a fraction or exponent a
//! float feature, an integer or a boolean an int64 feature; all values of a
//! feature are of one kind. The answer's key is `results`.

use base64::Engine;

use super::json::{Json, format_float, to_string, write_string};
use crate::error::ServeError;
use crate::proto::tensorflow::serving::{ClassificationResult, ExampleList, ExampleListWithContext, Input, input};
use crate::proto::tensorflow::{BytesList, Example, Feature, Features, FloatList, Int64List, feature};

fn invalid(message: String) -> ServeError {
    ServeError::InvalidArgument(message)
}

/// The kind a JSON value makes, named as TensorFlow Serving names it.
fn kind_name(f: &Feature) -> &'static str {
    match f.kind {
        Some(feature::Kind::BytesList(_)) => "bytes",
        Some(feature::Kind::FloatList(_)) => "float",
        Some(feature::Kind::Int64List(_)) => "int64",
        None => "UNKNOWN",
    }
}

/// Decodes `{"b64": "..."}`: standard or URL-safe alphabet, padding optional.
pub fn decode_b64(value: &Json) -> Result<Vec<u8>, ServeError> {
    use base64::alphabet;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let Json::String(text) = value else {
        return Err(invalid(format!("JSON Value: {} not formatted correctly for base64 data", to_string(value))));
    };
    GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(text))
        .map_err(|_| invalid("Unable to base64 decode".into()))
}

/// The base64 payload of a `{"b64": ...}` object (exactly one key).
pub fn b64_member(v: &Json) -> Option<&Json> {
    match v {
        Json::Object(members) if members.len() == 1 && members[0].0 == "b64" => Some(&members[0].1),
        _ => None,
    }
}

/// Appends one JSON value to a feature, fixing its kind on the first value.
fn add_value(v: &Json, name: &str, f: &mut Feature) -> Result<(), ServeError> {
    let unexpected = || invalid(format!("Feature: {name} has element with unexpected JSON type: {}", v.type_name()));
    let incompatible =
        |f: &Feature| invalid(format!("Unexpected element type in feature: {name} expecting type: {}", kind_name(f)));
    let kind = f.kind.get_or_insert_with(|| match v {
        Json::String(_) | Json::Object(_) => feature::Kind::BytesList(BytesList::default()),
        Json::Float(_) => feature::Kind::FloatList(FloatList::default()),
        _ => feature::Kind::Int64List(Int64List::default()),
    });
    match (kind, v) {
        (_, Json::Null | Json::Array(_)) => return Err(unexpected()),
        (_, Json::Object(_)) if b64_member(v).is_none() => return Err(unexpected()),
        (feature::Kind::BytesList(l), Json::Object(_)) => l.value.push(decode_b64(b64_member(v).expect("checked"))?),
        (feature::Kind::BytesList(l), Json::String(s)) => l.value.push(s.as_bytes().to_vec()),
        (feature::Kind::FloatList(l), Json::Float(x)) => {
            if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                return Err(invalid(format!(
                    "Cannot convert {} to float without loss: it is out of float range",
                    to_string(v)
                )));
            }
            l.value.push(*x as f32)
        }
        (_, Json::UInt(_)) => {
            return Err(invalid(format!("Feature: {name} has uint64 element. Only int64 is supported.")));
        }
        (feature::Kind::Int64List(l), Json::Int(i)) => l.value.push(*i),
        (feature::Kind::Int64List(l), Json::Bool(b)) => l.value.push(i64::from(*b)),
        _ => return Err(incompatible(f)),
    }
    Ok(())
}

/// One example from a JSON object of features (a value or a list each).
fn example(v: &Json) -> Result<Example, ServeError> {
    let Json::Object(members) = v else {
        return Err(invalid(format!("Example must be JSON object but got JSON {}", v.type_name())));
    };
    let mut features = Features::default();
    for (name, content) in members {
        let mut f = Feature::default();
        match content {
            Json::Array(values) => {
                for value in values {
                    add_value(value, name, &mut f)?;
                }
            }
            value => add_value(value, name, &mut f)?,
        }
        features.feature.insert(name.clone(), f);
    }
    Ok(Example { features: Some(features) })
}

/// A classify or regress body as the gRPC request's `Input`, and its
/// `signature_name`. `verb` is `classify` or `regress`, for the message
/// TensorFlow Serving gives when `examples` is missing (it says "classify"
/// for both).
///
/// # Errors
/// With TensorFlow Serving's messages for a malformed body.
pub fn request_input(doc: &Json) -> Result<(Input, String), ServeError> {
    let text = || to_string(doc);
    let Json::Object(_) = doc else {
        return Err(invalid(format!("JSON Value: {} Is not object", text())));
    };
    let signature_name = match doc.get("signature_name") {
        None => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(_) => {
            return Err(invalid(format!(
                "JSON Value: {} not formatted correctly. 'signature_name' key must be a string value.",
                text()
            )));
        }
    };
    let context = doc.get("context").map(example).transpose()?;
    let Some(list) = doc.get("examples") else {
        return Err(invalid(format!(
            "JSON Value: {} When method is classify, key 'examples' is expected and was not found",
            text()
        )));
    };
    let Json::Array(list) = list else {
        return Err(invalid(format!("JSON Value: {} Expecting 'examples' value to be an list/array", text())));
    };
    if list.is_empty() {
        return Err(invalid(format!("JSON Value: {} 'examples' value is an empty array", text())));
    }
    let examples = list.iter().map(example).collect::<Result<Vec<_>, _>>()?;
    let kind = match context {
        None => input::Kind::ExampleList(ExampleList { examples }),
        Some(context) => {
            input::Kind::ExampleListWithContext(ExampleListWithContext { examples, context: Some(context) })
        }
    };
    Ok((Input { kind: Some(kind) }, signature_name))
}

/// `{"results": [[[label, score], ...], ...]}`, one list per example.
///
/// # Errors
/// For an empty result, with TensorFlow Serving's text.
pub fn classification_json(result: &ClassificationResult) -> Result<String, ServeError> {
    if result.classifications.is_empty() {
        return Err(invalid("Cannot convert empty ClassificationResults to JSON".into()));
    }
    let mut out = String::from("{\"results\":[");
    for (i, classes) in result.classifications.iter().enumerate() {
        out.push_str(if i == 0 { "[" } else { ",[" });
        for (j, class) in classes.classes.iter().enumerate() {
            out.push_str(if j == 0 { "[" } else { ",[" });
            write_string(&mut out, &class.label);
            out.push(',');
            out.push_str(&format_float(f64::from(class.score), true));
            out.push(']');
        }
        out.push(']');
    }
    out.push_str("]}");
    Ok(out)
}

/// `{"results": [v1, v2, ...]}`.
///
/// # Errors
/// For an empty result, with TensorFlow Serving's text.
pub fn regression_json(values: &[f32]) -> Result<String, ServeError> {
    if values.is_empty() {
        return Err(invalid("Cannot convert empty RegressionResults to JSON".into()));
    }
    let parts: Vec<String> = values.iter().map(|&v| format_float(f64::from(v), true)).collect();
    Ok(format!("{{\"results\":[{}]}}", parts.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensorflow::serving::{Class, Classifications};
    use crate::rest::json::parse;

    fn input(body: &str) -> Result<Input, String> {
        request_input(&parse(body.as_bytes()).unwrap()).map(|(i, _)| i).map_err(|e| e.to_string())
    }

    fn features(i: &Input, n: usize) -> &std::collections::HashMap<String, Feature> {
        let examples = match i.kind.as_ref().unwrap() {
            input::Kind::ExampleList(l) => &l.examples,
            input::Kind::ExampleListWithContext(l) => &l.examples,
        };
        &examples[n].features.as_ref().unwrap().feature
    }

    #[test]
    fn json_values_map_to_feature_kinds() {
        let i = input(r#"{"examples":[{"f":80,"g":80.0,"s":"ab","b":{"b64":"aGk="},"t":[true,false],"l":[1.5,2e3]}]}"#)
            .unwrap();
        let f = features(&i, 0);
        assert_eq!(f["f"].kind, Some(feature::Kind::Int64List(Int64List { value: vec![80] })));
        assert_eq!(f["g"].kind, Some(feature::Kind::FloatList(FloatList { value: vec![80.0] })));
        assert_eq!(f["s"].kind, Some(feature::Kind::BytesList(BytesList { value: vec![b"ab".to_vec()] })));
        assert_eq!(f["b"].kind, Some(feature::Kind::BytesList(BytesList { value: vec![b"hi".to_vec()] })));
        assert_eq!(f["t"].kind, Some(feature::Kind::Int64List(Int64List { value: vec![1, 0] })));
        assert_eq!(f["l"].kind, Some(feature::Kind::FloatList(FloatList { value: vec![1.5, 2000.0] })));
    }

    #[test]
    fn context_makes_an_example_list_with_context() {
        let i = input(r#"{"context":{"c":1},"examples":[{"x":2}]}"#).unwrap();
        let Some(input::Kind::ExampleListWithContext(l)) = &i.kind else { panic!("{i:?}") };
        assert!(l.context.as_ref().unwrap().features.as_ref().unwrap().feature.contains_key("c"));
    }

    #[test]
    fn malformed_bodies_get_tensorflow_servings_texts() {
        assert_eq!(input("[1]").unwrap_err(), "JSON Value: [1] Is not object");
        assert_eq!(
            input(r#"{"x":1}"#).unwrap_err(),
            r#"JSON Value: {"x":1} When method is classify, key 'examples' is expected and was not found"#
        );
        assert_eq!(
            input(r#"{"examples":[]}"#).unwrap_err(),
            r#"JSON Value: {"examples":[]} 'examples' value is an empty array"#
        );
        assert_eq!(
            input(r#"{"examples":{}}"#).unwrap_err(),
            r#"JSON Value: {"examples":{}} Expecting 'examples' value to be an list/array"#
        );
        assert_eq!(input(r#"{"examples":[3]}"#).unwrap_err(), "Example must be JSON object but got JSON Number");
        assert_eq!(
            input(r#"{"examples":[{"x":[1, 2.5]}]}"#).unwrap_err(),
            "Unexpected element type in feature: x expecting type: int64"
        );
        assert_eq!(
            input(r#"{"examples":[{"x":null}]}"#).unwrap_err(),
            "Feature: x has element with unexpected JSON type: Null"
        );
        assert_eq!(
            input(r#"{"examples":[{"x":[[1]]}]}"#).unwrap_err(),
            "Feature: x has element with unexpected JSON type: Array"
        );
        assert_eq!(
            input(r#"{"examples":[{"x":18446744073709551615}]}"#).unwrap_err(),
            "Feature: x has uint64 element. Only int64 is supported."
        );
        assert_eq!(input(r#"{"examples":[{"x":{"b64":"%%"}}]}"#).unwrap_err(), "Unable to base64 decode");
        assert!(
            input(r#"{"signature_name":1,"examples":[{}]}"#)
                .unwrap_err()
                .contains("'signature_name' key must be a string value.")
        );
    }

    #[test]
    fn results_use_the_results_key() {
        let result = ClassificationResult {
            classifications: vec![Classifications {
                classes: vec![Class { label: "a".into(), score: 0.5 }, Class { label: String::new(), score: 4.0 }],
            }],
        };
        assert_eq!(classification_json(&result).unwrap(), r#"{"results":[[["a",0.5],["",4.0]]]}"#);
        assert_eq!(regression_json(&[1.0, 9e6]).unwrap(), r#"{"results":[1.0,9e+06]}"#);
        assert_eq!(
            classification_json(&ClassificationResult::default()).unwrap_err().to_string(),
            "Cannot convert empty ClassificationResults to JSON"
        );
        assert_eq!(regression_json(&[]).unwrap_err().to_string(), "Cannot convert empty RegressionResults to JSON");
    }
}
