//! Loop and If through the loader and the runtime: subgraphs that read the
//! enclosing graph's values (weights and inputs), loop-carried values and
//! stacked scan outputs, as exporters write them for recurrent layers
//! (tf2onnx's while loops) and data-dependent branches.

use prost::Message;

use crate::harness::{temp_dir, value_info};
use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::onnx as pb;
use ferroserve::servable::Servable;
use ferroserve::tensor::{Tensor, TensorData};

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn graph_attr(name: &str, g: pb::GraphProto) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;
const BOOL: i32 = pb::tensor_proto::DataType::Bool as i32;

/// acc = x; repeat n times: acc = acc + w (w an outer weight), scan acc * x.
/// Then: if flag, out = acc - x, else out = acc + w.
fn write_model(dir: &std::path::Path) -> std::path::PathBuf {
    let body = pb::GraphProto {
        node: vec![
            // Loop has no cond input, so this output must be ignored.
            node("Not", &["cond_in"], &["cond_out"], vec![]),
            node("Add", &["acc_in", "w"], &["acc_out"], vec![]),
            node("Mul", &["acc_out", "x"], &["scan"], vec![]),
        ],
        input: vec![
            value_info("i", INT64, &[]),
            value_info("cond_in", BOOL, &[]),
            value_info("acc_in", FLOAT, &[Some(2)]),
        ],
        output: vec![
            value_info("cond_out", BOOL, &[]),
            value_info("acc_out", FLOAT, &[Some(2)]),
            value_info("scan", FLOAT, &[Some(2)]),
        ],
        ..Default::default()
    };
    let then_branch = pb::GraphProto {
        node: vec![node("Sub", &["acc", "x"], &["then_out"], vec![])],
        output: vec![value_info("then_out", FLOAT, &[Some(2)])],
        ..Default::default()
    };
    let else_branch = pb::GraphProto {
        node: vec![node("Add", &["acc", "w"], &["else_out"], vec![])],
        output: vec![value_info("else_out", FLOAT, &[Some(2)])],
        ..Default::default()
    };
    let weight = pb::TensorProto {
        name: Some("w".into()),
        dims: vec![2],
        data_type: Some(FLOAT),
        float_data: vec![10.0, 20.0],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        node: vec![
            node("Loop", &["n", "", "x"], &["acc", "scans"], vec![graph_attr("body", body)]),
            node(
                "If",
                &["flag"],
                &["out"],
                vec![graph_attr("then_branch", then_branch), graph_attr("else_branch", else_branch)],
            ),
        ],
        initializer: vec![weight],
        input: vec![value_info("x", FLOAT, &[Some(2)]), value_info("n", INT64, &[]), value_info("flag", BOOL, &[])],
        output: vec![
            value_info("acc", FLOAT, &[Some(2)]),
            value_info("scans", FLOAT, &[Some(-1), Some(2)]),
            value_info("out", FLOAT, &[Some(2)]),
        ],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    };
    std::fs::create_dir_all(dir.join("1")).unwrap();
    let path = dir.join("1/model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

#[test]
fn loops_and_branches_read_outer_values_carry_state_and_stack_scans() {
    let dir = temp_dir("control-flow");
    let servable = Servable::load_onnx("cf", 1, &write_model(&dir), &KernelRegistry::with_all_ops()).expect("loads");
    let sig = &servable.signatures["serving_default"];
    let run = |n: i64, flag: bool| {
        let feeds = vec![
            (sig.inputs["x"].value, Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap()),
            (sig.inputs["n"].value, Tensor::from_i64(vec![], vec![n]).unwrap()),
            (sig.inputs["flag"].value, Tensor::new(vec![], TensorData::Bool(vec![flag])).unwrap()),
        ];
        let fetches = [sig.outputs["acc"].value, sig.outputs["scans"].value, sig.outputs["out"].value];
        servable.run(feeds, &fetches)
    };
    let out = run(3, true).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[31.0, 62.0]);
    assert_eq!(out[1].shape(), &[3, 2]);
    assert_eq!(out[1].as_f32().unwrap(), &[11.0, 44.0, 21.0, 84.0, 31.0, 124.0]);
    assert_eq!(out[2].as_f32().unwrap(), &[30.0, 60.0], "then: acc - x");
    let out = run(1, false).unwrap();
    assert_eq!(out[2].as_f32().unwrap(), &[21.0, 42.0], "else: acc + w");
    let out = run(0, false).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[1.0, 2.0], "no iterations: the initial value");
    assert_eq!(out[1].shape()[0], 0);
    let _ = std::fs::remove_dir_all(dir);
}
