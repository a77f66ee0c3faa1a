//! Warmup: the requests in `<version>/assets.extra/tf_serving_warmup_requests`
//! (a TFRecord file of `tensorflow.serving.PredictionLog`) are replayed
//! against a freshly loaded version before it becomes AVAILABLE, through the
//! same two steps as a Predict, Classify, Regress or MultiInference call. The repository calls this through its
//! [`VersionWarmup`] hook, so it never depends on the services.

use std::path::Path;
use std::sync::Arc;

use prost::Message;

use super::prediction::PreparedPredict;
use crate::error::{ServeError, code_name};
use crate::inference::{Method, PreparedInference};
use crate::proto::tensorflow::serving::{ClassifyLog, Input, ModelSpec, PredictionLog, RegressLog, prediction_log};
use crate::repository::VersionWarmup;
use crate::servable::Servable;

/// Where warmup requests live, relative to the version directory.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// TensorFlow Serving's limit on warmup records.
pub const MAX_WARMUP_RECORDS: usize = 1000;

/// Replays warmup records.
#[derive(Debug, Clone)]
pub struct Warmup {
    /// Times each record is replayed (at least once).
    pub iterations: u32,
}

fn replay_error(path: &Path, index: usize, e: ServeError) -> String {
    format!("warmup request {index} of {} failed: {}: {e}", path.display(), code_name(e.code()))
}

impl Warmup {
    /// Replays one Classify or Regress `iterations` times; the count run.
    fn replay_single(
        &self,
        servable: &Arc<Servable>,
        (method, spec, input): (Method, Option<ModelSpec>, Option<Input>),
    ) -> Result<usize, ServeError> {
        let signature = spec.map(|s| s.signature_name).unwrap_or_default();
        let iterations = self.iterations.max(1);
        for _ in 0..iterations {
            PreparedInference::single(servable.clone(), method, &signature, input.clone())?.execute()?;
        }
        Ok(iterations as usize)
    }
}

impl VersionWarmup for Warmup {
    fn warm_up(&self, servable: &Arc<Servable>, version_dir: &Path) -> Result<usize, String> {
        let path = version_dir.join(WARMUP_FILE);
        if !path.is_file() {
            return Ok(0);
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let records = crate::tfrecord::read_records(&bytes, MAX_WARMUP_RECORDS)
            .map_err(|e| format!("INVALID_ARGUMENT: warmup file {}: {e}", path.display()))?;
        let mut replayed = 0;
        for (index, record) in records.iter().enumerate() {
            let log = PredictionLog::decode(*record)
                .map_err(|e| format!("warmup record {index} of {} is not a PredictionLog: {e}", path.display()))?;
            match log.log_type {
                Some(prediction_log::LogType::PredictLog(predict)) => {
                    let request = predict.request.unwrap_or_default();
                    // The model name and version inside logged requests are
                    // ignored: the record warms this version.
                    let signature = request.model_spec.as_ref().map(|s| s.signature_name.clone()).unwrap_or_default();
                    for _ in 0..self.iterations.max(1) {
                        PreparedPredict::new(servable.clone(), &signature, request.clone())
                            .and_then(|p| p.execute(false))
                            .map_err(|e| replay_error(&path, index, e))?;
                        replayed += 1;
                    }
                }
                Some(prediction_log::LogType::ClassifyLog(ClassifyLog { request, .. })) => {
                    let request = request.unwrap_or_default();
                    let task = (Method::Classify, request.model_spec, request.input);
                    replayed += self.replay_single(servable, task).map_err(|e| replay_error(&path, index, e))?;
                }
                Some(prediction_log::LogType::RegressLog(RegressLog { request, .. })) => {
                    let request = request.unwrap_or_default();
                    let task = (Method::Regress, request.model_spec, request.input);
                    replayed += self.replay_single(servable, task).map_err(|e| replay_error(&path, index, e))?;
                }
                Some(prediction_log::LogType::MultiInferenceLog(log)) => {
                    let mut request = log.request.unwrap_or_default();
                    for task in &mut request.tasks {
                        task.model_spec.get_or_insert_with(Default::default).name = servable.name.clone();
                    }
                    for _ in 0..self.iterations.max(1) {
                        PreparedInference::multi(servable.clone(), &request.tasks, request.input.clone())
                            .and_then(PreparedInference::execute)
                            .map_err(|e| replay_error(&path, index, e))?;
                        replayed += 1;
                    }
                }
                Some(prediction_log::LogType::PredictStreamedLog(_) | prediction_log::LogType::SessionRunLog(_)) => {
                    return Err(format!(
                        "UNIMPLEMENTED: warmup record {index} of {}: only predict, classify, regress and multi_inference logs can be replayed",
                        path.display()
                    ));
                }
                None => return Err(format!("warmup record {index} of {} holds no request", path.display())),
            }
        }
        Ok(replayed)
    }
}
