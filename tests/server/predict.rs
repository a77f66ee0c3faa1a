//! Predict on the example model gives onnxruntime's answers, whatever the
//! encoding of the request.

use bytes::Bytes;

use crate::harness::{TestServer, argmax, assert_close, cases, float_tensor, predict_request, spec};
use ferroserve::proto::tensorflow::serving::{ModelSpec, PredictRequest, model_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_digit_gets_onnxruntimes_probabilities_and_its_class() {
    let server = TestServer::start().await;
    let mut client = server.prediction().await;
    let mut digits = 0;
    for case in cases() {
        let response = client.predict(predict_request(&case)).await.expect("predict").into_inner();
        let out = &response.outputs["probabilities"];
        let dims: Vec<i64> = out.tensor_shape.as_ref().unwrap().dim.iter().map(|d| d.size).collect();
        assert_eq!(dims, vec![case.shape[0], 10]);
        assert!(out.tensor_content.is_empty(), "answers use the typed fields, as TF Serving");
        assert_close(&out.float_val, &case.probabilities);
        if let Some(class) = case.class {
            assert_eq!(argmax(&out.float_val), class as usize);
            digits += 1;
        }
        let spec = response.model_spec.unwrap();
        assert_eq!(spec.name, "mnist");
        assert_eq!(spec.signature_name, "serving_default");
        assert_eq!(spec.version_choice, Some(model_spec::VersionChoice::Version(1)));
    }
    assert_eq!(digits, 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensor_content_version_signature_and_filter_are_honoured() {
    let server = TestServer::start().await;
    let mut client = server.prediction().await;
    let batch = cases().into_iter().find(|c| c.class.is_none()).expect("a batch case");
    let mut tensor = float_tensor(&batch.shape, vec![]);
    tensor.tensor_content = Bytes::from(batch.input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let request = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "mnist".into(),
            signature_name: "serving_default".into(),
            version_choice: Some(model_spec::VersionChoice::Version(1)),
        }),
        inputs: [("image".to_string(), tensor)].into(),
        output_filter: vec!["probabilities".into()],
        ..PredictRequest::default()
    };
    let response = client.predict(request).await.expect("predict").into_inner();
    assert_close(&response.outputs["probabilities"].float_val, &batch.probabilities);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_answer() {
    let server = TestServer::start().await;
    let cases = std::sync::Arc::new(cases());
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut client = server.prediction().await;
        let cases = cases.clone();
        tasks.push(tokio::spawn(async move {
            let case = &cases[i % cases.len()];
            let response = client.predict(predict_request(case)).await.expect("predict").into_inner();
            assert_close(&response.outputs["probabilities"].float_val, &case.probabilities);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A request with a name only still works after the burst.
    let mut client = server.prediction().await;
    let mut request = predict_request(&cases[0]);
    request.model_spec = spec("mnist");
    client.predict(request).await.expect("predict after the burst");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_as_tensor_content_packs_the_outputs() {
    let state = TestServer::example_state().with_tensor_content_outputs(true);
    let server = TestServer::start_state(state, std::time::Duration::ZERO).await;
    let case = &cases()[2];
    let response = server.prediction().await.predict(predict_request(case)).await.expect("predict").into_inner();
    let out = &response.outputs["probabilities"];
    assert!(out.float_val.is_empty());
    let values: Vec<f32> =
        out.tensor_content.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_close(&values, &case.probabilities);
    server.stop().await;
}
