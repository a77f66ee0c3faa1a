//! Whole models through the importer, the planner and the kernels, against
//! onnxruntime's outputs recorded by scripts/make_fixtures.py: the example
//! model, the two benchmark CNN shapes, an MLP with old-style initializer
//! inputs, and a transposed Gemm.

use std::path::Path;

use prost::Message;

use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::onnx::TensorProto;
use ferroserve::runtime::Plan;
use ferroserve::tensor::Tensor;

fn read_tensor(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ferroserve::onnx::tensor_from_onnx(&TensorProto::decode(bytes.as_slice()).unwrap()).unwrap()
}

/// Asserts closeness at the project's tolerance: rtol 1e-4, atol 1e-5.
fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: element counts differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "{what}: element {i}: got {a}, expected {e}");
    }
}

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx").join(name);
    let graph = ferroserve::onnx::load_file(&dir.join("model.onnx")).unwrap();
    assert_eq!(graph.inputs.len(), 1, "{name}: initializers must not count as inputs");
    let (input, output) = (graph.inputs[0], graph.outputs[0]);
    let plan = Plan::new(graph, &KernelRegistry::with_all_ops()).unwrap();
    let x = read_tensor(&dir.join("input_0.pb"));
    let expected = read_tensor(&dir.join("output_0.pb"));
    let got = plan.run(vec![(input, x)], &[output]).unwrap();
    assert_eq!(got[0].shape(), expected.shape(), "{name}: output shape");
    assert_close(got[0].as_f32().unwrap(), expected.as_f32().unwrap(), name);
}

#[test]
fn mnist_cnn_matches_onnxruntime() {
    check("mnist_cnn");
}

#[test]
fn cnn_small_matches_onnxruntime() {
    check("cnn_small");
}

#[test]
fn matmul_mlp_with_initializer_inputs_matches_onnxruntime() {
    check("matmul_mlp");
}

#[test]
fn gemm_with_transposed_b_matches_onnxruntime() {
    check("gemm_trans");
}

#[test]
fn example_model_matches_onnxruntime_on_every_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("tests/fixtures/mnist_reference.json")).unwrap()).unwrap();
    let graph = ferroserve::onnx::load_file(&root.join("examples/models/mnist/1/model.onnx")).unwrap();
    let (input, output) = (graph.inputs[0], graph.outputs[0]);
    let plan = Plan::new(graph, &KernelRegistry::with_all_ops()).unwrap();
    let cases = fixtures["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let floats = |key: &str| -> Vec<f32> {
            case[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
        };
        let shape: Vec<usize> =
            case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let x = Tensor::from_f32(shape.clone(), floats("input")).unwrap();
        let got = plan.run(vec![(input, x)], &[output]).unwrap();
        assert_eq!(got[0].shape(), &[shape[0], 10]);
        assert_close(got[0].as_f32().unwrap(), &floats("probabilities"), &case["file"].to_string());
    }
}
