//! Classify, Regress and MultiInference on models whose signatures take
//! tensors, not serialized `tf.Example`s.
//!
//! TensorFlow Serving feeds the examples, serialized, to a signature's one
//! `inputs` string tensor and lets the graph parse them. An ONNX model has no
//! parser inside, so the examples are parsed here instead, by this mapping:
//!
//! - every input alias of the signature is read from the feature of the same
//!   name (the example's own feature, or else the context's); its values fill
//!   the input's per-example shape (the input's dims after the first), and
//!   the examples are stacked along dimension 0;
//! - `float_list` feeds float and double inputs, `int64_list` feeds integer,
//!   bool and (converted) float inputs, `bytes_list` feeds string inputs;
//! - Classify reads the output aliased `scores` (or the signature's only
//!   output), float `[batch, k]`, and answers k classes per example in output
//!   order, labelled from the version's `labels.txt` or by index;
//! - Regress reads the output aliased `outputs` (or the only output), float
//!   `[batch]` or `[batch, 1]`.
//!
//! gRPC and REST both come here: REST only turns its JSON into an `Input`
//! and the results back into JSON.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::ServeError;
use crate::graph::ValueId;
use crate::proto::tensorflow::serving::{
    Class, ClassificationResult, Classifications, Input, ModelSpec, Regression, RegressionResult, input, model_spec,
};
use crate::proto::tensorflow::{Example, Feature, feature};
use crate::servable::{Servable, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData, format_dims};

/// The `method_name` of classification tasks.
pub const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
/// The `method_name` of regression tasks.
pub const REGRESS_METHOD: &str = "tensorflow/serving/regress";

/// What a task computes from the model's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Classify,
    Regress,
}

impl Method {
    /// The method of a MultiInference task's `method_name`.
    ///
    /// # Errors
    /// `UNIMPLEMENTED`, with TensorFlow Serving's text, for anything else.
    pub fn from_name(name: &str) -> Result<Method, ServeError> {
        match name {
            CLASSIFY_METHOD => Ok(Method::Classify),
            REGRESS_METHOD => Ok(Method::Regress),
            other => Err(ServeError::Unimplemented(format!("Unsupported signature method_name: {other}"))),
        }
    }

    /// The API name metrics and messages use.
    pub fn api(self) -> &'static str {
        match self {
            Method::Classify => "Classify",
            Method::Regress => "Regress",
        }
    }
}

/// One answer of an inference task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    Classification(ClassificationResult),
    Regression(RegressionResult),
}

/// A task whose signature and output have been checked.
#[derive(Debug)]
struct Task {
    method: Method,
    signature_key: String,
    output_alias: String,
    output: ValueId,
}

/// Classify, Regress or MultiInference tasks checked against the model, with
/// the examples still undecoded: the cheap half, done where the request
/// arrives. [`PreparedInference::execute`] decodes, runs and reads the
/// outputs on the compute pool.
#[derive(Debug)]
pub struct PreparedInference {
    servable: Arc<Servable>,
    tasks: Vec<Task>,
    /// The inputs every task shares, by alias.
    inputs: Vec<(String, TensorSpec)>,
    input: Input,
}

fn braces<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    format!("{{{}}}", names.into_iter().map(String::as_str).collect::<Vec<_>>().join(","))
}

/// The output a task reads: the one aliased `preferred`, or the only one.
fn task_output<'a>(
    method: Method,
    key: &str,
    signature: &'a Signature,
) -> Result<(&'a String, &'a TensorSpec), ServeError> {
    let preferred = match method {
        Method::Classify => "scores",
        Method::Regress => "outputs",
    };
    let (alias, spec) = match signature.outputs.get_key_value(preferred) {
        Some(found) => found,
        None if signature.outputs.len() == 1 => signature.outputs.iter().next().expect("one output"),
        None => {
            return Err(ServeError::InvalidArgument(format!(
                "{} needs an output aliased \"{preferred}\", or a signature with exactly one output; signature \"{key}\" has outputs {}",
                method.api(),
                braces(signature.outputs.keys())
            )));
        }
    };
    let fits = match (&spec.shape, method) {
        (None, _) => true,
        (Some(d), Method::Classify) => d.len() == 2,
        (Some(d), Method::Regress) => d.len() == 1 || (d.len() == 2 && (d[1] == 1 || d[1] < 0)),
    };
    if spec.dtype != DataType::Float || !fits {
        let wanted = match method {
            Method::Classify => "float [batch, classes]",
            Method::Regress => "float [batch] or [batch, 1]",
        };
        let shape = spec.shape.as_ref().map_or_else(|| "<unknown rank>".to_string(), |d| format_dims(d));
        return Err(ServeError::InvalidArgument(format!(
            "{} needs output '{alias}' of signature \"{key}\" to be {wanted}, but it is {} {shape}",
            method.api(),
            spec.dtype
        )));
    }
    Ok((alias, spec))
}

fn is_empty(input: &Input) -> bool {
    match &input.kind {
        None => true,
        Some(input::Kind::ExampleList(list)) => list.examples.is_empty(),
        Some(input::Kind::ExampleListWithContext(list)) => list.examples.is_empty(),
    }
}

impl PreparedInference {
    /// A Classify or Regress of `input` on the signature `signature_name`
    /// (default when empty).
    ///
    /// # Errors
    /// With TensorFlow Serving's texts for an unknown signature and an empty
    /// input; with ours for a signature whose outputs cannot answer `method`.
    pub fn single(
        servable: Arc<Servable>,
        method: Method,
        signature_name: &str,
        input: Option<Input>,
    ) -> Result<Self, ServeError> {
        let (key, signature) = servable.signature(signature_name).map_err(|_| {
            let key = if signature_name.is_empty() { crate::servable::DEFAULT_SIGNATURE } else { signature_name };
            ServeError::InvalidArgument(format!("No signature was found with the name: {key}"))
        })?;
        let (alias, spec) = task_output(method, key, signature)?;
        let task = Task { method, signature_key: key.to_string(), output_alias: alias.clone(), output: spec.value };
        let inputs = signature.inputs.iter().map(|(a, s)| (a.clone(), s.clone())).collect();
        Self::finish(servable, vec![task], inputs, input)
    }

    /// The tasks of a MultiInference, checked with TensorFlow Serving's rules
    /// and texts: every task names the same model (`servable`, resolved from
    /// the first task) and has a classify or regress method; all signatures
    /// take the same inputs. A signature may serve one classify and one
    /// regress task, but not the same method twice.
    ///
    /// # Errors
    /// For a request that breaks one of those rules, or an empty input.
    pub fn multi(
        servable: Arc<Servable>,
        tasks: &[crate::proto::tensorflow::serving::InferenceTask],
        input: Option<Input>,
    ) -> Result<Self, ServeError> {
        let mut checked: Vec<Task> = Vec::with_capacity(tasks.len());
        let mut seen = BTreeSet::new();
        let mut inputs: Option<&Signature> = None;
        for task in tasks {
            let spec = task.model_spec.clone().unwrap_or_default();
            if spec.name != servable.name {
                return Err(ServeError::InvalidArgument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name.".into(),
                ));
            }
            let key = if spec.signature_name.is_empty() {
                crate::servable::DEFAULT_SIGNATURE.to_string()
            } else {
                spec.signature_name
            };
            let method = Method::from_name(&task.method_name);
            if let Ok(m) = method
                && !seen.insert((key.clone(), m))
            {
                return Err(ServeError::InvalidArgument(format!("Duplicate evaluation of signature: {key}")));
            }
            let Some(signature) = servable.signatures.get(&key) else {
                return Err(ServeError::InvalidArgument(format!(
                    "Requested signature not found in model graph: {key}"
                )));
            };
            let method = method?;
            let (alias, spec) = task_output(method, &key, signature)?;
            match inputs {
                None => inputs = Some(signature),
                Some(first) if first.inputs == signature.inputs => {}
                Some(_) => {
                    return Err(ServeError::InvalidArgument(
                        "Input tensor must be the same for all Signatures.".into(),
                    ));
                }
            }
            checked.push(Task { method, signature_key: key, output_alias: alias.clone(), output: spec.value });
        }
        let inputs = match inputs {
            Some(signature) => signature.inputs.iter().map(|(a, s)| (a.clone(), s.clone())).collect(),
            None => Vec::new(),
        };
        Self::finish(servable, checked, inputs, input)
    }

    fn finish(
        servable: Arc<Servable>,
        tasks: Vec<Task>,
        inputs: Vec<(String, TensorSpec)>,
        input: Option<Input>,
    ) -> Result<Self, ServeError> {
        let input = input.unwrap_or_default();
        if is_empty(&input) {
            return Err(ServeError::InvalidArgument("Input is empty.".into()));
        }
        Ok(PreparedInference { servable, tasks, inputs, input })
    }

    /// Under `--enable_signature_method_name_check` (`enabled`), refuses
    /// tasks whose signature's method_name is not the task's, with
    /// TensorFlow Serving's text. ONNX signatures are prediction signatures,
    /// so with the check on they answer Predict only, as in TF Serving.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for the first task whose method does not match.
    pub fn checking_methods(self, enabled: bool) -> Result<Self, ServeError> {
        if !enabled {
            return Ok(self);
        }
        for task in &self.tasks {
            let (kind, wanted) = match task.method {
                Method::Classify => ("classification", CLASSIFY_METHOD),
                Method::Regress => ("regression", REGRESS_METHOD),
            };
            let was = self.servable.signatures.get(&task.signature_key).map_or("", |s| s.method_name.as_str());
            if was != wanted {
                return Err(ServeError::InvalidArgument(format!(
                    "Expected {kind} signature method_name to be {wanted}. Was: {was}"
                )));
            }
        }
        Ok(self)
    }

    /// The servable the tasks run on.
    pub fn servable(&self) -> &Arc<Servable> {
        &self.servable
    }

    /// The number of examples in the input.
    pub fn example_count(&self) -> usize {
        match &self.input.kind {
            None => 0,
            Some(input::Kind::ExampleList(list)) => list.examples.len(),
            Some(input::Kind::ExampleListWithContext(list)) => list.examples.len(),
        }
    }

    /// Decodes the examples into the model's inputs, runs the model once for
    /// all tasks, and answers each task in order with the model_spec
    /// TensorFlow Serving sets (name, resolved signature, version).
    /// Synchronous and CPU-bound: call it on the compute pool.
    ///
    /// # Errors
    /// When an example lacks a feature or its values do not fit the input,
    /// when the model fails on the data, or when an output has not the
    /// shape the task needs.
    pub fn execute(self) -> Result<Vec<(ModelSpec, TaskResult)>, ServeError> {
        let n = self.example_count();
        let feeds = feeds(&self.inputs, &self.input)?;
        let mut fetches: Vec<ValueId> = self.tasks.iter().map(|t| t.output).collect();
        fetches.sort_unstable();
        fetches.dedup();
        let outputs = self.servable.run(feeds, &fetches)?;
        let by_value: HashMap<ValueId, Tensor> = fetches.into_iter().zip(outputs).collect();
        self.tasks
            .iter()
            .map(|task| {
                let tensor = &by_value[&task.output];
                let result = match task.method {
                    Method::Classify => TaskResult::Classification(classifications(
                        tensor,
                        &task.output_alias,
                        n,
                        self.servable.labels.as_deref(),
                    )?),
                    Method::Regress => TaskResult::Regression(regressions(tensor, &task.output_alias, n)?),
                };
                let spec = ModelSpec {
                    name: self.servable.name.clone(),
                    signature_name: task.signature_key.clone(),
                    version_choice: Some(model_spec::VersionChoice::Version(self.servable.version)),
                };
                Ok((spec, result))
            })
            .collect()
    }
}

/// The examples and the context features that apply to each.
fn examples(input: &Input) -> (&[Example], Option<&Example>) {
    match &input.kind {
        None => (&[], None),
        Some(input::Kind::ExampleList(list)) => (&list.examples, None),
        Some(input::Kind::ExampleListWithContext(list)) => (&list.examples, list.context.as_ref()),
    }
}

fn feature<'a>(example: &'a Example, name: &str) -> Option<&'a Feature> {
    example.features.as_ref()?.feature.get(name)
}

/// Values of one feature, before they meet an input's dtype.
enum Values<'a> {
    Float(&'a [f32]),
    Int(&'a [i64]),
    Bytes(&'a [Vec<u8>]),
}

impl Values<'_> {
    fn of(feature: &Feature) -> Values<'_> {
        match &feature.kind {
            None => Values::Float(&[]),
            Some(feature::Kind::FloatList(l)) => Values::Float(&l.value),
            Some(feature::Kind::Int64List(l)) => Values::Int(&l.value),
            Some(feature::Kind::BytesList(l)) => Values::Bytes(&l.value),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Bytes(v) => v.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Values::Float(_) => "float_list",
            Values::Int(_) => "int64_list",
            Values::Bytes(_) => "bytes_list",
        }
    }
}

/// The per-example shape of an input: its dims after the batch dim, with a
/// single unknown dim taken from the first example's value count.
fn per_example_shape(alias: &str, spec: &TensorSpec, first_count: usize) -> Result<Vec<usize>, ServeError> {
    let Some(dims) = &spec.shape else {
        return Ok(vec![first_count]);
    };
    if dims.is_empty() {
        return Err(ServeError::InvalidArgument(format!(
            "input '{alias}' is a scalar; examples feed only inputs whose first dimension is the batch"
        )));
    }
    let rest = &dims[1..];
    let unknown = rest.iter().filter(|&&d| d < 0).count();
    let known: usize = rest.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    match unknown {
        0 => Ok(rest.iter().map(|&d| d as usize).collect()),
        1 if known > 0 && first_count.is_multiple_of(known) => {
            Ok(rest.iter().map(|&d| if d < 0 { first_count / known } else { d as usize }).collect())
        }
        1 => Err(ServeError::InvalidArgument(format!(
            "feature '{alias}' of example 0 has {first_count} values, which does not fill input '{alias}' of shape {} (-1 is any size)",
            format_dims(dims)
        ))),
        _ => Err(ServeError::InvalidArgument(format!(
            "input '{alias}' has shape {} with more than one unknown dimension after the batch, so its per-example shape cannot be read from a feature",
            format_dims(dims)
        ))),
    }
}

/// Decodes the examples into one tensor per input.
fn feeds(inputs: &[(String, TensorSpec)], input: &Input) -> Result<Vec<(ValueId, Tensor)>, ServeError> {
    let (examples, context) = examples(input);
    let mut feeds = Vec::with_capacity(inputs.len());
    for (alias, spec) in inputs {
        let mut shape = Vec::new();
        let mut per = 0;
        let mut data = Elements::new(spec.dtype);
        for (i, example) in examples.iter().enumerate() {
            let Some(found) = feature(example, alias).or_else(|| context.and_then(|c| feature(c, alias))) else {
                return Err(ServeError::InvalidArgument(format!(
                    "Feature: {alias} (data type: {}) is required but could not be found in example {i} or the context.",
                    spec.dtype.tf_name()
                )));
            };
            let values = Values::of(found);
            if i == 0 {
                shape = per_example_shape(alias, spec, values.len())?;
                per = shape.iter().product();
                data.reserve(per * examples.len());
            }
            if values.len() != per {
                return Err(ServeError::InvalidArgument(format!(
                    "feature '{alias}' of example {i} has {} values, but input '{alias}' takes {per} per example (shape {})",
                    values.len(),
                    format_dims(&shape)
                )));
            }
            data.extend(&values).map_err(|why| {
                ServeError::InvalidArgument(format!(
                    "feature '{alias}' of example {i} is a {} that cannot feed input '{alias}' of dtype {}: {why}",
                    values.kind(),
                    spec.dtype
                ))
            })?;
        }
        shape.insert(0, examples.len());
        if !spec.accepts_shape(&shape) {
            return Err(ServeError::InvalidArgument(format!(
                "input '{alias}' expects shape {} (-1 is any size), but the examples make {}",
                spec.shape.as_ref().map_or_else(String::new, |d| format_dims(d)),
                format_dims(&shape)
            )));
        }
        let tensor = Tensor::new(shape, data.finish()).map_err(|e| ServeError::Internal(e.to_string()))?;
        feeds.push((spec.value, tensor));
    }
    Ok(feeds)
}

/// A growing buffer of one input's elements.
struct Elements(TensorData);

impl Elements {
    fn new(dtype: DataType) -> Elements {
        Elements(TensorData::zeros(dtype, 0))
    }

    fn reserve(&mut self, n: usize) {
        match &mut self.0 {
            TensorData::Float(v) => v.reserve(n),
            TensorData::Double(v) => v.reserve(n),
            TensorData::Int32(v) => v.reserve(n),
            TensorData::Int64(v) => v.reserve(n),
            TensorData::UInt8(v) => v.reserve(n),
            TensorData::Int8(v) => v.reserve(n),
            TensorData::Bool(v) => v.reserve(n),
            TensorData::String(v) => v.reserve(n),
        }
    }

    fn extend(&mut self, values: &Values<'_>) -> Result<(), String> {
        fn ints<T: TryFrom<i64>>(out: &mut Vec<T>, v: &[i64]) -> Result<(), String> {
            for &x in v {
                out.push(T::try_from(x).map_err(|_| format!("{x} is out of range"))?);
            }
            Ok(())
        }
        match (&mut self.0, values) {
            (TensorData::String(out), Values::Bytes(v)) => out.extend_from_slice(v),
            (TensorData::String(_), _) => return Err("string inputs take bytes_list features".into()),
            (_, Values::Bytes(_)) => return Err("bytes_list features feed only string inputs".into()),
            (TensorData::Float(out), Values::Float(v)) => out.extend_from_slice(v),
            (TensorData::Float(out), Values::Int(v)) => out.extend(v.iter().map(|&x| x as f32)),
            (TensorData::Double(out), Values::Float(v)) => out.extend(v.iter().map(|&x| f64::from(x))),
            (TensorData::Double(out), Values::Int(v)) => out.extend(v.iter().map(|&x| x as f64)),
            (TensorData::Int64(out), Values::Int(v)) => out.extend_from_slice(v),
            (TensorData::Int32(out), Values::Int(v)) => ints(out, v)?,
            (TensorData::UInt8(out), Values::Int(v)) => ints(out, v)?,
            (TensorData::Int8(out), Values::Int(v)) => ints(out, v)?,
            (TensorData::Bool(out), Values::Int(v)) => {
                for &x in *v {
                    match x {
                        0 | 1 => out.push(x == 1),
                        _ => return Err(format!("{x} is not 0 or 1")),
                    }
                }
            }
            (_, Values::Float(_)) => return Err("float values feed only float and double inputs".into()),
        }
        Ok(())
    }

    fn finish(self) -> TensorData {
        self.0
    }
}

/// Checks that an output has one row per example.
fn check_rows(tensor: &Tensor, alias: &str, n: usize, wanted: &str) -> Result<(), ServeError> {
    if tensor.shape().first() != Some(&n) {
        return Err(ServeError::InvalidArgument(format!(
            "output '{alias}' has shape {}, but {n} examples need {wanted}",
            format_dims(tensor.shape())
        )));
    }
    Ok(())
}

fn classifications(
    tensor: &Tensor,
    alias: &str,
    n: usize,
    labels: Option<&[String]>,
) -> Result<ClassificationResult, ServeError> {
    let wanted = format!("shape [{n}, classes]");
    check_rows(tensor, alias, n, &wanted)?;
    let (Some(scores), [_, k]) = (tensor.as_f32(), tensor.shape()) else {
        return Err(ServeError::InvalidArgument(format!(
            "output '{alias}' has dtype {} and shape {}, but Classify needs float {wanted}",
            tensor.dtype(),
            format_dims(tensor.shape())
        )));
    };
    let k = *k;
    if let Some(labels) = labels
        && labels.len() != k
    {
        return Err(ServeError::FailedPrecondition(format!(
            "labels.txt has {} labels, but output '{alias}' has {k} classes",
            labels.len()
        )));
    }
    let label = |j: usize| labels.map_or_else(|| j.to_string(), |l| l[j].clone());
    let classifications = scores
        .chunks_exact(k.max(1))
        .take(n)
        .map(|row| Classifications {
            classes: row.iter().enumerate().map(|(j, &score)| Class { label: label(j), score }).collect(),
        })
        .collect();
    Ok(ClassificationResult { classifications })
}

fn regressions(tensor: &Tensor, alias: &str, n: usize) -> Result<RegressionResult, ServeError> {
    let wanted = format!("shape [{n}] or [{n}, 1]");
    check_rows(tensor, alias, n, &wanted)?;
    let fits = matches!(tensor.shape(), [_] | [_, 1]);
    let Some(values) = tensor.as_f32().filter(|_| fits) else {
        return Err(ServeError::InvalidArgument(format!(
            "output '{alias}' has dtype {} and shape {}, but Regress needs float {wanted}",
            tensor.dtype(),
            format_dims(tensor.shape())
        )));
    };
    Ok(RegressionResult { regressions: values.iter().map(|&value| Regression { value }).collect() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::proto::tensorflow::serving::{ExampleList, ExampleListWithContext};
    use crate::proto::tensorflow::{Features, FloatList, Int64List};

    fn spec(value: ValueId, dtype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec { name: format!("v{value}:0"), dtype, shape: Some(shape.to_vec()), value }
    }

    fn floats(v: &[f32]) -> Feature {
        Feature { kind: Some(feature::Kind::FloatList(FloatList { value: v.to_vec() })) }
    }

    fn ints(v: &[i64]) -> Feature {
        Feature { kind: Some(feature::Kind::Int64List(Int64List { value: v.to_vec() })) }
    }

    fn example(features: &[(&str, Feature)]) -> Example {
        Example {
            features: Some(Features { feature: features.iter().map(|(k, f)| (k.to_string(), f.clone())).collect() }),
        }
    }

    fn list(examples: Vec<Example>) -> Input {
        Input { kind: Some(input::Kind::ExampleList(ExampleList { examples })) }
    }

    fn run(inputs: &[(&str, TensorSpec)], input: &Input) -> Result<Vec<Tensor>, ServeError> {
        let inputs: Vec<_> = inputs.iter().map(|(a, s)| (a.to_string(), s.clone())).collect();
        Ok(feeds(&inputs, input)?.into_iter().map(|(_, t)| t).collect())
    }

    #[test]
    fn features_fill_inputs_by_alias_and_stack_examples() {
        let inputs = [("a", spec(0, DataType::Float, &[-1, 2])), ("b", spec(1, DataType::Int64, &[-1]))];
        let input = list(vec![
            example(&[("a", floats(&[1.0, 2.0])), ("b", ints(&[7]))]),
            example(&[("b", ints(&[8])), ("a", ints(&[3, 4]))]),
        ]);
        let t = run(&inputs, &input).unwrap();
        assert_eq!(t[0].shape(), [2, 2]);
        assert_eq!(t[0].as_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(t[1].shape(), [2]);
        assert_eq!(t[1].as_i64().unwrap(), [7, 8]);
    }

    #[test]
    fn context_applies_to_every_example_and_the_example_wins() {
        let inputs = [("a", spec(0, DataType::Float, &[-1, 1])), ("b", spec(1, DataType::Float, &[-1, 1]))];
        let input = Input {
            kind: Some(input::Kind::ExampleListWithContext(ExampleListWithContext {
                examples: vec![
                    example(&[("a", floats(&[1.0]))]),
                    example(&[("a", floats(&[2.0])), ("b", floats(&[9.0]))]),
                ],
                context: Some(example(&[("b", floats(&[5.0])), ("a", floats(&[0.0]))])),
            })),
        };
        let t = run(&inputs, &input).unwrap();
        assert_eq!(t[0].as_f32().unwrap(), [1.0, 2.0]);
        assert_eq!(t[1].as_f32().unwrap(), [5.0, 9.0]);
    }

    #[test]
    fn one_unknown_dim_is_read_from_the_values() {
        let inputs = [("a", spec(0, DataType::Float, &[-1, -1, 2]))];
        let t = run(&inputs, &list(vec![example(&[("a", floats(&[1.0; 6]))])])).unwrap();
        assert_eq!(t[0].shape(), [1, 3, 2]);
    }

    #[test]
    fn bad_examples_name_the_feature_and_what_was_expected() {
        let inputs = [("a", spec(0, DataType::Float, &[-1, 2]))];
        let err = |input: Input| run(&inputs, &input).unwrap_err().to_string();
        assert_eq!(
            err(list(vec![example(&[("b", floats(&[1.0, 2.0]))])])),
            "Feature: a (data type: float) is required but could not be found in example 0 or the context."
        );
        assert_eq!(
            err(list(vec![example(&[("a", floats(&[1.0, 2.0]))]), example(&[("a", floats(&[1.0]))])])),
            "feature 'a' of example 1 has 1 values, but input 'a' takes 2 per example (shape [2])"
        );
        let bytes = Feature {
            kind: Some(feature::Kind::BytesList(crate::proto::tensorflow::BytesList { value: vec![b"x".to_vec(); 2] })),
        };
        assert!(err(list(vec![example(&[("a", bytes)])])).contains("bytes_list"));
        let int_inputs = [("i", spec(0, DataType::Int32, &[-1]))];
        let e = run(&int_inputs, &list(vec![example(&[("i", floats(&[1.0]))])])).unwrap_err().to_string();
        assert!(e.contains("float_list that cannot feed input 'i' of dtype DT_INT32"), "{e}");
        let e = run(&int_inputs, &list(vec![example(&[("i", ints(&[1 << 40]))])])).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn outputs_are_chosen_by_alias_or_as_the_only_one() {
        let outputs = |list: &[(&str, TensorSpec)]| Signature {
            method_name: String::new(),
            inputs: BTreeMap::new(),
            outputs: list.iter().map(|(a, s)| (a.to_string(), s.clone())).collect(),
            opaque_outputs: BTreeMap::new(),
            defaults: BTreeMap::new(),
        };
        let two =
            outputs(&[("scores", spec(1, DataType::Float, &[-1, 3])), ("outputs", spec(2, DataType::Float, &[-1, 1]))]);
        assert_eq!(task_output(Method::Classify, "k", &two).unwrap().0, "scores");
        assert_eq!(task_output(Method::Regress, "k", &two).unwrap().0, "outputs");
        let only = outputs(&[("p", spec(1, DataType::Float, &[-1, 10]))]);
        assert_eq!(task_output(Method::Classify, "k", &only).unwrap().0, "p");
        assert_eq!(
            task_output(Method::Regress, "k", &only).unwrap_err().to_string(),
            "Regress needs output 'p' of signature \"k\" to be float [batch] or [batch, 1], but it is DT_FLOAT [-1,10]"
        );
        let other = outputs(&[("x", spec(1, DataType::Float, &[-1])), ("y", spec(2, DataType::Float, &[-1]))]);
        assert_eq!(
            task_output(Method::Classify, "k", &other).unwrap_err().to_string(),
            "Classify needs an output aliased \"scores\", or a signature with exactly one output; signature \"k\" has outputs {x,y}"
        );
    }

    #[test]
    fn classes_keep_output_order_with_labels_or_indices() {
        let t = Tensor::from_f32(vec![2, 2], vec![0.25, 0.75, 0.5, 0.5]).unwrap();
        let r = classifications(&t, "s", 2, None).unwrap();
        assert_eq!(r.classifications[0].classes[1], Class { label: "1".into(), score: 0.75 });
        let labels = ["no".to_string(), "yes".to_string()];
        let r = classifications(&t, "s", 2, Some(&labels)).unwrap();
        assert_eq!(r.classifications[1].classes[0], Class { label: "no".into(), score: 0.5 });
        assert!(classifications(&t, "s", 2, Some(&labels[..1])).is_err());
        assert!(classifications(&t, "s", 3, None).is_err());
        let r = regressions(&Tensor::from_f32(vec![2, 1], vec![1.5, -2.0]).unwrap(), "o", 2).unwrap();
        assert_eq!(r.regressions, [Regression { value: 1.5 }, Regression { value: -2.0 }]);
        assert!(regressions(&t, "o", 2).is_err());
    }
}
