//! Warmup: records in assets.extra/tf_serving_warmup_requests are replayed
//! before a version becomes available; a bad record fails the load with a
//! message, and the version being served keeps serving.

use std::path::Path;
use std::sync::Arc;

use prost::Message;

use crate::harness::{cases, predict_request, root, temp_dir};
use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::tensorflow::serving::{
    ClassificationRequest, ClassifyLog, ExampleList, InferenceTask, Input, MultiInferenceLog, MultiInferenceRequest,
    PredictLog, PredictionLog, RegressLog, RegressionRequest, SessionRunLog, input, prediction_log::LogType,
};
use ferroserve::proto::tensorflow::{Example, Feature, Features, FloatList, feature};
use ferroserve::repository::{ModelConfig, ModelRepository, RepositoryOptions, VersionChoice, VersionState};
use ferroserve::service::{MAX_WARMUP_RECORDS, WARMUP_FILE, Warmup};
use ferroserve::tfrecord::frame_record;

fn predict_record(alias: &str) -> Vec<u8> {
    let mut request = predict_request(&cases()[0]);
    let tensor = request.inputs.remove("image").unwrap();
    request.inputs.insert(alias.to_string(), tensor);
    // The logged model name is ignored.
    request.model_spec.as_mut().unwrap().name = "logged-elsewhere".into();
    let log = PredictionLog {
        log_metadata: None,
        log_type: Some(LogType::PredictLog(PredictLog { request: Some(request), response: None })),
    };
    frame_record(&log.encode_to_vec())
}

/// One digit as a tf.Example whose `image` feature feeds the model's input.
fn digit_input() -> Option<Input> {
    let image = Feature { kind: Some(feature::Kind::FloatList(FloatList { value: cases()[0].input.clone() })) };
    let example = Example { features: Some(Features { feature: [("image".to_string(), image)].into() }) };
    Some(Input { kind: Some(input::Kind::ExampleList(ExampleList { examples: vec![example] })) })
}

fn record(log_type: LogType) -> Vec<u8> {
    frame_record(&PredictionLog { log_metadata: None, log_type: Some(log_type) }.encode_to_vec())
}

fn classify_record() -> Vec<u8> {
    let request = ClassificationRequest { model_spec: crate::harness::spec("logged"), input: digit_input() };
    record(LogType::ClassifyLog(ClassifyLog { request: Some(request), response: None }))
}

fn multi_inference_record() -> Vec<u8> {
    let task =
        InferenceTask { model_spec: crate::harness::spec("logged"), method_name: "tensorflow/serving/classify".into() };
    let request = MultiInferenceRequest { tasks: vec![task], input: digit_input() };
    record(LogType::MultiInferenceLog(MultiInferenceLog { request: Some(request), response: None }))
}

fn add_version(base: &Path, version: i64, warmup: Option<Vec<u8>>) {
    let tmp = base.join(format!("tmp-{version}"));
    std::fs::create_dir_all(tmp.join("assets.extra")).unwrap();
    std::fs::copy(root().join("examples/models/mnist/1/model.onnx"), tmp.join("model.onnx")).unwrap();
    if let Some(bytes) = warmup {
        std::fs::write(tmp.join(WARMUP_FILE), bytes).unwrap();
    }
    std::fs::rename(&tmp, base.join(version.to_string())).unwrap();
}

fn repository(base: &Path, iterations: u32) -> ModelRepository {
    let repo = ModelRepository::new(KernelRegistry::with_all_ops(), RepositoryOptions::default())
        .with_warmup(Arc::new(Warmup { iterations }));
    repo.apply_config(vec![ModelConfig::new("m", base)]).expect("version 1 loads");
    repo
}

#[test]
fn warmup_records_run_before_the_version_is_available() {
    let base = temp_dir("warmup-ok");
    add_version(&base, 1, Some([predict_record("image"), predict_record("image")].concat()));
    let servable = repository(&base, 1).resolve("m", &VersionChoice::Latest).unwrap();
    let ran = ferroserve::repository::VersionWarmup::warm_up(&Warmup { iterations: 3 }, &servable, &base.join("1"));
    assert_eq!(ran, Ok(6), "two records, three iterations each");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn classify_and_multi_inference_records_are_replayed_too() {
    let base = temp_dir("warmup-classify");
    add_version(&base, 1, Some([classify_record(), multi_inference_record(), predict_record("image")].concat()));
    let servable = repository(&base, 1).resolve("m", &VersionChoice::Latest).unwrap();
    let ran = ferroserve::repository::VersionWarmup::warm_up(&Warmup { iterations: 2 }, &servable, &base.join("1"));
    assert_eq!(ran, Ok(6), "three records, two iterations each");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn bad_warmup_files_fail_the_new_version_and_the_old_one_keeps_serving() {
    let base = temp_dir("warmup-bad");
    add_version(&base, 1, None);
    let repo = repository(&base, 1);
    let mut corrupt = predict_record("image");
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let session_run = frame_record(
        &PredictionLog { log_metadata: None, log_type: Some(LogType::SessionRunLog(SessionRunLog::default())) }
            .encode_to_vec(),
    );
    let too_many: Vec<u8> = (0..=MAX_WARMUP_RECORDS).flat_map(|_| frame_record(b"")).collect();
    // The example model's only output is [batch, 10]: no regression.
    let regress = record(LogType::RegressLog(RegressLog {
        request: Some(RegressionRequest { model_spec: None, input: digit_input() }),
        response: None,
    }));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (predict_record("img"), "warmup request 0 of"),
        (regress, "Regress needs output 'probabilities'"),
        (corrupt, "CRC32C mismatch"),
        (session_run, "UNIMPLEMENTED"),
        (too_many, "more than 1000 records"),
        (b"\x01\x02".to_vec(), "truncated"),
    ];
    for (version, (bytes, needle)) in (2..).zip(cases) {
        add_version(&base, version, Some(bytes));
        repo.poll();
        let status = repo.status("m", Some(version)).unwrap().remove(0);
        assert_eq!(status.state, VersionState::End, "version {version}");
        let error = status.error.unwrap_or_default();
        assert!(error.contains(needle) && error.contains(WARMUP_FILE), "version {version}: {error}");
        assert_eq!(repo.resolve("m", &VersionChoice::Latest).unwrap().version, 1, "version 1 keeps serving");
    }
    if let Some(first) = repo.status("m", Some(2)).unwrap().first() {
        let error = first.error.clone().unwrap_or_default();
        assert!(error.contains("INVALID_ARGUMENT") && error.contains("image"), "{error}");
    }
    std::fs::remove_dir_all(&base).unwrap();
}
