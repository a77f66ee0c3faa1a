//! DT_STRING tensors: typed `string_val` and packed `tensor_content` over
//! gRPC, text and `{"b64": ...}` over REST (base64 out only for aliases
//! ending in `_bytes`), bytes_list features for Classify's inputs.

use std::time::Duration;

use bytes::Bytes;

use crate::harness::{TestServer, example_model, spec, temp_dir, write_string_model};
use ferroserve::proto::tensorflow::serving::PredictRequest;
use ferroserve::proto::tensorflow::{DataType, TensorProto};
use ferroserve::repository::ModelConfig;
use ferroserve::tensor::proto::{encode_string_content, shape_proto};

fn strings(values: &[&[u8]]) -> TensorProto {
    TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: Some(shape_proto([values.len() as i64])),
        string_val: values.iter().map(|v| v.to_vec()).collect(),
        ..TensorProto::default()
    }
}

async fn start() -> (TestServer, std::path::PathBuf) {
    let dir = temp_dir("strings");
    write_string_model(&dir);
    let server =
        TestServer::start_with(vec![example_model(), ModelConfig::new("echo", dir.clone())], Duration::ZERO).await;
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_tensors_travel_over_grpc_typed_or_packed() {
    let (server, dir) = start().await;
    let mut client = server.prediction().await;
    let values: [&[u8]; 3] = [b"hello", b"", b"\x00\xff binary"];
    let request = |tensor: TensorProto| PredictRequest {
        model_spec: spec("echo"),
        inputs: [("raw_bytes".to_string(), tensor)].into(),
        ..PredictRequest::default()
    };
    let response = client.predict(request(strings(&values))).await.expect("predict strings").into_inner();
    for alias in ["echo", "echo_bytes"] {
        let out = &response.outputs[alias];
        assert_eq!(out.dtype, DataType::DtString as i32);
        assert_eq!(out.string_val, values.map(<[u8]>::to_vec), "{alias}");
    }
    // TensorFlow's packing: varint lengths, then the bytes.
    let mut packed = strings(&[]);
    packed.tensor_shape = Some(shape_proto([3]));
    packed.tensor_content = Bytes::from(encode_string_content(&values.map(<[u8]>::to_vec)));
    let response = client.predict(request(packed)).await.expect("packed strings").into_inner();
    assert_eq!(response.outputs["echo"].string_val, values.map(<[u8]>::to_vec));
    // A short packing is refused with what was expected.
    let mut bad = strings(&[]);
    bad.tensor_shape = Some(shape_proto([2]));
    bad.tensor_content = Bytes::from_static(&[3, b'a']);
    let status = client.predict(request(bad)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "tensor parsing error: raw_bytes (tensor_content of DT_STRING [2] is not 2 varint lengths followed by that many bytes)"
    );
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_reads_b64_and_writes_it_for_bytes_aliases() {
    let (server, dir) = start().await;
    // Row format, one input: a b64 object is a value, mixed with text.
    let (status, answer) = echo(&server, r#"{"instances":[{"b64":"AP8="},"hé"]}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        serde_json::json!({"predictions":[
            {"echo":"\u{0}\u{fffd}","echo_bytes":{"b64":"AP8="}},
            {"echo":"hé","echo_bytes":{"b64":"aMOp"}}
        ]})
    );
    // Columnar, URL-safe alphabet without padding accepted.
    let (status, answer) = echo(&server, r#"{"inputs":{"raw_bytes":[{"b64":"_-8"}]}}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"]["echo_bytes"], serde_json::json!([{"b64":"/+8="}]));

    let rows = [
        (r#"{"instances":[{"b64":"%%%"}]}"#, "Unable to base64 decode"),
        (r#"{"instances":[{"b64":7}]}"#, "JSON Value: 7 not formatted correctly for base64 data"),
        (r#"{"instances":[5]}"#, "JSON Value: 5 Type: Number is not of expected type: string"),
    ];
    for (body, message) in rows {
        let (status, answer) = echo(&server, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.ends_with(message), "{body}: {error}");
    }
    // b64 for a float input is a type error, as in TensorFlow Serving.
    let (status, _, text) = server.http("POST", "/v1/models/mnist:predict", br#"{"instances":[{"b64":"AAAA"}]}"#).await;
    assert_eq!(status, 400);
    assert!(text.contains(r#"Type: Object is not of expected type: float"#), "{text}");
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A REST Predict on the echo model: the HTTP status and the JSON answer.
async fn echo(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let (status, _, text) = server.http("POST", "/v1/models/echo:predict", body.as_bytes()).await;
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_shows_string_signatures() {
    let (server, dir) = start().await;
    let (status, _, text) = server.http("GET", "/v1/models/echo/metadata", b"").await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inputs = &answer["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"];
    assert_eq!(inputs["raw_bytes"]["dtype"], "DT_STRING");
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
