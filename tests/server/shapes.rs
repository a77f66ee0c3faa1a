//! Load-time shape inference seen from outside: a request whose shape the
//! graph cannot take is refused before any kernel runs, naming the input,
//! the dim and the node that fixes it, on gRPC and REST alike; a model whose
//! graph can never run fails to load, naming the node.

use std::time::Duration;

use crate::harness::{TestServer, float_tensor, root, spec, temp_dir, write_shape_model};
use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::tensorflow::serving::PredictRequest;
use ferroserve::repository::ModelConfig;
use ferroserve::servable::Servable;

fn request(features: (&[i64], usize), extra: (&[i64], usize)) -> PredictRequest {
    PredictRequest {
        model_spec: spec("shapes"),
        inputs: [
            ("features".to_string(), float_tensor(features.0, vec![1.0; features.1])),
            ("extra".to_string(), float_tensor(extra.0, vec![2.0; extra.1])),
        ]
        .into(),
        ..PredictRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_graph_cannot_take_are_refused_before_running() {
    let dir = temp_dir("shapes");
    write_shape_model(&dir, -1);
    let server = TestServer::start_with(vec![ModelConfig::new("shapes", dir.clone())], Duration::ZERO).await;
    let mut client = server.prediction().await;

    let ok = client.predict(request((&[2, 4], 8), (&[2, 2], 4))).await.expect("shapes that fit").into_inner();
    let joined = &ok.outputs["joined"];
    assert_eq!(joined.float_val, [18.0, 22.0, 26.0, 2.0, 2.0, 18.0, 22.0, 26.0, 2.0, 2.0]);

    let cases = [
        (
            request((&[2, 5], 10), (&[2, 2], 4)),
            "input 'features' has shape [2,5], but dim 1 must be 4 (node 'fc' (MatMul) needs it)",
        ),
        (
            request((&[2, 4], 8), (&[3, 2], 6)),
            "input 'extra' has shape [3,2], but its dim 0 must equal dim 0 of input 'features', which is 2",
        ),
    ];
    for (bad, text) in cases {
        let status = client.predict(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message());
        assert_eq!(status.message(), text);
    }

    let body = br#"{"inputs": {"features": [[1, 2, 3, 4, 5]], "extra": [[1, 2]]}}"#;
    let (code, _, text) = server.http("POST", "/v1/models/shapes:predict", body).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("input 'features' has shape [1,5], but dim 1 must be 4"), "{text}");
    let body = br#"{"inputs": {"features": [[1, 2, 3, 4]], "extra": [[1, 2]]}}"#;
    let (code, _, text) = server.http("POST", "/v1/models/shapes:predict", body).await;
    assert_eq!(code, 200, "{text}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_graph_that_can_never_run_fails_to_load_naming_the_node() {
    let dir = temp_dir("shapes-contradiction");
    write_shape_model(&dir, 5);
    let err = Servable::load_onnx("shapes", 1, &dir.join("1/model.onnx"), &KernelRegistry::with_all_ops())
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("node 'fc' (MatMul): the inner dims of A and B: needs 5 and 4 to be equal"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
    // The bundled model's declared shapes agree with its graph.
    let model = root().join("examples/models/mnist/1/model.onnx");
    Servable::load_onnx("mnist", 1, &model, &KernelRegistry::with_all_ops()).expect("the example model loads");
}
