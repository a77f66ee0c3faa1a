//! `tensorflow.serving.PredictionService`: Predict, Classify, Regress,
//! MultiInference and GetModelMetadata. Classify, Regress and
//! MultiInference map examples onto the model's inputs as
//! [`crate::inference`] describes.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::ServingState;
use crate::error::{ServeError, code_name};
use crate::graph::ValueId;
use crate::inference::{Method, PreparedInference, TaskResult};
use crate::metrics::Entrypoint;
use crate::proto::tensorflow::serving::prediction_service_server::PredictionService;
use crate::proto::tensorflow::serving::{
    ClassificationRequest, ClassificationResponse, GetModelMetadataRequest, GetModelMetadataResponse, InferenceResult,
    ModelSpec, MultiInferenceRequest, MultiInferenceResponse, PredictRequest, PredictResponse, RegressionRequest,
    RegressionResponse, SignatureDefMap, inference_result, model_spec,
};
use crate::proto::tensorflow::{SignatureDef, TensorInfo, TensorProto, tensor_info};
use crate::repository::VersionChoice;
use crate::servable::{Servable, Signature, TensorSpec};
use crate::tensor::proto::{Header, decode, dtype_to_wire, header, shape_proto, to_proto, to_proto_content};

/// The only metadata field TensorFlow Serving supports.
const SIGNATURE_DEF_FIELD: &str = "signature_def";

/// The type URL of the Any that carries the signatures.
pub const SIGNATURE_DEF_MAP_TYPE_URL: &str = "type.googleapis.com/tensorflow.serving.SignatureDefMap";

/// Serves `tensorflow.serving.PredictionService`.
#[derive(Debug, Clone)]
pub struct PredictionApi {
    state: Arc<ServingState>,
}

/// Checks a request's ModelSpec and finds the servable it names.
///
/// # Errors
/// For a missing spec, an empty name, or a model, version or label that
/// is not served.
pub(super) fn resolve(state: &ServingState, spec: Option<&ModelSpec>) -> Result<Arc<Servable>, ServeError> {
    let spec = spec.ok_or(ServeError::MissingModelSpec)?;
    if spec.name.is_empty() {
        return Err(ServeError::EmptyModelName);
    }
    let choice = match &spec.version_choice {
        None => VersionChoice::Latest,
        Some(model_spec::VersionChoice::Version(v)) => VersionChoice::Specific(*v),
        Some(model_spec::VersionChoice::VersionLabel(l)) => VersionChoice::Label(l.clone()),
    };
    state.repository.resolve(&spec.name, &choice)
}

fn tensor_info(spec: &TensorSpec) -> TensorInfo {
    let tensor_shape = match &spec.shape {
        Some(dims) => shape_proto(dims.iter().copied()),
        None => crate::proto::tensorflow::TensorShapeProto { dim: Vec::new(), unknown_rank: true },
    };
    TensorInfo {
        dtype: dtype_to_wire(spec.dtype) as i32,
        tensor_shape: Some(tensor_shape),
        encoding: Some(tensor_info::Encoding::Name(spec.name.clone())),
    }
}

/// A signature as TensorFlow's SignatureDef.
pub fn signature_def(signature: &Signature) -> SignatureDef {
    SignatureDef {
        inputs: signature.inputs.iter().map(|(a, s)| (a.clone(), tensor_info(s))).collect(),
        outputs: signature
            .outputs
            .iter()
            .map(|(a, s)| (a.clone(), tensor_info(s)))
            .chain(signature.opaque_outputs.iter().map(|(a, name)| {
                let info = TensorInfo {
                    dtype: 0,
                    tensor_shape: Some(crate::proto::tensorflow::TensorShapeProto {
                        dim: Vec::new(),
                        unknown_rank: true,
                    }),
                    encoding: Some(tensor_info::Encoding::Name(name.clone())),
                };
                (a.clone(), info)
            }))
            .collect(),
        method_name: signature.method_name.clone(),
        defaults: signature.defaults.iter().map(|(a, t)| (a.clone(), to_proto(t.clone()))).collect(),
    }
}

impl PredictionApi {
    /// The service over shared serving state.
    pub fn new(state: Arc<ServingState>) -> PredictionApi {
        PredictionApi { state }
    }

    async fn predict(
        &self,
        mut request: PredictRequest,
        held: Option<crate::limits::RequestBytes>,
    ) -> Result<PredictResponse, ServeError> {
        let _in_flight = self.state.enter();
        let spec = request.model_spec.take();
        let servable = resolve(&self.state, spec.as_ref())?;
        let signature_name = spec.map(|s| s.signature_name).unwrap_or_default();
        if self.state.method_name_check {
            servable.signature(&signature_name)?.1.check_predict_method()?;
        }
        let prepared = PreparedPredict::new(servable, &signature_name, request)?;
        if let Some(held) = held {
            held.grow(prepared.decoded_bytes())?;
        }
        let as_content = self.state.tensor_content_outputs;
        let metrics = self.state.repository.metrics().clone();
        // Decoding, the model and encoding all run on the compute pool.
        self.state
            .compute
            .run(move || {
                let started = std::time::Instant::now();
                let model = prepared.servable.name.clone();
                let response = prepared.execute(as_content);
                metrics.record_runtime(&model, "Predict", started.elapsed());
                response
            })
            .await
            .map_err(ServeError::from)?
    }

    async fn classify(&self, request: ClassificationRequest) -> Result<ClassificationResponse, ServeError> {
        let _in_flight = self.state.enter();
        let servable = resolve(&self.state, request.model_spec.as_ref())?;
        let signature_name = request.model_spec.map(|s| s.signature_name).unwrap_or_default();
        let prepared = PreparedInference::single(servable, Method::Classify, &signature_name, request.input)?
            .checking_methods(self.state.method_name_check)?;
        match run_inference(&self.state, prepared, "Classify").await?.pop() {
            Some((spec, TaskResult::Classification(result))) => {
                Ok(ClassificationResponse { model_spec: Some(spec), result: Some(result) })
            }
            _ => Err(ServeError::Internal("Classify produced no classification".into())),
        }
    }

    async fn regress(&self, request: RegressionRequest) -> Result<RegressionResponse, ServeError> {
        let _in_flight = self.state.enter();
        let servable = resolve(&self.state, request.model_spec.as_ref())?;
        let signature_name = request.model_spec.map(|s| s.signature_name).unwrap_or_default();
        let prepared = PreparedInference::single(servable, Method::Regress, &signature_name, request.input)?
            .checking_methods(self.state.method_name_check)?;
        match run_inference(&self.state, prepared, "Regress").await?.pop() {
            Some((spec, TaskResult::Regression(result))) => {
                Ok(RegressionResponse { model_spec: Some(spec), result: Some(result) })
            }
            _ => Err(ServeError::Internal("Regress produced no regression".into())),
        }
    }

    async fn multi_inference(&self, request: MultiInferenceRequest) -> Result<MultiInferenceResponse, ServeError> {
        let _in_flight = self.state.enter();
        if request.tasks.iter().any(|t| t.model_spec.as_ref().is_none_or(|s| s.name.is_empty())) {
            return Err(ServeError::InvalidArgument("Found ModelSpec with an empty model name.".into()));
        }
        let Some(first) = request.tasks.first() else {
            return Err(ServeError::InvalidArgument(
                "MultiInferenceRequest has no tasks; expected at least one task with method_name tensorflow/serving/classify or tensorflow/serving/regress".into(),
            ));
        };
        let servable = resolve(&self.state, first.model_spec.as_ref())?;
        let prepared = PreparedInference::multi(servable, &request.tasks, request.input)?
            .checking_methods(self.state.method_name_check)?;
        let results = run_inference(&self.state, prepared, "MultiInference").await?;
        Ok(MultiInferenceResponse {
            results: results
                .into_iter()
                .map(|(spec, result)| InferenceResult {
                    model_spec: Some(spec),
                    result: Some(match result {
                        TaskResult::Classification(c) => inference_result::Result::ClassificationResult(c),
                        TaskResult::Regression(r) => inference_result::Result::RegressionResult(r),
                    }),
                })
                .collect(),
        })
    }

    fn metadata(&self, request: GetModelMetadataRequest) -> Result<GetModelMetadataResponse, ServeError> {
        let servable = resolve(&self.state, request.model_spec.as_ref())?;
        if request.metadata_field.is_empty() {
            return Err(ServeError::NoMetadataField);
        }
        if let Some(other) = request.metadata_field.iter().find(|f| *f != SIGNATURE_DEF_FIELD) {
            return Err(ServeError::UnsupportedMetadataField(other.clone()));
        }
        let map = SignatureDefMap {
            signature_def: servable.signatures.iter().map(|(k, s)| (k.clone(), signature_def(s))).collect(),
        };
        let any = prost_types::Any {
            type_url: SIGNATURE_DEF_MAP_TYPE_URL.to_string(),
            value: prost::Message::encode_to_vec(&map),
        };
        Ok(GetModelMetadataResponse {
            model_spec: Some(ModelSpec {
                name: servable.name.clone(),
                signature_name: String::new(),
                version_choice: Some(model_spec::VersionChoice::Version(servable.version)),
            }),
            metadata: HashMap::from([(SIGNATURE_DEF_FIELD.to_string(), any)]),
        })
    }
}

/// A Predict whose inputs have been checked against the signature (aliases,
/// dtypes, shapes, sizes) but not decoded yet: the cheap half of a Predict,
/// done where the request arrives. [`PreparedPredict::execute`] is the
/// heavy half, run on the compute pool. Warmup replays requests through
/// the same two steps.
pub struct PreparedPredict {
    servable: Arc<Servable>,
    signature_key: String,
    inputs: Vec<(String, ValueId, TensorProto, Header)>,
    /// The signature's defaults for the inputs the request left out.
    defaults: Vec<(ValueId, crate::tensor::Tensor)>,
    aliases: Vec<String>,
    fetches: Vec<ValueId>,
}

impl PreparedPredict {
    /// Checks `request` (whose model_spec has been resolved to `servable`)
    /// against the signature `signature_name` (default when empty).
    ///
    /// # Errors
    /// With TensorFlow Serving's messages for an unknown signature, missing
    /// or extra inputs, a bad output filter; with ours for a malformed
    /// tensor or a dtype or shape that does not fit the signature.
    pub fn new(servable: Arc<Servable>, signature_name: &str, mut request: PredictRequest) -> Result<Self, ServeError> {
        let (signature_key, signature) = servable.signature(signature_name)?;
        signature.check_aliases(request.inputs.keys().map(String::as_str))?;
        let mut inputs = Vec::with_capacity(signature.inputs.len());
        let mut defaults = Vec::new();
        for (alias, spec) in &signature.inputs {
            let Some(proto) = request.inputs.remove(alias) else {
                if let Some(t) = signature.defaults.get(alias) {
                    defaults.push((spec.value, t.clone()));
                }
                continue;
            };
            let head = header(&proto)
                .map_err(|e| ServeError::InvalidArgument(format!("tensor parsing error: {alias} ({e})")))?;
            let spec = signature.check_input(alias, head.dtype, &head.shape)?;
            inputs.push((alias.clone(), spec.value, proto, head));
        }
        let outputs = signature.select_outputs(&request.output_filter)?;
        let aliases = outputs.iter().map(|(a, _)| a.to_string()).collect();
        let fetches = outputs.iter().map(|(_, s)| s.value).collect();
        let signature_key = signature_key.to_string();
        Ok(PreparedPredict { servable, signature_key, inputs, defaults, aliases, fetches })
    }

    /// The bytes the decoded inputs will take: a request can be far smaller
    /// (a one-value `float_val` fills its whole shape).
    pub fn decoded_bytes(&self) -> usize {
        self.inputs
            .iter()
            .map(|(_, _, _, head)| head.shape.iter().product::<usize>().saturating_mul(head.dtype.size_of()))
            .fold(0, usize::saturating_add)
    }

    /// Decodes the inputs, runs the model and encodes the answer, in the
    /// typed fields or, with `as_content`, in `tensor_content`.
    /// Synchronous and CPU-bound: call it on the compute pool.
    ///
    /// # Errors
    /// When an input's elements do not match its shape, or the model fails
    /// on the data.
    pub fn execute(self, as_content: bool) -> Result<PredictResponse, ServeError> {
        let encode = if as_content { to_proto_content } else { to_proto };
        let mut feeds = self.defaults;
        for (alias, value, proto, head) in self.inputs {
            let tensor = decode(&proto, head)
                .map_err(|e| ServeError::InvalidArgument(format!("tensor parsing error: {alias} ({e})")))?;
            feeds.push((value, tensor));
        }
        let tensors = self.servable.run(feeds, &self.fetches)?;
        Ok(PredictResponse {
            model_spec: Some(ModelSpec {
                name: self.servable.name.clone(),
                signature_name: self.signature_key,
                version_choice: Some(model_spec::VersionChoice::Version(self.servable.version)),
            }),
            outputs: self.aliases.into_iter().zip(tensors.into_iter().map(encode)).collect(),
        })
    }
}

/// Runs prepared inference tasks on the compute pool and records their
/// runtime under `api`. REST shares it.
pub(crate) async fn run_inference(
    state: &ServingState,
    prepared: PreparedInference,
    api: &'static str,
) -> Result<Vec<(ModelSpec, TaskResult)>, ServeError> {
    let metrics = state.repository.metrics().clone();
    state
        .compute
        .run(move || {
            let started = std::time::Instant::now();
            let model = prepared.servable().name.clone();
            let results = prepared.execute();
            metrics.record_runtime(&model, api, started.elapsed());
            results
        })
        .await
        .map_err(ServeError::from)?
}

/// The version and example count of an answer, for the metrics.
fn answered(spec: Option<&ModelSpec>, examples: usize) -> (i64, usize) {
    let version = match spec.and_then(|s| s.version_choice.as_ref()) {
        Some(model_spec::VersionChoice::Version(v)) => *v,
        _ => 0,
    };
    (version, examples)
}

impl PredictionApi {
    /// Records one gRPC call in the metrics and turns its result into tonic's.
    fn finish<T>(
        &self,
        model: &str,
        api: &str,
        started: std::time::Instant,
        result: Result<T, ServeError>,
        answer: impl Fn(&T) -> (i64, usize),
    ) -> Result<Response<T>, Status> {
        let status = result.as_ref().map_or_else(|e| code_name(e.code()), |_| "OK");
        let answered = result.as_ref().ok().map(answer);
        self.state.repository.metrics().record_request(
            model,
            api,
            Entrypoint::Grpc,
            status,
            started.elapsed(),
            answered,
        );
        result.map(Response::new).map_err(Status::from)
    }
}

#[tonic::async_trait]
impl PredictionService for PredictionApi {
    async fn classify(
        &self,
        request: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        let request = request.into_inner();
        let model = request.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let started = std::time::Instant::now();
        let result = self.classify(request).await;
        self.finish(&model, "Classify", started, result, |r| {
            answered(r.model_spec.as_ref(), r.result.as_ref().map_or(0, |c| c.classifications.len()))
        })
    }

    async fn regress(&self, request: Request<RegressionRequest>) -> Result<Response<RegressionResponse>, Status> {
        let request = request.into_inner();
        let model = request.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let started = std::time::Instant::now();
        let result = self.regress(request).await;
        self.finish(&model, "Regress", started, result, |r| {
            answered(r.model_spec.as_ref(), r.result.as_ref().map_or(0, |c| c.regressions.len()))
        })
    }

    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let held = request.extensions().get::<crate::limits::RequestBytes>().cloned();
        let request = request.into_inner();
        let model = request.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let started = std::time::Instant::now();
        let result = self.predict(request, held).await;
        self.finish(&model, "Predict", started, result, |r| {
            let examples = r
                .outputs
                .values()
                .next()
                .and_then(|t| t.tensor_shape.as_ref()?.dim.first().map(|d| d.size.max(0) as usize))
                .unwrap_or(1);
            answered(r.model_spec.as_ref(), examples)
        })
    }

    async fn multi_inference(
        &self,
        request: Request<MultiInferenceRequest>,
    ) -> Result<Response<MultiInferenceResponse>, Status> {
        let request = request.into_inner();
        let model =
            request.tasks.first().and_then(|t| t.model_spec.as_ref()).map(|s| s.name.clone()).unwrap_or_default();
        let started = std::time::Instant::now();
        let result = self.multi_inference(request).await;
        self.finish(&model, "MultiInference", started, result, |r| {
            let examples = r.results.first().map_or(0, |first| match &first.result {
                Some(inference_result::Result::ClassificationResult(c)) => c.classifications.len(),
                Some(inference_result::Result::RegressionResult(c)) => c.regressions.len(),
                None => 0,
            });
            answered(r.results.first().and_then(|f| f.model_spec.as_ref()), examples)
        })
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        self.metadata(request.into_inner()).map(Response::new).map_err(Status::from)
    }
}
