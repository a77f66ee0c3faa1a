//! ferroserve: a model server that speaks TensorFlow Serving's API and runs
//! conv/dense/recurrent networks on its own CPU kernels.
//!
//! # Layout
//!
//! - [`config`]: the command line, with TensorFlow Serving's flag names,
//!   validated into a [`config::Config`] before any socket opens.
//! - [`proto`]: the code generated from `proto/`, and nothing else.
//! - [`error`]: [`error::ServeError`], the one place where errors become
//!   gRPC status codes (and HTTP codes).
//! - [`tensor`]: the in-memory tensor and its TensorProto conversions.
//! - [`graph`]: the framework-neutral model IR.
//! - [`onnx`]: ONNX `ModelProto` to graph.
//! - [`kernels`]: the kernel registry and the operators.
//! - [`runtime`]: a graph as an execution plan.
//! - [`compute`]: the compute thread pool and its bridge from async code.
//! - [`limits`]: the budget of request bytes in flight.
//! - [`tls`]: TLS from TensorFlow Serving's `SSLConfig`, for both front ends.
//! - [`auth`]: bearer-token authentication (`--auth_token_file`).
//! - [`uds`]: gRPC on a UNIX socket, with the `:authority` fix clients need.
//! - [`servable`]: a loaded model version: signatures, input validation,
//!   prediction.
//! - [`inference`]: Classify, Regress and MultiInference: examples to
//!   input tensors, outputs to classes and values.
//! - [`metrics`]: counters and histograms under TF Serving's metric names,
//!   rendered for Prometheus.
//! - [`repository`]: models on disk, their versions and states.
//! - [`tfrecord`]: TensorFlow's TFRecord container and masked CRC32C.
//! - [`rest`]: TensorFlow Serving's REST API on axum, converting JSON to
//!   tensors and back around the same prediction path.
//! - [`service`]: the tonic services (PredictionService, ModelService,
//!   health, reflection) and the server's serve loop.

pub mod auth;
pub mod compute;
pub mod config;
pub mod error;
pub mod graph;
pub mod inference;
pub mod kernels;
pub mod limits;
pub mod metrics;
pub mod onnx;
pub mod proto;
pub mod repository;
pub mod rest;
pub mod runtime;
pub mod savedmodel;
pub mod servable;
pub mod service;
pub mod tensor;
pub mod tfrecord;
pub mod tls;
pub mod uds;
