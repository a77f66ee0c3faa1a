//! The gRPC front: TensorFlow Serving's `PredictionService` and
//! `ModelService`, `grpc.health.v1.Health`, and server reflection (v1 and
//! v1alpha), served by tonic on an already-bound listener.
//!
//! [`serve`] takes the listener and a shutdown future, so the binary binds
//! the configured port and tests bind `127.0.0.1:0`. When the shutdown
//! future resolves, health turns NOT_SERVING at once, the listener stops
//! accepting, and in-flight requests complete before `serve` returns.

mod model;
pub(crate) mod prediction;
mod warmup;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{BearerToken, GrpcAuthLayer};
use crate::compute::ComputePool;
use crate::limits::{ByteBudget, GrpcBudgetLayer};
use crate::proto::tensorflow::serving::model_service_server::ModelServiceServer;
use crate::proto::tensorflow::serving::prediction_service_server::PredictionServiceServer;
use crate::repository::ModelRepository;

pub use model::ModelApi;
pub use prediction::{PredictionApi, PreparedPredict};
pub use warmup::{MAX_WARMUP_RECORDS, WARMUP_FILE, Warmup};

/// The largest message accepted or sent, as TensorFlow Serving
/// (`INT32_MAX`).
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// The fully qualified names of the services TensorFlow Serving clients
/// call.
pub const PREDICTION_SERVICE: &str = "tensorflow.serving.PredictionService";
pub const MODEL_SERVICE: &str = "tensorflow.serving.ModelService";

/// What every request handler shares.
#[derive(Debug)]
pub struct ServingState {
    /// The loaded models.
    pub repository: Arc<ModelRepository>,
    /// Where models run.
    pub compute: Arc<ComputePool>,
    /// Requests being answered now; a drain reports it.
    pub in_flight: AtomicUsize,
    /// Answer Predict with `tensor_content` instead of the typed fields.
    pub tensor_content_outputs: bool,
    /// Check signature method names (`--enable_signature_method_name_check`).
    pub method_name_check: bool,
    /// The largest gRPC message received and sent, in bytes
    /// (`--grpc_channel_arguments=grpc.max_receive_message_length=...`,
    /// `grpc.max_send_message_length`; TF Serving's default is 2 GiB - 1).
    pub max_receive_bytes: usize,
    pub max_send_bytes: usize,
    /// The budget of request bytes in flight
    /// (`--max_inflight_request_bytes`); `None` = no budget.
    pub request_budget: Option<Arc<ByteBudget>>,
    /// The bearer token every call but health and metrics must carry
    /// (`--auth_token_file`); `None` = no authentication.
    pub auth: Option<BearerToken>,
}

impl ServingState {
    /// State for serving `repository` on `compute`.
    pub fn new(repository: Arc<ModelRepository>, compute: Arc<ComputePool>) -> ServingState {
        ServingState {
            repository,
            compute,
            in_flight: AtomicUsize::new(0),
            tensor_content_outputs: false,
            method_name_check: false,
            max_receive_bytes: MAX_MESSAGE_BYTES,
            max_send_bytes: MAX_MESSAGE_BYTES,
            request_budget: None,
            auth: None,
        }
    }

    /// With bearer-token authentication (`--auth_token_file`).
    pub fn with_auth(mut self, token: Option<BearerToken>) -> ServingState {
        self.auth = token;
        self
    }

    /// With a budget of request bytes in flight (`None` = no budget).
    pub fn with_request_budget(mut self, bytes: Option<usize>) -> ServingState {
        self.request_budget = bytes.map(ByteBudget::new);
        self
    }

    /// With gRPC message size limits (`--grpc_channel_arguments`).
    pub fn with_message_limits(mut self, receive: usize, send: usize) -> ServingState {
        self.max_receive_bytes = receive;
        self.max_send_bytes = send;
        self
    }

    /// With `--enable_signature_method_name_check`.
    pub fn with_method_name_check(mut self, enabled: bool) -> ServingState {
        self.method_name_check = enabled;
        self
    }

    /// With `--enable_serialization_as_tensor_content`.
    pub fn with_tensor_content_outputs(mut self, enabled: bool) -> ServingState {
        self.tensor_content_outputs = enabled;
        self
    }

    /// Counts a request as in flight until the guard drops.
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }
}

/// Marks one request in flight; see [`ServingState::enter`].
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The names that stand for the whole server in health checks: the empty
/// name and the two services by short and full name. Each model's name is
/// a health name of its own.
pub const SERVER_HEALTH_NAMES: [&str; 5] = ["", "ModelService", "PredictionService", MODEL_SERVICE, PREDICTION_SERVICE];

fn status_of(ready: bool) -> ServingStatus {
    if ready { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// Sets health from readiness: each model SERVING while it has an available
/// version, the server names while every model has one. Models that left
/// the configuration are removed from `known` and from health.
async fn follow_readiness(reporter: &mut HealthReporter, repository: &ModelRepository, known: &mut Vec<String>) {
    let readiness = repository.readiness();
    let all = readiness.iter().all(|(_, ready)| *ready);
    for name in SERVER_HEALTH_NAMES {
        reporter.set_service_status(name, status_of(all)).await;
    }
    for (name, ready) in &readiness {
        reporter.set_service_status(name, status_of(*ready)).await;
    }
    for gone in known.iter().filter(|k| !readiness.iter().any(|(n, _)| n == *k)) {
        reporter.clear_service_status(gone).await;
    }
    *known = readiness.into_iter().map(|(n, _)| n).collect();
}

async fn set_all(reporter: &HealthReporter, known: &[String], status: ServingStatus) {
    for name in SERVER_HEALTH_NAMES.iter().copied().chain(known.iter().map(String::as_str)) {
        reporter.set_service_status(name, status).await;
    }
}

/// tonic refuses a message over the receive limit with OUT_OF_RANGE and an
/// expired client deadline with CANCELLED; gRPC (and so TensorFlow
/// Serving) says RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED. The status, in
/// the headers or the trailers, is rewritten; the oversize message names
/// the limit and the flag that raises it.
fn grpc_status_codes(response: http::Response<tonic::body::Body>, limit: usize) -> http::Response<tonic::body::Body> {
    use http_body_util::BodyExt;
    let (mut parts, body) = response.into_parts();
    rewrite_status(&mut parts.headers, limit);
    let body = body.map_frame(move |mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            rewrite_status(trailers, limit);
        }
        frame
    });
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}

/// The first and last `keep` bytes of `message` (on character
/// boundaries), joined by how much was cut.
fn cut_middle(message: &str, keep: usize) -> String {
    let mut head = keep.min(message.len());
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len().saturating_sub(keep).max(head);
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} ...({} bytes cut)... {}", &message[..head], tail - head, &message[tail..])
}

fn rewrite_status(headers: &mut http::HeaderMap, limit: usize) {
    let Some(status) = tonic::Status::from_header_map(headers) else { return };
    let rewritten = match status.code() {
        // tonic answers an expired `grpc-timeout` with CANCELLED; gRPC says
        // DEADLINE_EXCEEDED (the handler, and any run still waiting for the
        // compute pool, is dropped either way).
        tonic::Code::Cancelled if status.message() == "Timeout expired" => {
            tonic::Status::deadline_exceeded("Deadline Exceeded")
        }
        tonic::Code::OutOfRange if status.message().contains("decoded message length too large") => {
            let found =
                status.message().split("found ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or("more");
            tonic::Status::resource_exhausted(format!(
                "Received message larger than max ({found} vs. {limit}); the limit is raised with --grpc_channel_arguments=grpc.max_receive_message_length=N"
            ))
        }
        // tonic's decode errors name every nested field, then the reason:
        // keep both ends within TF Serving's 1024 bytes.
        tonic::Code::Internal
            if status.message().len() > 1024 && status.message().starts_with("failed to decode Protobuf message") =>
        {
            tonic::Status::internal(cut_middle(status.message(), 500))
        }
        _ => return,
    };
    // Only a message that cannot be a header value fails, and ours are ASCII.
    let _ = rewritten.add_header(headers);
}

/// Serves gRPC on `listener` until `shutdown` resolves, then drains: health
/// turns NOT_SERVING at once, the listener keeps accepting for
/// `shutdown_delay` (so load balancers see the change), then stops, and
/// in-flight requests complete before this returns.
///
/// # Errors
/// When the transport fails or reflection cannot be built from the
/// descriptors.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServingState>,
    shutdown: impl Future<Output = ()> + Send,
    shutdown_delay: Duration,
) -> Result<(), BoxError> {
    serve_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)), state, shutdown, shutdown_delay).await
}

/// [`serve`] over TLS (`--ssl_config_file`): connections are accepted on
/// `listener` and handed over once their handshake with `tls` completed.
///
/// # Errors
/// As [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    state: Arc<ServingState>,
    shutdown: impl Future<Output = ()> + Send,
    shutdown_delay: Duration,
) -> Result<(), BoxError> {
    use tokio_stream::StreamExt;
    let connections = tokio_stream::wrappers::ReceiverStream::new(crate::tls::accept(listener, tls))
        .map(|(stream, _)| Ok::<_, std::io::Error>(stream));
    serve_incoming(connections, state, shutdown, shutdown_delay).await
}

/// [`serve`] on a UNIX socket (`--grpc_socket_path`), bound by the caller.
///
/// # Errors
/// As [`serve`].
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    state: Arc<ServingState>,
    shutdown: impl Future<Output = ()> + Send,
    shutdown_delay: Duration,
) -> Result<(), BoxError> {
    use tokio_stream::StreamExt;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
        .map(|connection| connection.map(crate::uds::AuthorityFix::new));
    serve_incoming(incoming, state, shutdown, shutdown_delay).await
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve_incoming<I, IO, IE>(
    incoming: I,
    state: Arc<ServingState>,
    shutdown: impl Future<Output = ()> + Send,
    shutdown_delay: Duration,
) -> Result<(), BoxError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<BoxError>,
{
    let (mut reporter, health) = tonic_health::server::health_reporter();
    let mut known = Vec::new();
    let mut changes = state.repository.subscribe();
    follow_readiness(&mut reporter, &state.repository, &mut known).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(PREDICTION_SERVICE)
            .with_service_name(MODEL_SERVICE)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (receive, send) = (state.max_receive_bytes, state.max_send_bytes);
    let prediction = PredictionServiceServer::new(PredictionApi::new(state.clone()))
        .max_decoding_message_size(receive)
        .max_encoding_message_size(send);
    let model = ModelServiceServer::new(ModelApi::new(state.clone()))
        .max_decoding_message_size(receive)
        .max_encoding_message_size(send);

    let drain_state = state.clone();
    let drain = async move {
        // Until the shutdown signal, health follows the models' readiness.
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                changed = changes.changed() => match changed {
                    Ok(()) => follow_readiness(&mut reporter, &drain_state.repository, &mut known).await,
                    // The repository is gone: nothing changes any more.
                    Err(_) => {
                        (&mut shutdown).await;
                        break;
                    }
                },
            }
        }
        set_all(&reporter, &known, ServingStatus::NotServing).await;
        tracing::info!(
            in_flight = drain_state.in_flight.load(Ordering::SeqCst),
            delay_seconds = shutdown_delay.as_secs_f64(),
            "draining: health is NOT_SERVING; {} request(s) in flight",
            drain_state.in_flight.load(Ordering::SeqCst)
        );
        tokio::time::sleep(shutdown_delay).await;
    };
    Server::builder()
        .layer(tower::util::MapResponseLayer::new(move |r| grpc_status_codes(r, receive)))
        .layer(GrpcAuthLayer::new(state.auth.clone()))
        .layer(GrpcBudgetLayer::new(state.request_budget.clone(), receive))
        .add_service(prediction)
        .add_service(model)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, drain)
        .await?;
    Ok(())
}

#[cfg(test)]
mod status_tests {
    use super::rewrite_status;

    fn headers(status: &str, message: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", status.parse().unwrap());
        h.insert("grpc-message", message.parse().unwrap());
        h
    }

    #[test]
    fn tonics_codes_become_grpcs() {
        let status = |h: &http::HeaderMap| {
            let s = tonic::Status::from_header_map(h).unwrap();
            (s.code(), s.message().to_string())
        };
        // An expired grpc-timeout: CANCELLED in tonic, DEADLINE_EXCEEDED in gRPC.
        let mut h = headers("1", "Timeout%20expired");
        rewrite_status(&mut h, 10);
        assert_eq!(status(&h), (tonic::Code::DeadlineExceeded, "Deadline Exceeded".to_string()));
        // An oversize message: OUT_OF_RANGE in tonic, RESOURCE_EXHAUSTED in gRPC.
        let mut h = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%2012%20bytes,%20the%20limit%20is:%2010%20bytes",
        );
        rewrite_status(&mut h, 10);
        let (code, message) = status(&h);
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert!(message.starts_with("Received message larger than max (12 vs. 10)"), "{message}");
        // A long message is cut as TF Serving cuts it.
        let mut h = headers(
            "13",
            &format!("failed to decode Protobuf message: path{}: recursion limit reached", "x".repeat(3000)),
        );
        rewrite_status(&mut h, 10);
        let (code, message) = status(&h);
        assert_eq!(code, tonic::Code::Internal);
        assert!(message.starts_with("failed to decode Protobuf message: pathxxx"), "{message}");
        assert!(message.ends_with("x: recursion limit reached"), "{message}");
        assert!(message.len() < 1100 && message.contains("bytes cut"), "{message}");
        // Anything else is left alone.
        let mut h = headers("1", "cancelled%20by%20client");
        rewrite_status(&mut h, 10);
        assert_eq!(h["grpc-status"], "1");
    }
}
