//! The REST API: TensorFlow Serving's URLs, JSON and error envelope, on the
//! same models and prediction path as gRPC.

use crate::harness::{TestServer, argmax, assert_close, cases};

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// A digit as the nested [28][28][1] list a REST client sends.
fn image_json(input: &[f32]) -> String {
    let rows: Vec<String> = input
        .chunks(28)
        .map(|row| format!("[{}]", row.iter().map(|v| format!("[{v}]")).collect::<Vec<_>>().join(",")))
        .collect();
    format!("[{}]", rows.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metadata_json_are_tensorflow_servings() {
    let server = TestServer::start().await;
    let (code, content_type, body) = server.http("GET", "/v1/models/mnist", b"").await;
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    assert_eq!(
        body,
        r#"{"model_version_status":[{"version":"1","state":"AVAILABLE","status":{"error_code":"OK","error_message":""}}]}"#
    );
    let (code, _, labelled) = server.http("GET", "/v1/models/mnist/labels/anything", b"").await;
    assert_eq!((code, labelled), (200, body), "a label in the status URL is ignored");

    let (code, _, body) = server.http("GET", "/v1/models/mnist/versions/1/metadata", b"").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model_spec"], serde_json::json!({"name": "mnist", "signature_name": "", "version": "1"}));
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    assert_eq!(
        sig["inputs"]["image"],
        serde_json::json!({"dtype": "DT_FLOAT", "name": "image:0", "tensor_shape": {"dim": [
            {"size": "-1", "name": ""}, {"size": "28", "name": ""}, {"size": "28", "name": ""}, {"size": "1", "name": ""}
        ], "unknown_rank": false}})
    );
    assert_eq!(sig["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"], "10");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_in_row_and_columnar_form_gives_onnxruntimes_answer() {
    let server = TestServer::start().await;
    let cases = cases();
    let digits: Vec<_> = cases.iter().filter(|c| c.class.is_some()).take(3).collect();
    let body =
        format!("{{\"instances\": [{}]}}", digits.iter().map(|c| image_json(&c.input)).collect::<Vec<_>>().join(","));
    let (code, content_type, answer) = server.http("POST", "/v1/models/mnist:predict", body.as_bytes()).await;
    assert_eq!((code, content_type.as_str()), (200, "application/json"), "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let predictions = v["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for (row, case) in predictions.iter().zip(&digits) {
        let probs = floats(row);
        assert_close(&probs, &case.probabilities);
        assert_eq!(argmax(&probs), case.class.unwrap() as usize);
    }

    let body = format!("{{\"signature_name\": \"serving_default\", \"inputs\": [{}]}}", image_json(&digits[0].input));
    let (code, _, answer) = server.http("POST", "/v1/models/mnist/versions/1:predict", body.as_bytes()).await;
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_close(&floats(&v["outputs"][0]), &digits[0].probabilities);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_have_tensorflow_servings_codes_and_texts() {
    let server = TestServer::start().await;
    let digit = image_json(&cases()[0].input);
    let predict = "/v1/models/mnist:predict";
    let table: Vec<(&str, &str, String, u16, String)> = vec![
        ("POST", predict, String::new(), 400, "JSON Parse error: The document is empty".into()),
        ("POST", predict, "{\"instances\": [1,]}".into(), 400, "JSON Parse error: Invalid value. at offset: 17".into()),
        ("POST", predict, "[1, 2]".into(), 400, "JSON Value: [1,2] Is not object".into()),
        ("POST", predict, "{}".into(), 400, "Missing 'inputs' or 'instances' key".into()),
        (
            "POST",
            predict,
            "{\"instances\": [], \"inputs\": []}".into(),
            400,
            "JSON Value: {\"instances\":[],\"inputs\":[]} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
                .into(),
        ),
        (
            "POST",
            predict,
            "{\"instances\": 5}".into(),
            400,
            "JSON Value: {\"instances\":5} Expecting 'instances' to be an list/array".into(),
        ),
        (
            "POST",
            predict,
            "{\"instances\": []}".into(),
            400,
            "JSON Value: {\"instances\":[]} No values in 'instances' array".into(),
        ),
        (
            "POST",
            predict,
            "{\"inputs\": [[[[\"x\"]]]]}".into(),
            400,
            "JSON Value: \"x\" Type: String is not of expected type: float".into(),
        ),
        (
            "POST",
            predict,
            "{\"inputs\": [[1, 2], [3]]}".into(),
            400,
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2".into(),
        ),
        (
            "POST",
            predict,
            format!("{{\"instances\": [{digit}, [[1]]]}}"),
            400,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [28,28,1] but got: [1,1]"
                .into(),
        ),
        (
            "POST",
            predict,
            "{\"signature_name\": \"nope\", \"instances\": [1]}".into(),
            400,
            "Serving signature name: \"nope\" not found in signature def".into(),
        ),
        (
            "POST",
            predict,
            "{\"signature_name\": 7, \"instances\": [1]}".into(),
            400,
            "JSON Value: {\"signature_name\":7,\"instances\":[1]} not formatted correctly. 'signature_name' key must be a string value."
                .into(),
        ),
        ("POST", "/v1/models/nope:predict", "{}".into(), 404, "Servable not found for request: Latest(nope)".into()),
        (
            "POST",
            "/v1/models/mnist/versions/3:predict",
            "{}".into(),
            404,
            "Servable not found for request: Specific(mnist, 3)".into(),
        ),
        (
            "POST",
            "/v1/models/mnist/labels/beta:predict",
            "{}".into(),
            400,
            "Unrecognized servable version label: beta".into(),
        ),
        ("GET", "/v1/models/nope", String::new(), 404, "Could not find any versions of model nope".into()),
        ("GET", "/v1/models/mnist/versions/4", String::new(), 404, "Could not find version 4 of model mnist".into()),
        ("GET", "/v1/models", String::new(), 400, "Missing model name in request.".into()),
        ("GET", predict, String::new(), 400, format!("Malformed request: GET {predict}")),
        ("PUT", "/v1/models/mnist", String::new(), 400, "Malformed request: PUT /v1/models/mnist".into()),
    ];
    for (method, path, body, status, message) in table {
        let (code, content_type, answer) = server.http(method, path, body.as_bytes()).await;
        assert_eq!(code, status, "{method} {path} {body}: {answer}");
        assert_eq!(content_type, "application/json", "{method} {path}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer}: {e}"));
        assert_eq!(v["error"], message, "{method} {path} {body}");
    }
    // Outside /v1/ the answer is a plain 404, as TF Serving's HTTP server.
    let (code, content_type, _) = server.http("GET", "/healthz", b"").await;
    assert_eq!((code, content_type.as_str()), (404, "text/html"));
    // And the server still answers.
    let (code, _, _) = server.http("GET", "/v1/models/mnist", b"").await;
    assert_eq!(code, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_moves_or_goes_with_the_monitoring_config() {
    let options = ferroserve::rest::RestOptions { metrics_path: Some("/metrics".into()), ..Default::default() };
    let server = TestServer::start_full(TestServer::example_state(), options, std::time::Duration::ZERO).await;
    let (code, content_type, body) = server.http("GET", "/metrics", b"").await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(body.contains("# TYPE :tensorflow:serving:request_count counter"), "{body}");
    let (code, _, _) = server.http("GET", "/monitoring/prometheus/metrics", b"").await;
    assert_eq!(code, 404, "only the configured path serves the page");
    server.stop().await;

    let options = ferroserve::rest::RestOptions { metrics_path: None, ..Default::default() };
    let server = TestServer::start_full(TestServer::example_state(), options, std::time::Duration::ZERO).await;
    let (code, _, _) = server.http("GET", "/monitoring/prometheus/metrics", b"").await;
    assert_eq!(code, 404, "a config that disables the page");
    let (code, _, _) = server.http("GET", "/v1/models/mnist", b"").await;
    assert_eq!(code, 200, "the API still answers");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_headers_and_gzip_bodies() {
    use std::io::Write;
    let state = TestServer::example_state();
    let options = ferroserve::rest::RestOptions { cors: true, ..Default::default() };
    let server = TestServer::start_full(state, options, std::time::Duration::ZERO).await;
    let (code, head, body) =
        server.http_with("OPTIONS", "/v1/models/mnist:predict", &[("Origin", "https://app.example")], b"").await;
    assert_eq!((code, body.as_str()), (200, ""));
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(head.contains("access-control-allow-methods: post, get"), "{head}");
    assert!(head.contains("access-control-allow-headers: content-type"), "{head}");
    let (code, _, body) = server.http_with("OPTIONS", "/v1/models/mnist:predict", &[], b"").await;
    assert_eq!(code, 400);
    assert!(body.contains("Origin header is missing in CORS preflight"), "{body}");
    let (_, head, _) = server.http_with("GET", "/v1/models/mnist", &[], b"").await;
    assert!(head.contains("access-control-allow-origin: *"), "every answer carries CORS headers: {head}");

    let case = &cases()[4];
    let json = format!("{{\"instances\": [{}]}}", image_json(&case.input));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    let (code, _, answer) =
        server.http_with("POST", "/v1/models/mnist:predict", &[("Content-Encoding", "gzip")], &compressed).await;
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_close(&floats(&v["predictions"][0]), &case.probabilities);
    let (code, _, answer) =
        server.http_with("POST", "/v1/models/mnist:predict", &[("Content-Encoding", "gzip")], b"not gzip").await;
    assert_eq!(code, 400);
    assert!(answer.contains("Failed to decompress the gzip request body"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_rest_timeout_answers_504() {
    let dir = crate::harness::temp_dir("rest-timeout");
    crate::harness::write_slow_model(&dir, 512, 1024);
    let repository = ferroserve::repository::ModelRepository::load(
        &[ferroserve::repository::ModelConfig::new("slow", &dir)],
        ferroserve::kernels::KernelRegistry::with_all_ops(),
    )
    .unwrap();
    let state = TestServer::state(std::sync::Arc::new(repository));
    let options =
        ferroserve::rest::RestOptions { timeout: Some(std::time::Duration::from_millis(5)), ..Default::default() };
    let server = TestServer::start_full(state, options, std::time::Duration::ZERO).await;
    let row = format!("[{}]", vec!["0.5"; 512].join(","));
    let body = format!("{{\"instances\": [{}]}}", vec![row; 64].join(","));
    let (code, _, answer) = server.http("POST", "/v1/models/slow:predict", body.as_bytes()).await;
    assert_eq!(code, 504, "{answer}");
    assert!(answer.contains("--rest_api_timeout_in_ms=5"), "{answer}");
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_counts_requests_under_tensorflow_servings_names() {
    let server = TestServer::start().await;
    let case = &cases()[0];
    server.prediction().await.predict(crate::harness::predict_request(case)).await.expect("gRPC predict");
    let body = format!("{{\"instances\": [{}, {}]}}", image_json(&case.input), image_json(&case.input));
    let (code, _, _) = server.http("POST", "/v1/models/mnist:predict", body.as_bytes()).await;
    assert_eq!(code, 200);
    let (code, _, _) = server.http("POST", "/v1/models/nope:predict", b"{}").await;
    assert_eq!(code, 404);

    let (code, content_type, page) = server.http("GET", "/monitoring/prometheus/metrics", b"").await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    // Every sample line is `name{labels} value` with a numeric value.
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}"));
    }
    for needle in [
        "# TYPE :tensorflow:serving:request_count counter",
        ":tensorflow:serving:request_count{model_name=\"mnist\",status=\"OK\"} 2",
        ":tensorflow:serving:request_count{model_name=\"nope\",status=\"NOT_FOUND\"} 1",
        ":tensorflow:serving:request_latency_count{model_name=\"mnist\",API=\"Predict\",entrypoint=\"GRPC\",model_version=\"1\"} 1",
        ":tensorflow:serving:request_latency_count{model_name=\"mnist\",API=\"predict\",entrypoint=\"REST\",model_version=\"1\"} 1",
        ":tensorflow:serving:runtime_latency_count{model_name=\"mnist\",API=\"Predict\",runtime=\"TF1\"} 1",
        ":tensorflow:serving:request_example_count_total{model=\"mnist\"} 3",
        ":tensorflow:cc:saved_model:load_attempt_count{model_path=",
        "process_start_time_seconds ",
        "process_resident_memory_bytes ",
        ":ferroserve:in_flight_requests 0",
    ] {
        assert!(page.contains(needle), "the page lacks {needle:?}:\n{page}");
    }
    assert!(!page.contains("# HELP"));
    server.stop().await;
}

/// The rules that only a model with several inputs can show (iris: sepal
/// and petal, two outputs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_inputs_follow_the_row_and_column_rules() {
    let server = TestServer::start_with(vec![crate::harness::iris_model()], std::time::Duration::ZERO).await;
    let predict = "/v1/models/iris:predict";
    let flower = r#"{"sepal":[5.1,3.5],"petal":[1.4,0.2]}"#;
    let (code, _, text) =
        server.http("POST", predict, format!(r#"{{"instances":[{flower},{flower}]}}"#).as_bytes()).await;
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = v["predictions"].as_array().expect("rows answer predictions");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["scores"].as_array().unwrap().len(), 3, "each row is an object by output alias: {text}");
    assert_eq!(rows[0]["outputs"].as_array().unwrap().len(), 1);
    let columns = r#"{"inputs":{"sepal":[[5.1,3.5],[7.0,3.2]],"petal":[[1.4,0.2],[4.7,1.4]]}}"#;
    let (code, _, text) = server.http("POST", predict, columns.as_bytes()).await;
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["outputs"]["scores"].as_array().unwrap().len(), 2, "columns answer outputs by alias: {text}");

    let table: Vec<(&str, &str)> = vec![
        (
            r#"{"instances":[[1.0,2.0]]}"#,
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map",
        ),
        (
            r#"{"inputs":[1.0]}"#,
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map",
        ),
        (r#"{"inputs":{"sepal":[[1.0,2.0]]}}"#, "Missing named input: petal in 'inputs' object."),
        (
            r#"{"instances":[{"sepal":[1.0,2.0]}]}"#,
            "Failed to process element: 0 key: petal of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have named input: petal",
        ),
        (
            r#"{"instances":[{"sepal":[1.0,2.0],"petal":[1.0,2.0],"x":1}]}"#,
            r#"Failed to process element: 0 of 'instances' list. JSON object: {"sepal":[1.0,2.0],"petal":[1.0,2.0],"x":1} keys must be equal to: petal,sepal"#,
        ),
        (
            r#"{"inputs":{"sepal":[[1.0,2.0],[1.0]],"petal":[[1.0,2.0],[1.0,2.0]]}}"#,
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (
            r#"{"inputs":{"sepal":[[1.0,2.0],3.0],"petal":[[1.0,2.0],[1.0,2.0]]}}"#,
            "JSON Value: 3.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            r#"{"signature_name":"other","instances":[1]}"#,
            r#"Serving signature name: "other" not found in signature def"#,
        ),
    ];
    for (body, message) in table {
        let (code, _, text) = server.http("POST", predict, body.as_bytes()).await;
        assert_eq!(code, 400, "{body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], message, "{body}");
    }
    server.stop().await;
}
