//! Compiles proto/ into Rust without protoc: protox parses the .proto files
//! into a FileDescriptorSet, tonic-prost-build generates messages and gRPC
//! stubs from it, and the encoded set is kept for server reflection and the
//! wire-contract test.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;

/// The roots whose import closure ferroserve compiles.
const ROOTS: &[&str] = &[
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
    "tensorflow_serving/apis/prediction_log.proto",
    "tensorflow_serving/apis/session_service.proto",
    "tensorflow_serving/config/model_server_config.proto",
    "tensorflow_serving/config/platform_config.proto",
    "tensorflow_serving/config/monitoring_config.proto",
    "tensorflow_serving/config/ssl_config.proto",
    "tensorflow/core/protobuf/saved_model.proto",
    "tensorflow/core/protobuf/tensor_bundle.proto",
    "tensorflow/core/protobuf/config.proto",
    "onnx/onnx.proto",
];

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut files = Vec::new();
    proto_files(Path::new("proto"), &mut files)?;
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(ROOTS, ["proto"]).context("compiling proto/ with protox")?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ferroserve_descriptor.binpb"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Large tensors arrive as tensor_content; Bytes lets the decoder
        // slice the request buffer instead of copying it.
        .bytes(".tensorflow.TensorProto.tensor_content")
        .include_file("ferroserve_protos.rs")
        .compile_fds(fds)
        .context("generating Rust code from the descriptors")?;
    Ok(())
}
