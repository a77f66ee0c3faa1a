//! A loaded model version: its signatures, the checks a request must pass
//! against them, and the plan that computes the answer.
//!
//! Everything here is transport-neutral: gRPC and REST both decode their
//! inputs into tensors, ask the [`Signature`] to check them, and call
//! [`Servable::run`]. The checks produce TensorFlow Serving's texts where it
//! defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::ServeError;
use crate::graph::{Dim, Graph, ValueId};
use crate::kernels::KernelRegistry;
use crate::runtime::{Plan, PlanError, RunError};
use crate::tensor::{DataType, Tensor, format_dims};

/// The signature every ONNX model gets, and the default of requests that
/// name none.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// The method name of prediction signatures.
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";

/// The method names Predict accepts under
/// `--enable_signature_method_name_check`.
const PREDICT_METHODS: [&str; 3] = [PREDICT_METHOD, "tensorflow/serving/classify", "tensorflow/serving/regress"];

/// One input or output of a signature (TensorFlow's `TensorInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// The graph tensor name clients see (`image:0`).
    pub name: String,
    pub dtype: DataType,
    /// Dims, -1 for a dim of any size; `None` for an unknown rank.
    pub shape: Option<Vec<i64>>,
    /// The graph value this alias feeds or fetches.
    pub value: ValueId,
}

impl TensorSpec {
    /// True when `shape` fits this spec's rank and known dims.
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        match &self.shape {
            None => true,
            Some(dims) => dims.len() == shape.len() && dims.iter().zip(shape).all(|(&d, &s)| d < 0 || d as usize == s),
        }
    }

    fn shape_text(&self) -> String {
        self.shape.as_ref().map_or_else(|| "<unknown rank>".to_string(), |d| format_dims(d))
    }
}

/// A named way to call the model (TensorFlow's `SignatureDef`).
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub method_name: String,
    /// By alias, sorted as clients see them.
    pub inputs: BTreeMap<String, TensorSpec>,
    pub outputs: BTreeMap<String, TensorSpec>,
    /// Outputs that name an operation rather than a tensor (a SavedModel's
    /// `__saved_model_init_op` names its `NoOp`): alias -> name. Metadata
    /// shows them as TensorFlow does (DT_INVALID, unknown rank); nothing
    /// can fetch them.
    pub opaque_outputs: BTreeMap<String, String>,
    /// Values for inputs a request may leave out (a SavedModel's
    /// `SignatureDef.defaults`), by alias.
    pub defaults: BTreeMap<String, Tensor>,
}

fn braces<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    format!("{{{}}}", names.into_iter().collect::<Vec<_>>().join(","))
}

impl Signature {
    /// Under `--enable_signature_method_name_check`, refuses a signature that
    /// Predict may not call, with TensorFlow Serving's code and text.
    ///
    /// # Errors
    /// `INTERNAL` when the method name is not predict, classify or regress.
    pub fn check_predict_method(&self) -> Result<(), ServeError> {
        if PREDICT_METHODS.contains(&self.method_name.as_str()) {
            return Ok(());
        }
        Err(ServeError::Internal(format!(
            "Expected prediction signature method_name to be one of {{{}}}. Was: {}",
            PREDICT_METHODS.join(", "),
            self.method_name
        )))
    }

    /// Checks the set of input aliases a request sent, with TensorFlow
    /// Serving's messages: every input the signature has no default for
    /// must be there, and nothing else.
    ///
    /// # Errors
    /// When an alias is missing or unknown.
    pub fn check_aliases<'a>(&self, sent: impl IntoIterator<Item = &'a str>) -> Result<(), ServeError> {
        let sent: BTreeSet<&str> = sent.into_iter().collect();
        let expected: BTreeSet<&str> = self.inputs.keys().map(String::as_str).collect();
        let defaulted: BTreeSet<&str> = self.defaults.keys().map(String::as_str).collect();
        let required: BTreeSet<&str> = expected.difference(&defaulted).copied().collect();
        if sent.len() > expected.len() || (sent.len() < expected.len() && defaulted.is_empty()) {
            return Err(ServeError::InvalidArgument(format!(
                "input size does not match signature: {}!={} len({}) != len({}). Sent extra: {}. Missing but required: {}.",
                sent.len(),
                expected.len(),
                braces(sent.iter().copied()),
                braces(expected.iter().copied()),
                braces(sent.difference(&expected).copied()),
                braces(required.difference(&sent).copied()),
            )));
        }
        if let Some(missing) = required.difference(&sent).next() {
            return Err(ServeError::InvalidArgument(format!(
                "Signature input alias: {missing}(feed name: {}) not found in request and no default value provided. Inputs expected to be in the request {}, or default input alias set: {}",
                self.inputs[*missing].name,
                braces(required.iter().copied()),
                braces(defaulted.iter().copied()),
            )));
        }
        if let Some(unknown) = sent.difference(&expected).next() {
            return Err(ServeError::InvalidArgument(format!(
                "Inputs contains invalid name. Used request inputs: {}, request input: {unknown}",
                braces(sent.intersection(&expected).copied()),
            )));
        }
        Ok(())
    }

    /// Checks one input's dtype and shape before its elements are decoded.
    ///
    /// # Errors
    /// When the dtype differs from the signature's, or the shape does not fit
    /// its rank and fixed dims.
    pub fn check_input(&self, alias: &str, dtype: DataType, shape: &[usize]) -> Result<&TensorSpec, ServeError> {
        let spec = self.inputs.get(alias).ok_or_else(|| {
            ServeError::InvalidArgument(format!(
                "input tensor alias not found in signature: {alias}. Inputs expected to be in the set {}.",
                braces(self.inputs.keys().map(String::as_str))
            ))
        })?;
        if spec.dtype != dtype || !spec.accepts_shape(shape) {
            return Err(ServeError::InvalidArgument(format!(
                "input '{alias}' expects dtype {} and shape {} (-1 is any size), but the request has dtype {dtype} and shape {}",
                spec.dtype,
                spec.shape_text(),
                format_dims(shape),
            )));
        }
        Ok(spec)
    }

    /// The outputs to fetch for `filter` (all, in alias order, when empty).
    ///
    /// # Errors
    /// For an unknown or repeated alias, with TensorFlow Serving's messages.
    pub fn select_outputs<'a>(&'a self, filter: &'a [String]) -> Result<Vec<(&'a str, &'a TensorSpec)>, ServeError> {
        if filter.is_empty() {
            return Ok(self.outputs.iter().map(|(a, s)| (a.as_str(), s)).collect());
        }
        let mut seen = BTreeSet::new();
        filter
            .iter()
            .map(|alias| {
                let spec = self.outputs.get(alias).ok_or_else(|| {
                    ServeError::InvalidArgument(format!(
                        "output tensor alias not found in signature: {alias} Outputs expected to be in the set {}.",
                        braces(self.outputs.keys().map(String::as_str))
                    ))
                })?;
                if !seen.insert(alias.as_str()) {
                    return Err(ServeError::InvalidArgument(format!("duplicate output tensor alias: {alias}")));
                }
                Ok((alias.as_str(), spec))
            })
            .collect()
    }
}

/// Why a model version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Onnx { path: String, source: crate::onnx::OnnxError },
    #[error("{path}: {source}")]
    Plan { path: String, source: PlanError },
    #[error("{path}: {message}")]
    Signature { path: String, message: String },
    #[error(transparent)]
    SavedModel(#[from] crate::savedmodel::meta::SavedModelError),
}

/// One loaded version of a model.
#[derive(Debug)]
pub struct Servable {
    /// The model name it is served under.
    pub name: String,
    pub version: i64,
    /// By signature key.
    pub signatures: BTreeMap<String, Signature>,
    /// Class labels for Classify, from `labels.txt` in the version
    /// directory (one per line), in output order.
    pub labels: Option<Vec<String>>,
    plan: Plan,
}

/// The file that names a classifier's classes, one per line.
pub const LABELS_FILE: &str = "labels.txt";

/// Reads `labels.txt` next to the model file, if there is one.
fn read_labels(model_file: &Path) -> Result<Option<Vec<String>>, LoadError> {
    let Some(path) = model_file.parent().map(|d| d.join(LABELS_FILE)) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(LoadError::Signature {
                path: path.display().to_string(),
                message: format!("cannot read: {e}"),
            });
        }
    };
    Ok(Some(text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect()))
}

/// Refuses labels that cannot match the classes of the output Classify
/// would read, when its class count is fixed.
fn check_labels(labels: &[String], signature: &Signature, path: &Path) -> Result<(), LoadError> {
    let output = signature
        .outputs
        .get("scores")
        .or_else(|| if signature.outputs.len() == 1 { signature.outputs.values().next() } else { None });
    if let Some(dims) = output.and_then(|o| o.shape.as_ref())
        && let [_, k] = dims[..]
        && k >= 0
        && k as usize != labels.len()
    {
        return Err(LoadError::Signature {
            path: path.display().to_string(),
            message: format!("{LABELS_FILE} has {} labels, but the model has {k} classes", labels.len()),
        });
    }
    Ok(())
}

fn spec_of(graph: &Graph, id: ValueId, path: &Path) -> Result<TensorSpec, LoadError> {
    let v = &graph.values[id];
    let dtype = v.dtype.ok_or_else(|| LoadError::Signature {
        path: path.display().to_string(),
        message: format!("graph input or output '{}' has no declared element type", v.name),
    })?;
    Ok(TensorSpec {
        name: format!("{}:0", v.name),
        dtype,
        shape: v.shape.as_ref().map(|dims| dims.iter().map(Dim::as_tf_dim).collect()),
        value: id,
    })
}

impl Servable {
    /// Loads an ONNX model file as version `version` of model `name`, with a
    /// `serving_default` signature made of the graph's inputs and outputs.
    ///
    /// # Errors
    /// When the file is not a valid ONNX model, uses an unsupported operator,
    /// or declares no type for an input or output.
    pub fn load_onnx(name: &str, version: i64, path: &Path, registry: &KernelRegistry) -> Result<Servable, LoadError> {
        let graph = crate::onnx::load_file(path)
            .map_err(|source| LoadError::Onnx { path: path.display().to_string(), source })?;
        let mut signature = Signature {
            method_name: PREDICT_METHOD.to_string(),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            opaque_outputs: BTreeMap::new(),
            defaults: BTreeMap::new(),
        };
        for &id in &graph.inputs {
            signature.inputs.insert(graph.values[id].name.clone(), spec_of(&graph, id, path)?);
        }
        for &id in &graph.outputs {
            signature.outputs.insert(graph.values[id].name.clone(), spec_of(&graph, id, path)?);
        }
        let labels = read_labels(path)?;
        if let Some(labels) = &labels {
            check_labels(labels, &signature, path)?;
        }
        let mut graph = graph;
        crate::runtime::optimize(&mut graph, registry);
        let plan = Plan::new(graph, registry)
            .map_err(|source| LoadError::Plan { path: path.display().to_string(), source })?;
        Ok(Servable {
            name: name.to_string(),
            version,
            signatures: BTreeMap::from([(DEFAULT_SIGNATURE.to_string(), signature)]),
            labels,
            plan,
        })
    }

    /// Loads the TensorFlow SavedModel in `dir` (the MetaGraphDef tagged
    /// with exactly `tags`) as version `version` of model `name`, with every
    /// SignatureDef it has.
    ///
    /// # Errors
    /// When a file is missing or corrupt, no MetaGraphDef has the tags, a
    /// signature uses an op or a type the server cannot run, or the graph
    /// fails to plan.
    pub fn load_saved_model(
        name: &str,
        version: i64,
        dir: &Path,
        tags: &[String],
        registry: &KernelRegistry,
    ) -> Result<Servable, LoadError> {
        let imported = crate::savedmodel::import::import(dir, tags)?;
        let pb = dir.join(crate::savedmodel::meta::SAVED_MODEL_PB);
        let path = pb.display().to_string();
        let mut signatures = BTreeMap::new();
        for (key, s) in imported.signatures {
            let spec = |alias: &str, r: crate::savedmodel::import::TensorRef, value: ValueId| {
                let dtype = crate::tensor::proto::dtype_from_wire(r.dtype).map_err(|_| LoadError::Signature {
                    path: path.clone(),
                    message: format!(
                        "signature '{key}' tensor '{alias}' has dtype {}, which the server does not compute with",
                        crate::tensor::proto::wire_dtype_name(r.dtype)
                    ),
                })?;
                Ok::<_, LoadError>(TensorSpec { name: r.name, dtype, shape: r.shape, value })
            };
            let mut signature = Signature {
                method_name: s.method_name,
                inputs: BTreeMap::new(),
                outputs: BTreeMap::new(),
                opaque_outputs: BTreeMap::new(),
                defaults: BTreeMap::new(),
            };
            for (alias, r) in s.inputs {
                let value = r.value.ok_or_else(|| LoadError::Signature {
                    path: path.clone(),
                    message: format!("signature '{key}' input '{alias}' is not a tensor"),
                })?;
                let spec = spec(&alias, r, value)?;
                signature.inputs.insert(alias, spec);
            }
            for (alias, r) in s.outputs {
                match r.value {
                    Some(value) => {
                        let spec = spec(&alias, r, value)?;
                        signature.outputs.insert(alias, spec);
                    }
                    None => {
                        signature.opaque_outputs.insert(alias, r.name);
                    }
                }
            }
            for (alias, tensor) in s.defaults {
                signature.check_input(&alias, tensor.dtype(), tensor.shape()).map_err(|e| LoadError::Signature {
                    path: path.clone(),
                    message: format!("signature '{key}' default for input '{alias}' does not fit it: {e}"),
                })?;
                signature.defaults.insert(alias, tensor);
            }
            signatures.insert(key, signature);
        }
        let labels = read_labels(&pb)?;
        if let (Some(labels), Some(signature)) = (&labels, signatures.get(DEFAULT_SIGNATURE)) {
            check_labels(labels, signature, &pb)?;
        }
        let mut graph = imported.graph;
        crate::runtime::optimize(&mut graph, registry);
        let plan = Plan::new(graph, registry).map_err(|source| LoadError::Plan { path, source })?;
        Ok(Servable { name: name.to_string(), version, signatures, labels, plan })
    }

    /// The signature under `key` (the default one when `key` is empty),
    /// with its resolved key.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` with TensorFlow Serving's text when absent.
    pub fn signature<'a>(&'a self, key: &'a str) -> Result<(&'a str, &'a Signature), ServeError> {
        let key = if key.is_empty() { DEFAULT_SIGNATURE } else { key };
        self.signatures.get(key).map(|s| (key, s)).ok_or_else(|| ServeError::SignatureNotFound(key.to_string()))
    }

    /// The execution plan the version runs (benchmarks read its steps).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs the model on checked inputs and returns the fetched values in
    /// `fetches` order. Synchronous: call it on the compute pool.
    ///
    /// # Errors
    /// When a kernel fails on the given data.
    pub fn run(&self, feeds: Vec<(ValueId, Tensor)>, fetches: &[ValueId]) -> Result<Vec<Tensor>, RunError> {
        self.plan.run(feeds, fetches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Signature {
        let spec = |name: &str, value| TensorSpec {
            name: format!("{name}:0"),
            dtype: DataType::Float,
            shape: Some(vec![-1, 2]),
            value,
        };
        Signature {
            method_name: PREDICT_METHOD.into(),
            inputs: BTreeMap::from([("a".into(), spec("a", 0)), ("b".into(), spec("b", 1))]),
            outputs: BTreeMap::from([("y".into(), spec("y", 2)), ("z".into(), spec("z", 3))]),
            opaque_outputs: BTreeMap::new(),
            defaults: BTreeMap::new(),
        }
    }

    #[test]
    fn alias_errors_use_tensorflow_servings_texts() {
        let s = signature();
        assert!(s.check_aliases(["b", "a"]).is_ok());
        assert_eq!(
            s.check_aliases(["a"]).unwrap_err().to_string(),
            "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. Missing but required: {b}."
        );
        assert_eq!(
            s.check_aliases([]).unwrap_err().to_string(),
            "input size does not match signature: 0!=2 len({}) != len({a,b}). Sent extra: {}. Missing but required: {a,b}."
        );
        let err = s.check_aliases(["a", "c"]).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "Signature input alias: b(feed name: b:0) not found in request and no default value provided."
            ),
            "{err}"
        );
    }

    #[test]
    fn inputs_with_defaults_may_be_left_out() {
        let mut s = signature();
        s.defaults.insert("b".into(), Tensor::from_f32(vec![1, 2], vec![0.0, 0.0]).unwrap());
        assert!(s.check_aliases(["a"]).is_ok());
        assert!(s.check_aliases(["a", "b"]).is_ok());
        let err = s.check_aliases(["b"]).unwrap_err().to_string();
        assert!(
            err.starts_with("Signature input alias: a(feed name: a:0) not found in request and no default value provided. Inputs expected to be in the request {a}, or default input alias set: {b}"),
            "{err}"
        );
        assert_eq!(
            s.check_aliases(["a", "c"]).unwrap_err().to_string(),
            "Inputs contains invalid name. Used request inputs: {a}, request input: c"
        );
        assert!(s.check_aliases(["a", "b", "c"]).unwrap_err().to_string().starts_with("input size does not match"));
    }

    #[test]
    fn dtype_and_shape_errors_name_alias_expected_and_actual() {
        let s = signature();
        assert!(s.check_input("a", DataType::Float, &[5, 2]).is_ok());
        assert_eq!(
            s.check_input("a", DataType::Int32, &[5, 2]).unwrap_err().to_string(),
            "input 'a' expects dtype DT_FLOAT and shape [-1,2] (-1 is any size), but the request has dtype DT_INT32 and shape [5,2]"
        );
        assert!(s.check_input("a", DataType::Float, &[5, 3]).is_err());
        assert!(s.check_input("a", DataType::Float, &[2]).is_err());
    }

    #[test]
    fn predict_method_check_uses_tensorflow_servings_text() {
        let mut s = signature();
        assert!(s.check_predict_method().is_ok());
        s.method_name = "tensorflow/serving/classify".into();
        assert!(s.check_predict_method().is_ok());
        s.method_name = "custom".into();
        let err = s.check_predict_method().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert_eq!(
            err.to_string(),
            "Expected prediction signature method_name to be one of {tensorflow/serving/predict, tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom"
        );
    }

    #[test]
    fn output_filters() {
        let s = signature();
        let all: Vec<&str> = s.select_outputs(&[]).unwrap().iter().map(|(a, _)| *a).collect();
        assert_eq!(all, ["y", "z"]);
        let filter = ["z".to_string(), "y".to_string()];
        let some: Vec<&str> = s.select_outputs(&filter).unwrap().iter().map(|(a, _)| *a).collect();
        assert_eq!(some, ["z", "y"]);
        assert_eq!(
            s.select_outputs(&["q".into()]).unwrap_err().to_string(),
            "output tensor alias not found in signature: q Outputs expected to be in the set {y,z}."
        );
        assert_eq!(
            s.select_outputs(&["y".into(), "y".into()]).unwrap_err().to_string(),
            "duplicate output tensor alias: y"
        );
    }
}
