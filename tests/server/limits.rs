//! Overload: the budget of request bytes in flight
//! (`--max_inflight_request_bytes`), the bound on queued runs
//! (`--max_queued_requests`), and deadlines and cancellations that drop
//! queued work unrun. A slow model (a chain of identity MatMuls, sized
//! so one run takes about half a second) keeps the one compute thread busy
//! while the other requests arrive.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve::compute::ComputePool;
use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::tensorflow::serving::PredictRequest;
use ferroserve::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve::repository::{ModelConfig, ModelRepository};
use ferroserve::rest::RestOptions;
use ferroserve::service::ServingState;
use tonic::transport::Channel;

use crate::harness::{TestServer, float_tensor, spec, temp_dir, write_slow_model};

const WIDTH: usize = 256;
const LAYERS: usize = 256;

/// The slow model, served with `state` options applied to one compute
/// thread.
fn slow_state(tag: &str, configure: impl FnOnce(ComputePool) -> ComputePool) -> (ServingState, std::path::PathBuf) {
    let dir = temp_dir(tag);
    write_slow_model(&dir, WIDTH, LAYERS);
    let repository =
        ModelRepository::load(&[ModelConfig::new("slow", dir.clone())], KernelRegistry::with_all_ops()).unwrap();
    let compute = configure(ComputePool::new(1, 8).unwrap());
    (ServingState::new(Arc::new(repository), Arc::new(compute)), dir)
}

fn slow_request(batch: usize) -> PredictRequest {
    let x: Vec<f32> = (0..batch * WIDTH).map(|i| (i % 89) as f32 - 44.0).collect();
    PredictRequest {
        model_spec: spec("slow"),
        inputs: [("x".to_string(), float_tensor(&[batch as i64, WIDTH as i64], x))].into(),
        ..PredictRequest::default()
    }
}

/// The batch at which one run takes at least `at_least`, and that run's
/// time.
async fn calibrate(client: &mut PredictionServiceClient<Channel>, at_least: Duration) -> (usize, Duration) {
    let mut batch = 64;
    loop {
        let started = Instant::now();
        client.predict(slow_request(batch)).await.expect("calibration run");
        let took = started.elapsed();
        if took >= at_least || batch >= 1 << 16 {
            return (batch, took);
        }
        batch *= 2;
    }
}

/// Runs of the slow model so far, from the Prometheus page.
async fn runs(server: &TestServer) -> u64 {
    let (status, _, page) = server.http("GET", "/monitoring/prometheus/metrics", b"").await;
    assert_eq!(status, 200);
    page.lines()
        .filter(|l| l.starts_with(":tensorflow:serving:runtime_latency_count{") && l.contains("\"slow\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_unavailable_at_once_on_grpc_and_rest() {
    let (state, dir) = slow_state("queue", |pool| pool.with_max_queued(1));
    let server = TestServer::start_state(state, Duration::ZERO).await;
    let mut client = server.prediction().await;
    let (batch, took) = calibrate(&mut client, Duration::from_millis(400)).await;

    // A runs; B waits in the queue; C finds it full.
    let a = tokio::spawn({
        let mut c = client.clone();
        async move { c.predict(slow_request(batch)).await }
    });
    tokio::time::sleep(took / 8).await;
    let b = tokio::spawn({
        let mut c = client.clone();
        async move { c.predict(slow_request(batch)).await }
    });
    tokio::time::sleep(took / 8).await;
    let started = Instant::now();
    let err = client.predict(slow_request(1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("--max_queued_requests=1"), "{}", err.message());
    let body = serde_json::json!({ "instances": [vec![0.0; WIDTH]] }).to_string();
    let (status, _, text) = server.http("POST", "/v1/models/slow:predict", body.as_bytes()).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("The compute queue is full"), "{text}");
    assert!(started.elapsed() < took, "refusals must not wait for the queue");

    a.await.unwrap().expect("A completes");
    b.await.unwrap().expect("B, which was queued, completes");
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadlines_and_cancelled_clients_leave_the_queue_unrun() {
    let (state, dir) = slow_state("deadline", |pool| pool);
    let rest_options = RestOptions { timeout: Some(Duration::from_millis(150)), ..RestOptions::default() };
    let server = TestServer::start_full(state, rest_options, Duration::ZERO).await;
    let mut client = server.prediction().await;
    let (batch, took) = calibrate(&mut client, Duration::from_millis(500)).await;
    let before = runs(&server).await;

    let a = tokio::spawn({
        let mut c = client.clone();
        async move { c.predict(slow_request(batch)).await }
    });
    tokio::time::sleep(took / 10).await;

    // B's deadline expires while it waits behind A. The client enforces
    // it too and may answer first (CANCELLED "Timeout expired" in tonic);
    // either way B must not run.
    let mut request = tonic::Request::new(slow_request(batch));
    request.set_timeout(Duration::from_millis(100));
    let err = client.predict(request).await.unwrap_err();
    assert!(err.code() == tonic::Code::DeadlineExceeded || err.message() == "Timeout expired", "{err:?}");

    // C's client goes away while C waits.
    let c = tokio::spawn({
        let mut c = client.clone();
        async move { c.predict(slow_request(batch)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.abort();

    // D, on REST, passes --rest_api_timeout_in_ms while it waits.
    let instances: Vec<Vec<f32>> = vec![vec![1.0; WIDTH]; 4];
    let body = serde_json::json!({ "instances": instances }).to_string();
    let (status, _, text) = server.http("POST", "/v1/models/slow:predict", body.as_bytes()).await;
    assert_eq!(status, 504, "{text}");
    assert!(text.contains("--rest_api_timeout_in_ms=150"), "{text}");

    a.await.unwrap().expect("A completes");
    // Only A ran: a run after it finishes sees the pool idle, and the
    // runtime histogram counts A and this one.
    client.predict(slow_request(1)).await.expect("E runs");
    assert_eq!(runs(&server).await, before + 2, "B, C or D ran after its caller left");
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_byte_budget_refuses_at_once_and_is_given_back() {
    // A holds its wire bytes and its decoded input (about as many again);
    // the budget holds one such request, not two.
    let (state, dir) = slow_state("budget", |pool| pool);
    let probe = slow_state("budget-probe", |pool| pool);
    // Calibrate on a server without a budget, so the batch is known first.
    let (batch, took) = {
        let server = TestServer::start_state(probe.0, Duration::ZERO).await;
        let mut client = server.prediction().await;
        let found = calibrate(&mut client, Duration::from_millis(400)).await;
        server.stop().await;
        found
    };
    std::fs::remove_dir_all(&probe.1).unwrap();
    let size = prost::Message::encoded_len(&slow_request(batch));
    let limit = size * 5 / 2;
    let state = state.with_request_budget(Some(limit));
    let budget = state.request_budget.clone().unwrap();
    let server = TestServer::start_state(state, Duration::ZERO).await;
    let mut client = server.prediction().await;

    let a = tokio::spawn({
        let mut c = client.clone();
        async move { c.predict(slow_request(batch)).await }
    });
    tokio::time::sleep(took / 8).await;
    assert!(budget.in_flight() >= size - 16, "A holds its bytes while it runs: {}", budget.in_flight());
    let started = Instant::now();
    let err = client.predict(slow_request(batch)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(&format!("--max_inflight_request_bytes={limit}")), "{}", err.message());
    // REST counts against the same budget: its Content-Length up front.
    let instances: Vec<Vec<f32>> = vec![vec![1.0; WIDTH]; batch];
    let body = serde_json::json!({ "instances": instances }).to_string();
    let (status, _, text) = server.http("POST", "/v1/models/slow:predict", body.as_bytes()).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("--max_inflight_request_bytes"), "{text}");
    assert!(started.elapsed() < took, "refusals must not wait");
    a.await.unwrap().expect("A completes");

    // Once A is answered its bytes are free again.
    assert_eq!(budget.in_flight(), 0);
    client.predict(slow_request(batch)).await.expect("the same request now fits");
    assert_eq!(budget.in_flight(), 0);

    // A small gzip body that inflates past the budget is refused as it
    // inflates.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(br#"{"instances": ["#).unwrap();
    let zeros = "0,".repeat(limit);
    gz.write_all(zeros.as_bytes()).unwrap();
    gz.write_all(b"0]}").unwrap();
    let compressed = gz.finish().unwrap();
    assert!(compressed.len() < limit / 10);
    let (status, _, text) =
        server.http_with("POST", "/v1/models/slow:predict", &[("Content-Encoding", "gzip")], &compressed).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("--max_inflight_request_bytes"), "{text}");
    assert_eq!(budget.in_flight(), 0);
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_request_that_fills_a_huge_shape_counts_its_decoded_size() {
    // One float_val fills the whole shape, as in TensorFlow: 47 bytes on
    // the wire can ask for 3 MB.
    let state = TestServer::example_state().with_request_budget(Some(1 << 20));
    let budget = state.request_budget.clone().unwrap();
    let server = TestServer::start_state(state, Duration::ZERO).await;
    let mut client = server.prediction().await;
    let request = |batch: i64| PredictRequest {
        model_spec: spec("mnist"),
        inputs: [("image".to_string(), float_tensor(&[batch, 28, 28, 1], vec![0.5]))].into(),
        ..PredictRequest::default()
    };
    let err = client.predict(request(1000)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("needs 3136000 more bytes"), "{}", err.message());
    let response = client.predict(request(10)).await.expect("a fill that fits the budget").into_inner();
    assert_eq!(response.outputs["probabilities"].float_val.len(), 100);
    assert_eq!(budget.in_flight(), 0);
    server.stop().await;
}
