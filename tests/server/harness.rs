//! Starting and stopping servers, clients, and requests built from the
//! committed fixtures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use ferroserve::compute::ComputePool;
use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::onnx as pb;
use ferroserve::proto::tensorflow::serving::model_service_client::ModelServiceClient;
use ferroserve::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve::proto::tensorflow::serving::{ModelSpec, PredictRequest};
use ferroserve::proto::tensorflow::{DataType, TensorProto};
use ferroserve::repository::{ModelConfig, ModelRepository, RepositoryOptions};
use ferroserve::service::{self, ServingState};
use ferroserve::tensor::proto::shape_proto;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_model() -> ModelConfig {
    ModelConfig::new("mnist", root().join("examples/models/mnist"))
}

/// The Classify/Regress fixture: inputs sepal[N,2] and petal[N,2], outputs
/// scores[N,3] and outputs[N,1], with labels.txt.
pub fn iris_model() -> ModelConfig {
    ModelConfig::new("iris", root().join("tests/fixtures/models/iris"))
}

/// One flower of tests/fixtures/iris_reference.json.
pub struct Flower {
    pub sepal: Vec<f32>,
    pub petal: Vec<f32>,
    pub scores: Vec<f32>,
    pub output: f32,
}

pub fn flowers() -> (Vec<String>, Vec<Flower>) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("tests/fixtures/iris_reference.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let labels = json["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    let flowers = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Flower {
            sepal: floats(&c["sepal"]),
            petal: floats(&c["petal"]),
            scores: floats(&c["scores"]),
            output: c["output"].as_f64().unwrap() as f32,
        })
        .collect();
    (labels, flowers)
}

/// A server running on its own task until stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The REST API of the same server.
    pub rest_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves the example model with no shutdown delay.
    pub async fn start() -> TestServer {
        TestServer::start_with(vec![example_model()], Duration::ZERO).await
    }

    pub async fn start_with(models: Vec<ModelConfig>, shutdown_delay: Duration) -> TestServer {
        let repository = ModelRepository::load(&models, KernelRegistry::with_all_ops()).expect("models load");
        TestServer::start_on(Arc::new(repository), shutdown_delay).await
    }

    /// Serves `models` with a version poller running every `poll`.
    pub async fn start_polling(models: Vec<ModelConfig>, options: RepositoryOptions, poll: Duration) -> TestServer {
        let repository = Arc::new(ModelRepository::new(KernelRegistry::with_all_ops(), options));
        let repo = repository.clone();
        tokio::task::spawn_blocking(move || repo.apply_config(models)).await.unwrap().expect("models load");
        let server = TestServer::start_on(repository.clone(), Duration::ZERO).await;
        let poller = tokio::spawn(ferroserve::repository::poll_every(repository, poll));
        TestServer { poller: Some(poller), ..server }
    }

    pub async fn start_on(repository: Arc<ModelRepository>, shutdown_delay: Duration) -> TestServer {
        TestServer::start_state(TestServer::state(repository), shutdown_delay).await
    }

    /// Serving state over the example model alone.
    pub fn example_state() -> ServingState {
        let repository =
            ModelRepository::load(&[example_model()], KernelRegistry::with_all_ops()).expect("models load");
        TestServer::state(Arc::new(repository))
    }

    /// Serving state over `repository` with the default options.
    pub fn state(repository: Arc<ModelRepository>) -> ServingState {
        ServingState::new(repository, Arc::new(ComputePool::new(2, 16).expect("compute pool")))
    }

    pub async fn start_state(state: ServingState, shutdown_delay: Duration) -> TestServer {
        TestServer::start_full(state, ferroserve::rest::RestOptions::default(), shutdown_delay).await
    }

    pub async fn start_full(
        state: ServingState,
        rest_options: ferroserve::rest::RestOptions,
        shutdown_delay: Duration,
    ) -> TestServer {
        let state = Arc::new(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let rest_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let rest_addr = rest_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (rest_stop, rest_stopped) = oneshot::channel::<()>();
        let rest = tokio::spawn(ferroserve::rest::serve(rest_listener, state.clone(), rest_options, async {
            let _ = rest_stopped.await;
        }));
        let task = tokio::spawn(async move {
            service::serve(
                listener,
                state,
                async {
                    let _ = stopped.await;
                },
                shutdown_delay,
            )
            .await
            .expect("server runs");
            let _ = rest_stop.send(());
            rest.await.expect("REST task").expect("REST server runs");
        });
        TestServer { addr, rest_addr, stop: Some(stop), task: Some(task), poller: None }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("connect")
    }

    pub async fn prediction(&self) -> PredictionServiceClient<Channel> {
        PredictionServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    pub async fn models(&self) -> ModelServiceClient<Channel> {
        ModelServiceClient::new(self.channel().await)
    }

    /// One HTTP/1.1 request to the REST API: (status, content type, body).
    pub async fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
        let (status, head, body) = self.http_with(method, path, &[], body).await;
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
            .unwrap_or_default();
        (status, content_type, body)
    }

    /// One HTTP/1.1 request with extra headers: (status, the response head
    /// in lower case, body).
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.rest_addr).await.expect("connect REST");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
            self.rest_addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
            .await
            .expect("REST answers")
            .unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    /// Starts the drain without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Drains and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(poller) = self.poller.take() {
            poller.abort();
        }
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within 30 s")
                .expect("server task ends cleanly");
        }
    }
}

/// One case of tests/fixtures/mnist_reference.json.
pub struct Case {
    pub class: Option<u64>,
    pub shape: Vec<i64>,
    pub input: Vec<f32>,
    pub probabilities: Vec<f32>,
}

pub fn cases() -> Vec<Case> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("tests/fixtures/mnist_reference.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            class: c["class"].as_u64(),
            shape: c["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect(),
            input: floats(&c["input"]),
            probabilities: floats(&c["probabilities"]),
        })
        .collect()
}

pub fn spec(name: &str) -> Option<ModelSpec> {
    Some(ModelSpec { name: name.into(), ..ModelSpec::default() })
}

pub fn float_tensor(shape: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(shape_proto(shape.iter().copied())),
        float_val: values,
        ..TensorProto::default()
    }
}

/// A Predict of `case` on the example model's `image` input.
pub fn predict_request(case: &Case) -> PredictRequest {
    PredictRequest {
        model_spec: spec("mnist"),
        inputs: [("image".to_string(), float_tensor(&case.shape, case.input.clone()))].into(),
        ..PredictRequest::default()
    }
}

/// Asserts closeness at the project's tolerance: rtol 1e-4, atol 1e-5.
pub fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "element counts differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "element {i}: got {a}, expected {e}");
    }
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::MIN), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

/// A fresh directory under the system temp dir, unique to this test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroserve-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a model whose Predict takes long enough to be in flight when a
/// signal arrives: `layers` MatMuls by the identity, so y == x exactly.
pub fn write_slow_model(dir: &Path, width: usize, layers: usize) {
    let float = pb::tensor_proto::DataType::Float as i32;
    let info = |name: &str| value_info(name, float, &[None, Some(width as i64)]);
    let mut identity = vec![0f32; width * width];
    for i in 0..width {
        identity[i * width + i] = 1.0;
    }
    let weight = pb::TensorProto {
        name: Some("identity".into()),
        dims: vec![width as i64, width as i64],
        data_type: Some(float),
        raw_data: Some(identity.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    };
    let nodes = (0..layers)
        .map(|i| pb::NodeProto {
            op_type: Some("MatMul".into()),
            input: vec![if i == 0 { "x".into() } else { format!("h{i}") }, "identity".into()],
            output: vec![if i + 1 == layers { "y".into() } else { format!("h{}", i + 1) }],
            ..Default::default()
        })
        .collect();
    let graph = pb::GraphProto {
        node: nodes,
        initializer: vec![weight],
        input: vec![info("x")],
        output: vec![info("y")],
        ..Default::default()
    };
    write_onnx_version(dir, graph);
}

/// An ONNX graph input or output: `dims` of `None` are named batch dims,
/// `Some(-1)` dims of unknown size without a name.
pub fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: match d {
                Some(-1) => None,
                Some(n) => Some(Value::DimValue(*n)),
                None => Some(Value::DimParam("batch".into())),
            },
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes `graph` as version 1 of the model at `dir`.
pub fn write_onnx_version(dir: &Path, graph: pb::GraphProto) {
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    };
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("1/model.onnx"), model.encode_to_vec()).unwrap();
}

/// Writes a model that echoes byte strings: input `raw_bytes` string
/// [batch], outputs `echo` (shown as text over REST) and `echo_bytes` (shown
/// as base64), both Identity.
pub fn write_string_model(dir: &Path) {
    let string = pb::tensor_proto::DataType::String as i32;
    let identity = |output: &str| pb::NodeProto {
        op_type: Some("Identity".into()),
        input: vec!["raw_bytes".into()],
        output: vec![output.into()],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        node: vec![identity("echo"), identity("echo_bytes")],
        input: vec![value_info("raw_bytes", string, &[None])],
        output: vec![value_info("echo", string, &[None]), value_info("echo_bytes", string, &[None])],
        ..Default::default()
    };
    write_onnx_version(dir, graph);
}

/// Writes a model whose graph fixes what its declared shapes leave open:
/// `features` [batch, `width`] goes through a MatMul by a [4, 3] weight
/// (node `fc`), and its result is concatenated (node `join`, axis 1) with
/// `extra` [?, 2], so `extra`'s dim 0 must equal the batch. `width` of -1
/// leaves the dim open; any other value fixes it.
pub fn write_shape_model(dir: &Path, width: i64) {
    let float = pb::tensor_proto::DataType::Float as i32;
    let weight = pb::TensorProto {
        name: Some("w".into()),
        dims: vec![4, 3],
        data_type: Some(float),
        float_data: (0..12).map(|i| i as f32).collect(),
        ..Default::default()
    };
    let node =
        |name: &str, op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>| pb::NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        };
    let axis = pb::AttributeProto {
        name: Some("axis".into()),
        r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
        i: Some(1),
        ..Default::default()
    };
    let graph = pb::GraphProto {
        node: vec![
            node("fc", "MatMul", &["features", "w"], "hidden", vec![]),
            node("join", "Concat", &["hidden", "extra"], "joined", vec![axis]),
        ],
        initializer: vec![weight],
        input: vec![
            value_info("features", float, &[None, Some(width)]),
            value_info("extra", float, &[Some(-1), Some(2)]),
        ],
        output: vec![value_info("joined", float, &[None, Some(5)])],
        ..Default::default()
    };
    write_onnx_version(dir, graph);
}
