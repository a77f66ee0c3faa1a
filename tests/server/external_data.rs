//! ONNX models whose weights live in a file next to `model.onnx`
//! (`onnx.save(..., save_as_external_data=True)`): read from the version
//! directory, and refused with a clear message when the location leaves it
//! or the file is short.

use prost::Message;

use crate::harness::{temp_dir, value_info};
use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::onnx as pb;
use ferroserve::servable::Servable;
use ferroserve::tensor::Tensor;

/// Writes version 1: y = x · w, w [2, 2] stored at `offset` of `location`.
fn write(dir: &std::path::Path, location: &str, offset: usize, file_len: usize) -> std::path::PathBuf {
    let version = dir.join("1");
    std::fs::create_dir_all(&version).unwrap();
    let float = pb::tensor_proto::DataType::Float as i32;
    let entry = |k: &str, v: String| pb::StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    let weight = pb::TensorProto {
        name: Some("w".into()),
        dims: vec![2, 2],
        data_type: Some(float),
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", "16".into()),
        ],
        ..Default::default()
    };
    let mut bytes = vec![0u8; offset];
    bytes.extend([1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()));
    bytes.truncate(file_len);
    std::fs::write(version.join("weights.bin"), bytes).unwrap();
    let graph = pb::GraphProto {
        node: vec![pb::NodeProto {
            op_type: Some("MatMul".into()),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        initializer: vec![weight],
        input: vec![value_info("x", float, &[None, Some(2)])],
        output: vec![value_info("y", float, &[None, Some(2)])],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    };
    let path = version.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

fn load(path: &std::path::Path) -> Result<Servable, String> {
    Servable::load_onnx("m", 1, path, &KernelRegistry::with_all_ops()).map_err(|e| e.to_string())
}

#[test]
fn weights_in_an_external_file_are_read_from_the_version_directory() {
    let dir = temp_dir("external-data");
    let servable = load(&write(&dir, "weights.bin", 8, usize::MAX)).expect("loads");
    let x = Tensor::from_f32(vec![1, 2], vec![1.0, 1.0]).unwrap();
    let spec = &servable.signatures["serving_default"];
    let y = servable.run(vec![(spec.inputs["x"].value, x)], &[spec.outputs["y"].value]).unwrap();
    assert_eq!(y[0].as_f32().unwrap(), &[4.0, 6.0]);

    let err = load(&write(&dir, "../weights.bin", 0, usize::MAX)).unwrap_err();
    assert!(
        err.contains("external data location '../weights.bin' must be a file name inside the model's directory"),
        "{err}"
    );
    let err = load(&write(&dir, "weights.bin", 8, 20)).unwrap_err();
    assert!(err.contains("holds 20 bytes, but the tensor is at bytes 8..24"), "{err}");
    let err = load(&write(&dir, "missing.bin", 0, usize::MAX)).unwrap_err();
    assert!(err.contains("cannot read external data"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
