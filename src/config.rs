//! The command line, with `tensorflow_model_server`'s flag names, syntax and
//! defaults, validated into a [`Config`] before any model loads or socket
//! opens.
//!
//! Every flag of TensorFlow Serving is accepted, so existing manifests keep
//! working. Flags this build does not act on yet are listed by
//! [`Flags::not_honoured`] and logged once at start-up; flags that mean
//! nothing on a CPU server (GPU, TPU, XLA, TFLite, the profiler) are logged
//! as ignored.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::proto::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
use crate::proto::tensorflow::serving::{ModelServerConfig, model_server_config};
use crate::repository::{ModelConfig, RepositoryOptions, VersionPolicy, is_remote};

/// The command that serves the bundled example model, shown when no model
/// is given.
pub const EXAMPLE_COMMAND: &str =
    "ferroserve --model_name=mnist --model_base_path=examples/models/mnist --rest_api_port=8501";

/// `tensorflow_model_server`'s flags. Booleans take `--x`, `--x=true` or
/// `--x=false`; values take `--x=v` or `--x v`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferroserve",
    rename_all = "snake_case",
    next_line_help = true,
    // A flag given twice takes its last value, as TensorFlow's flag parser
    // does (manifests often append to a base command line).
    args_override_self = true,
    version = concat!(env!("CARGO_PKG_VERSION"), " (TensorFlow Serving 2.21 API)"),
    about = "A model server that speaks TensorFlow Serving's gRPC API and runs ONNX models on its own CPU kernels.",
    after_help = concat!("Serve the bundled example model:\n  ", "ferroserve --model_name=mnist --model_base_path=examples/models/mnist --rest_api_port=8501"),
)]
pub struct Flags {
    /// TCP port for gRPC (0 = gRPC off; then --grpc_socket_path is required).
    #[arg(long, default_value_t = 8500)]
    pub port: u16,
    /// Also serve gRPC on this UNIX socket.
    #[arg(long, default_value = "")]
    pub grpc_socket_path: String,
    /// TCP port for the REST API (0 = off).
    #[arg(long, default_value_t = 0)]
    pub rest_api_port: u16,
    /// REST worker threads (0 = 4 x cores).
    #[arg(long, default_value_t = 0)]
    pub rest_api_num_threads: u32,
    /// Timeout of one REST call, in milliseconds.
    #[arg(long, default_value_t = 30000)]
    pub rest_api_timeout_in_ms: i64,
    /// Add CORS headers to REST answers.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub rest_api_enable_cors_support: bool,
    /// Name of the single model to serve (ignored with --model_config_file).
    #[arg(long, default_value = "default")]
    pub model_name: String,
    /// Directory holding the single model's numeric version directories.
    #[arg(long, default_value = "")]
    pub model_base_path: String,
    /// Text-format ModelServerConfig listing the models to serve.
    #[arg(long, default_value = "")]
    pub model_config_file: String,
    /// Re-read --model_config_file every N seconds (0 = read once).
    #[arg(long, default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: i64,
    /// Look for new versions every N seconds (0 = once; negative = never).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub file_system_poll_wait_seconds: i64,
    /// Merge concurrent requests into batches.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_batching: bool,
    /// Text-format BatchingParameters (requires --enable_batching).
    #[arg(long, default_value = "")]
    pub batching_parameters_file: String,
    /// Read batching_params.pbtxt from each version directory.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_per_model_batching_parameters: bool,
    /// Let a new version label point at a version that is not yet available.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub allow_version_labels_for_unavailable_models: bool,
    /// Load retries after a failed load.
    #[arg(long, default_value_t = 5)]
    pub max_num_load_retries: u32,
    /// Delay between load retries, in microseconds.
    #[arg(long, default_value_t = 60_000_000)]
    pub load_retry_interval_micros: i64,
    /// Threads for loading models (0 = serial).
    #[arg(long, default_value_t = 0)]
    pub num_load_threads: u32,
    /// Threads for unloading models (0 = serial).
    #[arg(long, default_value_t = 0)]
    pub num_unload_threads: u32,
    /// Flush file-system caches after the initial load.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    pub flush_filesystem_caches: bool,
    /// Comma-separated MetaGraphDef tags of SavedModels.
    #[arg(long, default_value = "serve")]
    pub saved_model_tags: String,
    /// Sets both intra- and inter-op threads (0 = automatic).
    #[arg(long, default_value_t = 0)]
    pub tensorflow_session_parallelism: i64,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub tensorflow_intra_op_parallelism: i64,
    /// Concurrent model runs (0 = automatic).
    #[arg(long, default_value_t = 0)]
    pub tensorflow_inter_op_parallelism: i64,
    /// Text-format TensorFlow ConfigProto.
    #[arg(long, default_value = "")]
    pub tensorflow_session_config_file: String,
    /// GPU memory fraction (no GPU is used).
    #[arg(long, default_value_t = 0.0)]
    pub per_process_gpu_memory_fraction: f64,
    /// Text-format PlatformConfigMap.
    #[arg(long, default_value = "")]
    pub platform_config_file: String,
    /// Text-format SSLConfig securing gRPC (server_key, server_cert,
    /// custom_ca, client_verify; PEM inline).
    #[arg(long, default_value = "")]
    pub ssl_config_file: String,
    /// Text-format SSLConfig securing the REST API and metrics (ferroserve's
    /// own; without it REST stays plain HTTP, as in TensorFlow Serving).
    #[arg(long, default_value = "")]
    pub rest_api_ssl_config_file: String,
    /// File holding a bearer token every gRPC and REST call except health
    /// and metrics must carry (ferroserve's own).
    #[arg(long, default_value = "")]
    pub auth_token_file: String,
    /// Use ALTS credentials (Google Cloud only).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub use_alts_credentials: bool,
    /// gRPC channel arguments, `k=v,k=v`.
    #[arg(long, default_value = "")]
    pub grpc_channel_arguments: String,
    /// gRPC threads (0 = 4 x cores).
    #[arg(long, default_value_t = 0)]
    pub grpc_max_threads: u32,
    /// Replay assets.extra/tf_serving_warmup_requests before serving a version.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    pub enable_model_warmup: bool,
    /// Times each warmup record is replayed (0 = once).
    #[arg(long, default_value_t = 0)]
    pub num_request_iterations_for_warmup: u32,
    /// Text-format MonitoringConfig.
    #[arg(long, default_value = "")]
    pub monitoring_config_file: String,
    /// Enforce SignatureDef method names.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_signature_method_name_check: bool,
    /// Register the profiler service (no profiler here).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    pub enable_profiler: bool,
    /// Serve grpc.health.v1 (always on in ferroserve).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_grpc_healthcheck_service: bool,
    /// Answer Predict with tensor_content instead of the typed fields.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_serialization_as_tensor_content: bool,
    /// Drop unused fields from the served MetaGraphDef.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    pub remove_unused_fields_from_bundle_metagraph: bool,
    /// Text-format thread-pool factory config.
    #[arg(long, default_value = "")]
    pub thread_pool_factory_config_file: String,
    /// Mixed precision mode (no effect on CPU kernels).
    #[arg(long, default_value = "")]
    pub mixed_precision: String,
    /// Prefer a TFLite model when both exist.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub prefer_tflite_model: bool,
    /// TFLite interpreter pools.
    #[arg(long, default_value_t = 1)]
    pub num_tflite_pools: u32,
    /// TFLite interpreters per pool.
    #[arg(long, default_value_t = 1)]
    pub num_tflite_interpreters_per_pool: u32,
    /// XLA CPU compilation.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub xla_cpu_compilation_enabled: bool,
    /// XLA GPU compilation.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub xla_gpu_compilation_enabled: bool,
    /// Skip TPU initialisation.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub skip_initialize_tpu: bool,
    /// After SIGTERM or SIGINT, seconds to keep accepting requests while
    /// health says NOT_SERVING, so load balancers stop sending traffic.
    #[arg(long, default_value_t = 5)]
    pub shutdown_delay_seconds: u64,
    /// Then, seconds to wait for in-flight requests before exiting anyway.
    #[arg(long, default_value_t = 25)]
    pub shutdown_grace_seconds: u64,
    /// Budget of request bytes held by requests in flight, gRPC and REST
    /// (gzip inflation included); a request past it gets
    /// RESOURCE_EXHAUSTED at once. Default: a quarter of physical memory;
    /// 0 = no budget.
    #[arg(long)]
    pub max_inflight_request_bytes: Option<u64>,
    /// Requests that may wait for a compute thread; past it, UNAVAILABLE
    /// (HTTP 503) at once. 0 = no bound.
    #[arg(long, default_value_t = 1024)]
    pub max_queued_requests: u64,
}

/// Why the flags do not make a runnable configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "Both server_options.model_base_path and server_options.model_config_file are empty!\nTo serve the bundled example model, run:\n  {EXAMPLE_COMMAND}"
    )]
    NoModel,
    #[error("--port=0 turns gRPC off, so --grpc_socket_path is required")]
    NoListener,
    #[error("--model_config_file={path}: {reason}")]
    ModelConfigFile { path: String, reason: String },
    #[error("--{flag}={value}: {reason}")]
    Invalid { flag: &'static str, value: String, reason: String },
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// gRPC TCP port; `None` when gRPC over TCP is off.
    pub grpc_port: Option<u16>,
    /// gRPC's UNIX socket (`--grpc_socket_path`).
    pub grpc_socket_path: Option<PathBuf>,
    /// REST port; `None` when REST is off.
    pub rest_api_port: Option<u16>,
    pub models: Vec<ModelConfig>,
    /// The model config file, when models come from one (re-read every
    /// `config_file_poll` when that is set).
    pub model_config_file: Option<PathBuf>,
    pub config_file_poll: Option<Duration>,
    /// How often base paths are scanned for new versions; `None` = once.
    pub file_system_poll: Option<Duration>,
    pub repository: RepositoryOptions,
    pub rest: crate::rest::RestOptions,
    /// Answer Predict with `tensor_content`.
    pub tensor_content_outputs: bool,
    /// Refuse signatures whose method_name does not fit the call.
    pub method_name_check: bool,
    /// Times each warmup request is replayed; `None` = warmup off.
    pub warmup_iterations: Option<u32>,
    /// Compute threads; 0 = one per core.
    pub compute_threads: usize,
    /// How long the listener keeps accepting after a drain starts.
    pub shutdown_delay: std::time::Duration,
    /// How long in-flight requests may take after that.
    pub shutdown_grace: std::time::Duration,
    /// The largest gRPC message received and sent
    /// (`--grpc_channel_arguments`: `grpc.max_receive_message_length`,
    /// `grpc.max_send_message_length`; -1 = unlimited).
    pub max_receive_bytes: usize,
    pub max_send_bytes: usize,
    /// Channel arguments given but not acted on.
    pub ignored_channel_arguments: Vec<String>,
    /// Budget of request bytes in flight; `None` = no budget.
    pub max_inflight_request_bytes: Option<usize>,
    /// Requests that may wait for compute; 0 = no bound.
    pub max_queued_requests: usize,
    /// TLS for gRPC (`--ssl_config_file`).
    pub grpc_tls: Option<crate::tls::TlsSettings>,
    /// TLS for REST (`--rest_api_ssl_config_file`).
    pub rest_tls: Option<crate::tls::TlsSettings>,
    /// The bearer token (`--auth_token_file`).
    pub auth: Option<crate::auth::BearerToken>,
}

impl Flags {
    /// Flags given a non-default value that this build does not act on yet,
    /// as `(flag, note)`.
    pub fn not_honoured(&self) -> Vec<(&'static str, &'static str)> {
        let defaults = Flags::parse_from(["ferroserve"]);
        let mut out = Vec::new();
        macro_rules! check {
            ($($field:ident => $note:expr),* $(,)?) => {
                $(if self.$field != defaults.$field {
                    out.push((stringify!($field), $note));
                })*
            };
        }
        check!(
            rest_api_num_threads => "ignored: REST requests run on the async runtime and the compute pool",
            enable_batching => "not yet honoured",
            batching_parameters_file => "not yet honoured",
            enable_per_model_batching_parameters => "not yet honoured",
            num_load_threads => "not yet honoured",
            num_unload_threads => "not yet honoured",
            flush_filesystem_caches => "ignored: nothing to flush",
            tensorflow_session_parallelism => "not yet honoured",
            tensorflow_inter_op_parallelism => "not yet honoured",
            tensorflow_session_config_file => "not yet honoured",
            per_process_gpu_memory_fraction => "ignored: no GPU is used",
            platform_config_file => "not yet honoured",
            use_alts_credentials => "not yet honoured",
            grpc_max_threads => "not yet honoured",
            enable_profiler => "ignored: no profiler service",
            enable_grpc_healthcheck_service => "ignored: grpc.health.v1 is always served",
            remove_unused_fields_from_bundle_metagraph => "ignored",
            thread_pool_factory_config_file => "not yet honoured",
            mixed_precision => "ignored: CPU kernels compute in the model's types",
            prefer_tflite_model => "ignored: TFLite is not supported",
            num_tflite_pools => "ignored: TFLite is not supported",
            num_tflite_interpreters_per_pool => "ignored: TFLite is not supported",
            xla_cpu_compilation_enabled => "ignored: no XLA",
            xla_gpu_compilation_enabled => "ignored: no XLA",
            skip_initialize_tpu => "ignored: no TPU",
        );
        out
    }

    /// Checks the flags and builds the [`Config`].
    ///
    /// # Errors
    /// When no model is given, no listener would be open, or a value is out
    /// of range.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        if self.model_base_path.is_empty() && self.model_config_file.is_empty() {
            return Err(ConfigError::NoModel);
        }
        if self.port == 0 && self.grpc_socket_path.is_empty() {
            return Err(ConfigError::NoListener);
        }
        if self.model_name.is_empty() {
            return Err(ConfigError::Invalid {
                flag: "model_name",
                value: String::new(),
                reason: "a model needs a name".into(),
            });
        }
        if self.tensorflow_intra_op_parallelism < 0 {
            return Err(ConfigError::Invalid {
                flag: "tensorflow_intra_op_parallelism",
                value: self.tensorflow_intra_op_parallelism.to_string(),
                reason: "must be 0 (one thread per core) or a positive thread count".into(),
            });
        }
        if self.tensorflow_session_parallelism > 0
            && self.tensorflow_intra_op_parallelism > 0
            && self.tensorflow_inter_op_parallelism > 0
        {
            return Err(ConfigError::Invalid {
                flag: "tensorflow_session_parallelism",
                value: self.tensorflow_session_parallelism.to_string(),
                reason: "cannot be set together with both --tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism".into(),
            });
        }
        let (models, model_config_file) = if self.model_config_file.is_empty() {
            let base_path = PathBuf::from(&self.model_base_path);
            if is_remote(&base_path) {
                return Err(ConfigError::Invalid {
                    flag: "model_base_path",
                    value: self.model_base_path.clone(),
                    reason: REMOTE_PATHS.into(),
                });
            }
            (vec![ModelConfig::new(&self.model_name, base_path)], None)
        } else {
            let path = PathBuf::from(&self.model_config_file);
            (read_model_config_file(&path)?, Some(path))
        };
        let metrics_path = if self.monitoring_config_file.is_empty() {
            Some(crate::rest::METRICS_PATH.to_string())
        } else {
            read_monitoring_config_file(std::path::Path::new(&self.monitoring_config_file))?
        };
        let (max_receive_bytes, max_send_bytes, ignored_channel_arguments) =
            channel_arguments(&self.grpc_channel_arguments)?;
        let tls = |flag: &'static str, path: &str, alpn: &[&[u8]]| -> Result<_, ConfigError> {
            if path.is_empty() {
                return Ok(None);
            }
            crate::tls::TlsSettings::load(std::path::Path::new(path), alpn)
                .map(Some)
                .map_err(|reason| ConfigError::Invalid { flag, value: path.to_string(), reason })
        };
        let grpc_tls = tls("ssl_config_file", &self.ssl_config_file, crate::tls::GRPC_ALPN)?;
        let rest_tls = tls("rest_api_ssl_config_file", &self.rest_api_ssl_config_file, crate::tls::REST_ALPN)?;
        let auth = if self.auth_token_file.is_empty() {
            None
        } else {
            Some(crate::auth::BearerToken::read(std::path::Path::new(&self.auth_token_file)).map_err(|reason| {
                ConfigError::Invalid { flag: "auth_token_file", value: self.auth_token_file.clone(), reason }
            })?)
        };
        let seconds = |s: i64| (s > 0).then(|| Duration::from_secs(s as u64));
        Ok(Config {
            grpc_port: (self.port != 0).then_some(self.port),
            grpc_socket_path: (!self.grpc_socket_path.is_empty()).then(|| PathBuf::from(&self.grpc_socket_path)),
            rest_api_port: (self.rest_api_port != 0).then_some(self.rest_api_port),
            models,
            model_config_file,
            config_file_poll: seconds(self.model_config_file_poll_wait_seconds),
            file_system_poll: seconds(self.file_system_poll_wait_seconds),
            repository: RepositoryOptions {
                allow_labels_for_unavailable: self.allow_version_labels_for_unavailable_models,
                max_load_retries: self.max_num_load_retries,
                load_retry_interval: Duration::from_micros(self.load_retry_interval_micros.max(0) as u64),
                saved_model_tags: self
                    .saved_model_tags
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
            },
            rest: crate::rest::RestOptions {
                cors: self.rest_api_enable_cors_support,
                timeout: (self.rest_api_timeout_in_ms > 0)
                    .then(|| Duration::from_millis(self.rest_api_timeout_in_ms as u64)),
                metrics_path,
            },
            tensor_content_outputs: self.enable_serialization_as_tensor_content,
            method_name_check: self.enable_signature_method_name_check,
            warmup_iterations: self.enable_model_warmup.then_some(self.num_request_iterations_for_warmup.max(1)),
            compute_threads: self.tensorflow_intra_op_parallelism as usize,
            shutdown_delay: std::time::Duration::from_secs(self.shutdown_delay_seconds),
            shutdown_grace: std::time::Duration::from_secs(self.shutdown_grace_seconds),
            max_receive_bytes,
            max_send_bytes,
            ignored_channel_arguments,
            max_inflight_request_bytes: match self.max_inflight_request_bytes {
                None => Some(crate::limits::default_inflight_bytes()),
                Some(0) => None,
                Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            max_queued_requests: usize::try_from(self.max_queued_requests).unwrap_or(usize::MAX),
            grpc_tls,
            rest_tls,
            auth,
        })
    }
}

/// TensorFlow Serving's default (and largest) gRPC message size.
const GRPC_MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// `--grpc_channel_arguments`: comma-separated `name=value` pairs. The
/// message size limits are honoured (-1 = the largest); the other names
/// are returned to be logged as ignored.
fn channel_arguments(text: &str) -> Result<(usize, usize, Vec<String>), ConfigError> {
    let (mut receive, mut send, mut ignored) = (GRPC_MAX_MESSAGE_BYTES, GRPC_MAX_MESSAGE_BYTES, Vec::new());
    let invalid =
        |reason: String| ConfigError::Invalid { flag: "grpc_channel_arguments", value: text.to_string(), reason };
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| invalid(format!("'{pair}' is not name=value")))?;
        let limit = || -> Result<usize, ConfigError> {
            match value.trim().parse::<i64>() {
                Ok(-1) => Ok(GRPC_MAX_MESSAGE_BYTES),
                Ok(n) if n >= 0 => Ok((n as usize).min(GRPC_MAX_MESSAGE_BYTES)),
                _ => Err(invalid(format!("{name} must be a byte count or -1, got '{value}'"))),
            }
        };
        match name.trim() {
            "grpc.max_receive_message_length" => receive = limit()?,
            "grpc.max_send_message_length" => send = limit()?,
            other => ignored.push(other.to_string()),
        }
    }
    Ok((receive, send, ignored))
}

/// Why object-store base paths are refused.
const REMOTE_PATHS: &str = "object-store base paths (gs://, s3://, ...) are not supported: ferroserve reads models from the local file system; mount the bucket (for example with a CSI driver or gcsfuse) and give the mounted path";

/// Parses a text-format `ModelServerConfig` with protobuf's text format,
/// over the descriptors compiled from proto/.
///
/// # Errors
/// With the parser's message (line and column) when the text is not a
/// valid `ModelServerConfig`.
pub fn parse_model_server_config(text: &str) -> Result<ModelServerConfig, String> {
    parse_text_format("tensorflow.serving.ModelServerConfig", text)
}

/// The descriptors compiled from proto/, decoded once: decoding them takes
/// milliseconds, and config files are read every poll.
///
/// # Errors
/// When the embedded descriptor set does not decode (a build fault).
pub fn descriptor_pool() -> Result<&'static DescriptorPool, String> {
    static POOL: std::sync::OnceLock<Result<DescriptorPool, String>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Parses protobuf text format into the message `full_name`, over the
/// descriptors compiled from proto/.
pub fn parse_text_format<T: prost::Message + Default>(full_name: &str, text: &str) -> Result<T, String> {
    let pool = descriptor_pool()?;
    let descriptor = pool.get_message_by_name(full_name).ok_or_else(|| format!("the descriptors lack {full_name}"))?;
    let message = DynamicMessage::parse_text_format(descriptor, text).map_err(|e| e.to_string())?;
    message.transcode_to::<T>().map_err(|e| e.to_string())
}

/// Where the Prometheus page is served, from a text-format
/// `MonitoringConfig` file: `None` when it disables the page.
///
/// # Errors
/// When the file cannot be read or parsed, or its path is not absolute.
pub fn read_monitoring_config_file(path: &std::path::Path) -> Result<Option<String>, ConfigError> {
    let err = |reason: String| ConfigError::Invalid {
        flag: "monitoring_config_file",
        value: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let config: crate::proto::tensorflow::serving::MonitoringConfig =
        parse_text_format("tensorflow.serving.MonitoringConfig", &text)
            .map_err(|e| err(format!("not a text-format MonitoringConfig: {e}")))?;
    let Some(prometheus) = config.prometheus_config.filter(|p| p.enable) else {
        return Ok(None);
    };
    if prometheus.path.is_empty() {
        return Ok(Some(crate::rest::METRICS_PATH.to_string()));
    }
    if !prometheus.path.starts_with('/') {
        return Err(err(format!("prometheus_config.path \"{}\" must be a URL path starting with /", prometheus.path)));
    }
    Ok(Some(prometheus.path))
}

/// The models of a `ModelServerConfig`, checked with TensorFlow Serving's
/// rules and messages (used for the config file and for
/// HandleReloadConfigRequest).
///
/// # Errors
/// For a custom config, a repeated name, a relative or object-store base
/// path, or a missing or unknown platform.
pub fn model_configs(config: &ModelServerConfig) -> Result<Vec<ModelConfig>, String> {
    let list = match &config.config {
        Some(model_server_config::Config::ModelConfigList(list)) => list,
        Some(model_server_config::Config::CustomModelConfig(_)) => {
            return Err("ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported".into());
        }
        // An empty config serves no model, as in TensorFlow Serving.
        None => return Ok(Vec::new()),
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(list.config.len());
    for m in &list.config {
        if !seen.insert(m.name.as_str()) {
            return Err(format!("Illegal to list model {} multiple times in config list", m.name));
        }
        if m.name.is_empty() {
            return Err("a model in the config list has no name".into());
        }
        let base_path = PathBuf::from(&m.base_path);
        if is_remote(&base_path) {
            return Err(format!("model {}: base_path {}: {REMOTE_PATHS}", m.name, m.base_path));
        }
        if !base_path.is_absolute() {
            return Err(format!(
                "Expected model {} to have an absolute path or URI; got base_path()={}",
                m.name, m.base_path
            ));
        }
        // model_type is deprecated upstream, but old configs still set it.
        #[allow(deprecated)]
        let model_type = m.model_type;
        let platform = match (model_type, m.model_platform.as_str()) {
            (0, "") => return Err("Illegal setting neither model_type (deprecated) nor model_platform.".into()),
            (0, p) => p.to_string(),
            (_, "") => "tensorflow".to_string(),
            (_, _) => return Err("Illegal setting both model_type (deprecated) and model_platform.".into()),
        };
        if !matches!(platform.as_str(), "tensorflow" | "onnx") {
            return Err(format!(
                "Model {} requested unsupported platform {platform}; ferroserve serves the platforms tensorflow and onnx",
                m.name
            ));
        }
        let policy = match m.model_version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
            None => VersionPolicy::default(),
            Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions),
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => VersionPolicy::Specific(s.versions.iter().copied().collect()),
        };
        out.push(ModelConfig {
            name: m.name.clone(),
            base_path,
            policy,
            labels: m.version_labels.iter().map(|(k, v)| (k.clone(), *v)).collect::<BTreeMap<_, _>>(),
            platform,
        });
    }
    Ok(out)
}

/// Reads and checks a model config file.
///
/// # Errors
/// When the file cannot be read, parsed or checked; the message names the
/// file.
pub fn read_model_config_file(path: &std::path::Path) -> Result<Vec<ModelConfig>, ConfigError> {
    let err = |reason: String| ConfigError::ModelConfigFile { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let parsed =
        parse_model_server_config(&text).map_err(|e| err(format!("not a text-format ModelServerConfig: {e}")))?;
    model_configs(&parsed).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(std::iter::once("ferroserve").chain(args.iter().copied()))
    }

    #[test]
    fn tensorflow_flag_syntax_is_accepted() {
        let f = parse(&[
            "--port=9000",
            "--rest_api_port",
            "9001",
            "--model_name=m",
            "--model_base_path",
            "/models/m",
            "--enable_batching",
            "--enable_model_warmup=false",
            "--file_system_poll_wait_seconds=-1",
        ])
        .unwrap();
        assert_eq!((f.port, f.rest_api_port), (9000, 9001));
        assert!(f.enable_batching);
        assert!(!f.enable_model_warmup);
        assert_eq!(f.file_system_poll_wait_seconds, -1);
        let c = f.validate().unwrap();
        assert_eq!(c.grpc_port, Some(9000));
        assert_eq!(c.models[0].name, "m");
    }

    #[test]
    fn defaults_are_tensorflow_servings() {
        let f = parse(&[]).unwrap();
        assert_eq!((f.port, f.rest_api_port), (8500, 0));
        assert_eq!(f.model_name, "default");
        assert_eq!(f.file_system_poll_wait_seconds, 1);
        assert!(f.enable_model_warmup);
        assert_eq!(f.rest_api_timeout_in_ms, 30000);
        assert!(f.not_honoured().is_empty());
    }

    #[test]
    fn saved_model_tags_are_a_comma_separated_set() {
        let c = parse(&["--model_base_path=/m"]).unwrap().validate().unwrap();
        assert_eq!(c.repository.saved_model_tags, ["serve"]);
        let f = parse(&["--model_base_path=/m", "--saved_model_tags=serve, tpu"]).unwrap();
        assert!(f.not_honoured().is_empty(), "the flag is honoured");
        assert_eq!(f.validate().unwrap().repository.saved_model_tags, ["serve", "tpu"]);
    }

    #[test]
    fn grpc_message_limits_come_from_the_channel_arguments() {
        let c = parse(&["--model_base_path=/m"]).unwrap().validate().unwrap();
        assert_eq!((c.max_receive_bytes, c.max_send_bytes), (GRPC_MAX_MESSAGE_BYTES, GRPC_MAX_MESSAGE_BYTES));
        let f = parse(&[
            "--model_base_path=/m",
            "--grpc_channel_arguments=grpc.max_receive_message_length=1000, grpc.max_send_message_length=-1,grpc.max_connection_age_ms=5",
        ])
        .unwrap();
        assert!(f.not_honoured().is_empty());
        let c = f.validate().unwrap();
        assert_eq!((c.max_receive_bytes, c.max_send_bytes), (1000, GRPC_MAX_MESSAGE_BYTES));
        assert_eq!(c.ignored_channel_arguments, ["grpc.max_connection_age_ms"]);
        let err = parse(&["--model_base_path=/m", "--grpc_channel_arguments=grpc.max_receive_message_length=big"])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc.max_receive_message_length must be a byte count"), "{err}");
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let f = parse(&["--port=1", "--port=2", "--enable_batching=true", "--enable_batching=false"]).unwrap();
        assert_eq!(f.port, 2);
        assert!(!f.enable_batching);
    }

    #[test]
    fn bad_flags_and_values_are_named() {
        let err = parse(&["--no_such_flag=1"]).unwrap_err().to_string();
        assert!(err.contains("--no_such_flag"), "{err}");
        let err = parse(&["--port=eighty"]).unwrap_err().to_string();
        assert!(err.contains("--port"), "{err}");
        let err = parse(&["--enable_batching=maybe"]).unwrap_err().to_string();
        assert!(err.contains("--enable_batching"), "{err}");
    }

    #[test]
    fn no_model_shows_the_example_command() {
        let err = parse(&[]).unwrap().validate().unwrap_err().to_string();
        assert!(err.starts_with("Both server_options.model_base_path and server_options.model_config_file are empty!"));
        assert!(err.contains(EXAMPLE_COMMAND));
        let err = parse(&["--port=0", "--model_base_path=/m"]).unwrap().validate().unwrap_err();
        assert_eq!(err, ConfigError::NoListener);
    }

    #[test]
    fn unhonoured_flags_are_listed() {
        let f = parse(&["--model_base_path=/m", "--enable_batching", "--xla_cpu_compilation_enabled=true"]).unwrap();
        let names: Vec<&str> = f.not_honoured().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["enable_batching", "xla_cpu_compilation_enabled"]);
    }

    #[test]
    fn model_config_files_parse_with_protobufs_text_format() {
        let text = "model_config_list {
            config { name: 'a' base_path: '/models/a' model_platform: 'tensorflow'
                     model_version_policy { latest { num_versions: 2 } } }
            config { name: \"b\" base_path: \"/models/b\" model_platform: \"onnx\"
                     model_version_policy { specific { versions: 42 versions: 43 } }
                     version_labels { key: 'stable' value: 42 } }
            config { name: 'c' base_path: '/models/c' model_type: TENSORFLOW model_version_policy { all {} } }
        }";
        let models = model_configs(&parse_model_server_config(text).unwrap()).unwrap();
        assert_eq!(models.len(), 3);
        assert_eq!(models[0].policy, VersionPolicy::Latest(2));
        assert_eq!(models[1].policy, VersionPolicy::Specific([42, 43].into()));
        assert_eq!(models[1].labels, BTreeMap::from([("stable".to_string(), 42)]));
        assert_eq!((models[2].policy.clone(), models[2].platform.as_str()), (VersionPolicy::All, "tensorflow"));
        assert_eq!(models[0].base_path, PathBuf::from("/models/a"));
    }

    #[test]
    fn bad_model_configs_get_tensorflow_servings_messages() {
        let check = |text: &str, expected: &str| {
            let err = match parse_model_server_config(text) {
                Ok(parsed) => model_configs(&parsed).unwrap_err(),
                Err(e) => e,
            };
            assert!(err.contains(expected), "{text}: {err}");
        };
        check(
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } config { name: 'a' base_path: '/b' model_platform: 'onnx' } }",
            "Illegal to list model a multiple times in config list",
        );
        check(
            "model_config_list { config { name: 'a' base_path: 'rel/a' model_platform: 'onnx' } }",
            "Expected model a to have an absolute path or URI; got base_path()=rel/a",
        );
        check(
            "model_config_list { config { name: 'a' base_path: '/a' } }",
            "Illegal setting neither model_type (deprecated) nor model_platform.",
        );
        check(
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }",
            "unsupported platform pytorch",
        );
        check(
            "model_config_list { config { name: 'a' base_path: 's3://bucket/a' model_platform: 'onnx' } }",
            "not supported",
        );
        check("model_config_list { config { nmae: 'a' } }", "nmae");
        check("custom_model_config { type_url: 'x' }", "Only ModelConfigList is currently supported");
    }

    #[test]
    fn the_model_config_file_flag_reads_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("ferroserve-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("models.config");
        std::fs::write(
            &file,
            "model_config_list { config { name: 'm' base_path: '/models/m' model_platform: 'onnx' } }",
        )
        .unwrap();
        let flag = format!("--model_config_file={}", file.display());
        let config = parse(&[&flag, "--model_config_file_poll_wait_seconds=30"]).unwrap().validate().unwrap();
        assert_eq!(config.models[0].name, "m");
        assert_eq!(config.config_file_poll, Some(Duration::from_secs(30)));
        std::fs::write(&file, "model_config_list { config { name: 'm' ").unwrap();
        let err = parse(&[&flag]).unwrap().validate().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--model_config_file={}: not a text-format ModelServerConfig", file.display())),
            "{err}"
        );
        let err = parse(&["--model_base_path=gs://bucket/m"]).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_monitoring_config_file_sets_or_disables_the_metrics_path() {
        let dir = std::env::temp_dir().join(format!("ferroserve-monitoring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("monitoring.config");
        let flag = format!("--monitoring_config_file={}", file.display());
        let path_for = |text: &str| {
            std::fs::write(&file, text).unwrap();
            parse(&["--model_base_path=/m", &flag]).unwrap().validate().map(|c| c.rest.metrics_path)
        };
        let default = parse(&["--model_base_path=/m"]).unwrap().validate().unwrap().rest.metrics_path;
        assert_eq!(default.as_deref(), Some("/monitoring/prometheus/metrics"), "on by default");
        assert_eq!(
            path_for("prometheus_config { enable: true, path: '/metrics' }").unwrap().as_deref(),
            Some("/metrics")
        );
        assert_eq!(
            path_for("prometheus_config { enable: true }").unwrap().as_deref(),
            Some("/monitoring/prometheus/metrics")
        );
        assert_eq!(path_for("prometheus_config { enable: false, path: '/metrics' }").unwrap(), None);
        assert_eq!(path_for("").unwrap(), None, "a file without prometheus_config turns the page off");
        let err = path_for("prometheus_config { enable: true, path: 'metrics' }").unwrap_err().to_string();
        assert!(err.contains("must be a URL path starting with /"), "{err}");
        let err = path_for("prometheus_config { enabled: true }").unwrap_err().to_string();
        assert!(err.starts_with(&format!("{flag}: not a text-format MonitoringConfig")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = parse(&["--model_base_path=/m", &flag]).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("cannot read it"), "{err}");
    }
}
