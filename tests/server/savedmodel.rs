//! The TensorBundle reader on the bundled SavedModel's real checkpoint,
//! against what TensorFlow's own checkpoint reader recorded in
//! tests/fixtures/mnist_savedmodel_variables.json; and a corrupted copy
//! of it.

use std::path::Path;

use crate::harness::{root, temp_dir};
use ferroserve::savedmodel::bundle::Bundle;
use ferroserve::tensor::DataType;

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/mnist_savedmodel_variables.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_bundled_checkpoint_reads_as_tensorflow_reads_it() {
    let fixture = fixture();
    let bundle = Bundle::open(&root().join("examples/models/mnist_savedmodel/1/variables/variables")).unwrap();
    let expected = fixture["variables"].as_object().unwrap();
    let keys: Vec<&str> = bundle.keys().collect();
    let mut want: Vec<&str> = expected.keys().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(keys, want);
    for (key, info) in expected {
        let t = bundle.read(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let shape: Vec<usize> =
            info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape(), shape.as_slice(), "{key}");
        if info["dtype"] == "string" {
            assert_eq!(t.dtype(), DataType::String, "{key}");
            assert!(!t.as_strings().unwrap()[0].is_empty(), "{key}: the object graph is there");
            continue;
        }
        assert_eq!(info["dtype"], "float32", "{key}");
        let v = t.as_f32().unwrap();
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let squares: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((sum - info["sum"].as_f64().unwrap()).abs() < 1e-9 * v.len() as f64, "{key}: sum {sum}");
        assert!((squares - info["sum_of_squares"].as_f64().unwrap()).abs() < 1e-9 * v.len() as f64, "{key}");
        for (got, want) in v.iter().zip(info["first"].as_array().unwrap()) {
            assert_eq!(*got, want.as_f64().unwrap() as f32, "{key}");
        }
    }
    // Keras stores every weight twice; the copies agree.
    for i in 0..4 {
        let a = bundle.read(&format!("variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")).unwrap();
        let b = bundle.read(&format!("_all_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")).unwrap();
        assert_eq!(a, b);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_corrupted_checkpoint_is_refused_naming_the_file() {
    let dir = temp_dir("savedmodel-corrupt");
    copy_dir(&root().join("examples/models/mnist_savedmodel/1"), &dir);
    let prefix = dir.join("variables/variables");
    let data = dir.join("variables/variables.data-00000-of-00001");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0x01; // inside the conv kernel
    std::fs::write(&data, &bytes).unwrap();
    let bundle = Bundle::open(&prefix).unwrap();
    let err = bundle.read("variables/0/.ATTRIBUTES/VARIABLE_VALUE").unwrap_err().to_string();
    assert!(err.contains("variables.data-00000-of-00001") && err.contains("fail their CRC32C check"), "{err}");
    assert!(bundle.read("variables/1/.ATTRIBUTES/VARIABLE_VALUE").is_ok(), "other tensors still read");

    let index = dir.join("variables/variables.index");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&index, &bytes).unwrap();
    let err = Bundle::open(&prefix).unwrap_err().to_string();
    assert!(err.contains("variables.index") && err.contains("fails its CRC32C check"), "{err}");
    std::fs::write(&index, &bytes[..300]).unwrap();
    let err = Bundle::open(&prefix).unwrap_err().to_string();
    assert!(err.contains("variables.index") && err.contains("magic number"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_serving_signature_and_its_captured_variables_resolve_through_the_object_graphs() {
    use ferroserve::proto::tensorflow::tensor_info;
    use ferroserve::savedmodel::meta::{call_site, checkpoint_object_graph, read_saved_model, select_meta_graph};

    let dir = root().join("examples/models/mnist_savedmodel/1");
    let model = read_saved_model(&dir).unwrap();
    let err = select_meta_graph(model.clone(), &["serve".into(), "gpu".into()], &dir).unwrap_err().to_string();
    assert!(
        err.contains("Could not find meta graph def matching supplied tags: { gpu serve }")
            && err.contains("{ serve }"),
        "{err}"
    );
    let meta = select_meta_graph(model, &["serve".into()], &dir).unwrap();

    // The signature as TensorFlow recorded it.
    let fixture = fixture();
    let want = &fixture["signature"];
    let signature = &meta.signature_def["serving_default"];
    assert_eq!(signature.method_name, want["method_name"].as_str().unwrap());
    for (side, map) in [("inputs", &signature.inputs), ("outputs", &signature.outputs)] {
        let want = want[side].as_object().unwrap();
        assert_eq!(map.len(), want.len(), "{side}");
        for (alias, info) in want {
            let got = &map[alias];
            assert_eq!(
                got.encoding,
                Some(tensor_info::Encoding::Name(info["name"].as_str().unwrap().into())),
                "{alias}"
            );
            let dims: Vec<i64> = got.tensor_shape.as_ref().unwrap().dim.iter().map(|d| d.size).collect();
            let want_dims: Vec<i64> = info["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
            assert_eq!(dims, want_dims, "{alias}");
        }
    }

    // The call behind it captures the four weights, found by key, not name.
    let bundle = Bundle::open(&dir.join("variables/variables")).unwrap();
    let objects = checkpoint_object_graph(&bundle, &dir).unwrap();
    let call = call_site(&meta, &objects, "serving_default", &dir).unwrap();
    assert_eq!(call.node, "StatefulPartitionedCall");
    assert!(call.function.starts_with("__inference_signature_wrapper"), "{}", call.function);
    assert_eq!(call.captures.len(), 4, "{:?}", call.captures);
    assert_eq!(call.inputs.len(), 1 + call.captures.len(), "the image, then the captures");
    let shapes: Vec<Vec<usize>> = call
        .captures
        .iter()
        .map(|c| match c {
            ferroserve::savedmodel::meta::Capture::Variable(k) => bundle.read(k).unwrap().shape().to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(shapes, [vec![3, 3, 1, 32], vec![32], vec![5408, 10], vec![10]]);
    assert!(call_site(&meta, &objects, "nope", &dir).unwrap_err().to_string().contains("no signature 'nope'"));
}

#[test]
fn a_text_format_saved_model_reads_as_the_binary_one() {
    use ferroserve::savedmodel::meta::read_saved_model;
    use prost::Message;

    let binary = read_saved_model(&root().join("examples/models/mnist_savedmodel/1")).unwrap();
    let pool = prost_reflect::DescriptorPool::decode(ferroserve::proto::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name("tensorflow.SavedModel").unwrap();
    let dynamic = prost_reflect::DynamicMessage::decode(descriptor, binary.encode_to_vec().as_slice()).unwrap();
    let dir = temp_dir("savedmodel-pbtxt");
    std::fs::write(dir.join("saved_model.pbtxt"), dynamic.to_text_format()).unwrap();
    assert_eq!(read_saved_model(&dir).unwrap(), binary);
    std::fs::write(dir.join("saved_model.pbtxt"), "meta_graphs { nonsense: 1 }").unwrap();
    let err = read_saved_model(&dir).unwrap_err().to_string();
    assert!(err.contains("saved_model.pbtxt") && err.contains("not a text-format SavedModel"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

fn saved_model_config() -> ferroserve::repository::ModelConfig {
    ferroserve::repository::ModelConfig::new("mnist_savedmodel", root().join("examples/models/mnist_savedmodel"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_saved_model_answers_as_its_onnx_twin_and_as_tensorflow() {
    use crate::harness::{TestServer, assert_close, cases, example_model, predict_request, spec};
    use ferroserve::proto::tensorflow::serving::PredictRequest;

    let server = TestServer::start_with(vec![example_model(), saved_model_config()], std::time::Duration::ZERO).await;
    let mut client = server.prediction().await;
    for case in cases() {
        let onnx = client.predict(predict_request(&case)).await.unwrap().into_inner();
        let request = PredictRequest { model_spec: spec("mnist_savedmodel"), ..predict_request(&case) };
        let saved = client.predict(request).await.unwrap().into_inner();
        let value = |r: &ferroserve::proto::tensorflow::serving::PredictResponse| {
            ferroserve::tensor::proto::from_proto(&r.outputs["probabilities"]).unwrap()
        };
        let (a, b) = (value(&onnx), value(&saved));
        assert_eq!(a.shape(), b.shape());
        assert_close(b.as_f32().unwrap(), a.as_f32().unwrap());
        assert_close(b.as_f32().unwrap(), &case.probabilities);
        assert_eq!(saved.model_spec.unwrap().signature_name, "serving_default");
    }
    // TensorFlow's own outputs, recorded when the SavedModel was exported.
    let fixture = fixture();
    for (digit, want) in fixture["predictions"].as_object().unwrap() {
        let png = root().join(format!("examples/digits/{digit}.png"));
        let pixels = image_pixels(&png);
        let request = PredictRequest {
            model_spec: spec("mnist_savedmodel"),
            inputs: [("image".to_string(), crate::harness::float_tensor(&[1, 28, 28, 1], pixels))].into(),
            ..PredictRequest::default()
        };
        let got = client.predict(request).await.unwrap().into_inner();
        let got = ferroserve::tensor::proto::from_proto(&got.outputs["probabilities"]).unwrap();
        let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_close(got.as_f32().unwrap(), &want);
    }
    server.stop().await;
}

/// A digit PNG as the model's input: pixel / 255, row-major.
fn image_pixels(path: &Path) -> Vec<f32> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (28, 28));
    buf[..28 * 28].iter().map(|&p| f32::from(p) / 255.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_every_signature_def_as_saved_model_cli_shows_it() {
    use crate::harness::{TestServer, spec};
    use ferroserve::proto::tensorflow::serving::{GetModelMetadataRequest, SignatureDefMap};
    use ferroserve::proto::tensorflow::tensor_info;
    use prost::Message;

    let server = TestServer::start_with(vec![saved_model_config()], std::time::Duration::ZERO).await;
    let mut client = server.prediction().await;
    let response = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: spec("mnist_savedmodel"),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let map = SignatureDefMap::decode(response.metadata["signature_def"].value.as_slice()).unwrap();
    let model =
        ferroserve::savedmodel::meta::read_saved_model(&root().join("examples/models/mnist_savedmodel/1")).unwrap();
    let stored = &model.meta_graphs[0].signature_def;
    let mut keys: Vec<&String> = map.signature_def.keys().collect();
    keys.sort();
    let mut want: Vec<&String> = stored.keys().collect();
    want.sort();
    assert_eq!(keys, want, "every SignatureDef, __saved_model_init_op included");
    for (key, def) in stored {
        let got = &map.signature_def[key];
        assert_eq!(got.method_name, def.method_name, "{key}");
        for (side, got, def) in [("inputs", &got.inputs, &def.inputs), ("outputs", &got.outputs, &def.outputs)] {
            assert_eq!(got.len(), def.len(), "{key} {side}");
            for (alias, info) in def {
                let g = &got[alias];
                assert_eq!(g.encoding, info.encoding, "{key} {alias}");
                assert_eq!(g.dtype, info.dtype, "{key} {alias}");
                assert_eq!(g.tensor_shape, info.tensor_shape, "{key} {alias}");
            }
        }
    }
    let init = &map.signature_def["__saved_model_init_op"].outputs["__saved_model_init_op"];
    assert_eq!(init.encoding, Some(tensor_info::Encoding::Name("NoOp".into())));
    assert_eq!(init.dtype, 0, "DT_INVALID");
    server.stop().await;
}

/// Every export of tests/fixtures/savedmodels (Keras 3 `model.export()` and
/// `tf.saved_model.save`, made by scripts/build_keras_savedmodels.py), of
/// tests/fixtures/savedmodels_zoo (more architectures, tf_keras exports too)
/// and of tests/fixtures/savedmodels_tf1 (TensorFlow 1 graphs whose
/// variables a top-level saver restores) loads in process and computes TensorFlow's recorded `serving_default`
/// outputs. `FERROSERVE_SAVEDMODEL_FIXTURES=DIR` checks another directory of
/// the same layout instead (`scripts/build_keras_zoo.py` writes one),
/// listing every export that fails.
#[test]
fn keras_exports_compute_tensorflows_outputs() {
    let dirs = match std::env::var_os("FERROSERVE_SAVEDMODEL_FIXTURES") {
        Some(d) => vec![(std::path::PathBuf::from(d), 0)],
        None => {
            vec![(root().join("tests/fixtures/savedmodels"), 20), (root().join("tests/fixtures/savedmodels_zoo"), 22)]
        }
    };
    for (dir, at_least) in dirs {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.len() >= at_least, "{}: {names:?}", dir.display());
        let failures: Vec<String> =
            names.iter().filter_map(|name| check_export(&dir, name).err().map(|e| format!("{name}: {e}"))).collect();
        assert!(failures.is_empty(), "{} of {} exports fail:\n{}", failures.len(), names.len(), failures.join("\n"));
    }
}

/// Loads export `name` of `dir` and compares its outputs with TensorFlow's.
fn check_export(dir: &Path, name: &str) -> Result<(), String> {
    use ferroserve::kernels::KernelRegistry;
    use ferroserve::servable::Servable;

    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).map_err(|e| e.to_string())?;
    let expected: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if expected.get("outputs").is_none() {
        return Ok(()); // The export itself failed when the fixture was made.
    }
    let tags = ["serve".to_string()];
    let servable =
        Servable::load_saved_model(name, 1, &dir.join(name).join("1"), &tags, &KernelRegistry::with_all_ops())
            .map_err(|e| e.to_string())?;
    // serving_default's outputs, and those other signatures recorded for the
    // same inputs.
    let mut checks = vec![("serving_default".to_string(), &expected["outputs"])];
    if let Some(more) = expected.get("signature_outputs").and_then(|m| m.as_object()) {
        checks.extend(more.iter().map(|(key, outputs)| (key.clone(), outputs)));
    }
    for (key, outputs) in checks {
        check_signature(&servable, &key, &expected["inputs"], outputs).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

fn check_signature(
    servable: &ferroserve::servable::Servable,
    key: &str,
    inputs: &serde_json::Value,
    outputs: &serde_json::Value,
) -> Result<(), String> {
    use ferroserve::tensor::{Tensor, TensorData};

    let (_, signature) = servable.signature(key).map_err(|e| e.to_string())?;
    let dims = |v: &serde_json::Value| -> Vec<usize> {
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
    };
    let mut feeds = Vec::new();
    for (alias, input) in inputs.as_object().unwrap() {
        let values = input["values"].as_array().unwrap();
        let data = match input["dtype"].as_str().unwrap() {
            "float32" => TensorData::Float(values.iter().map(|v| v.as_f64().unwrap() as f32).collect()),
            "float64" => TensorData::Double(values.iter().map(|v| v.as_f64().unwrap()).collect()),
            "int32" => TensorData::Int32(values.iter().map(|v| v.as_i64().unwrap() as i32).collect()),
            "int64" => TensorData::Int64(values.iter().map(|v| v.as_i64().unwrap()).collect()),
            "uint8" => TensorData::UInt8(values.iter().map(|v| v.as_u64().unwrap() as u8).collect()),
            "string" => TensorData::String(values.iter().map(|v| v.as_str().unwrap().as_bytes().to_vec()).collect()),
            other => return Err(format!("input dtype {other}")),
        };
        let spec = signature.inputs.get(alias).ok_or_else(|| format!("no input '{alias}'"))?;
        feeds.push((spec.value, Tensor::new(dims(input), data).map_err(|e| e.to_string())?));
    }
    let outputs: Vec<(&String, &serde_json::Value)> = outputs.as_object().unwrap().iter().collect();
    let fetches: Vec<usize> = outputs
        .iter()
        .map(|(alias, _)| signature.outputs.get(*alias).map(|s| s.value).ok_or_else(|| format!("no output '{alias}'")))
        .collect::<Result<_, _>>()?;
    let got = servable.run(feeds, &fetches).map_err(|e| e.to_string())?;
    for ((alias, want), got) in outputs.iter().zip(got) {
        if got.shape() != dims(want).as_slice() {
            return Err(format!("{alias} has shape {:?}, TensorFlow gave {:?}", got.shape(), dims(want)));
        }
        let values: Vec<f64> = match got.data() {
            TensorData::Float(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Double(v) => v.clone(),
            TensorData::Int32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
            other => return Err(format!("{alias} has dtype {}", other.dtype())),
        };
        for (i, (a, e)) in values.iter().zip(want["values"].as_array().unwrap()).enumerate() {
            let e = e.as_f64().unwrap();
            if (a - e).abs() > 1e-5 + 1e-4 * e.abs() {
                return Err(format!("{alias}[{i}]: got {a}, TensorFlow gave {e}"));
            }
        }
    }
    Ok(())
}

/// A copy of the bundled SavedModel whose `saved_model.pb` `edit` changed.
fn edited_copy(tag: &str, edit: impl FnOnce(&mut ferroserve::proto::tensorflow::SavedModel)) -> std::path::PathBuf {
    use prost::Message;
    let dir = temp_dir(tag);
    copy_dir(&root().join("examples/models/mnist_savedmodel/1"), &dir);
    let mut model = ferroserve::savedmodel::meta::read_saved_model(&dir).unwrap();
    edit(&mut model);
    std::fs::write(dir.join("saved_model.pb"), model.encode_to_vec()).unwrap();
    dir
}

/// Renames the first node of op `from` in the model function to `to`.
fn rename_op(model: &mut ferroserve::proto::tensorflow::SavedModel, from: &str, to: &str) -> (String, String) {
    let library = model.meta_graphs[0].graph_def.as_mut().unwrap().library.as_mut().unwrap();
    for f in &mut library.function {
        if let Some(node) = f.node_def.iter_mut().find(|n| n.op == from) {
            node.op = to.to_string();
            return (f.signature.as_ref().unwrap().name.clone(), node.name.clone());
        }
    }
    panic!("no {from} node");
}

#[test]
fn unsupported_ops_tags_and_gpu_exports_fail_the_load_saying_what_and_where() {
    use ferroserve::kernels::KernelRegistry;
    use ferroserve::servable::Servable;

    let registry = KernelRegistry::with_all_ops();
    let serve = ["serve".to_string()];
    let load = |dir: &Path, tags: &[String]| {
        Servable::load_saved_model("m", 1, dir, tags, &registry).map(|_| ()).unwrap_err().to_string()
    };

    let mut at = (String::new(), String::new());
    let dir = edited_copy("savedmodel-unknown-op", |m| at = rename_op(m, "Relu", "FancyRelu"));
    let err = load(&dir, &serve);
    assert!(
        err.contains("FancyRelu") && err.contains(&at.0) && err.contains(&at.1) && err.contains("not supported"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);

    let dir = edited_copy("savedmodel-cudnn", |m| {
        rename_op(m, "Relu", "CudnnRNNV3");
    });
    let err = load(&dir, &serve);
    assert!(err.contains("CudnnRNNV3") && err.contains("export it again on a CPU-only machine"), "{err}");
    let _ = std::fs::remove_dir_all(dir);

    let err = load(&root().join("examples/models/mnist_savedmodel/1"), &["serve".into(), "tpu".into()]);
    assert!(err.contains("Could not find meta graph def matching supplied tags: { serve tpu }"), "{err}");

    // A signature whose input is not a Placeholder cannot be fed.
    let dir = edited_copy("savedmodel-bad-signature", |m| {
        let info =
            m.meta_graphs[0].signature_def.get_mut("serving_default").unwrap().inputs.values_mut().next().unwrap();
        info.encoding = Some(ferroserve::proto::tensorflow::tensor_info::Encoding::Name("NoOp:0".into()));
    });
    let err = load(&dir, &serve);
    assert!(err.contains("only Placeholders can be fed"), "{err}");
    let _ = std::fs::remove_dir_all(dir);

    // A function that calls itself, and a node that reads its own output,
    // fail the load instead of recursing or looping.
    let dir = edited_copy("savedmodel-recursive", |m| {
        use ferroserve::proto::tensorflow::attr_value;
        let library = m.meta_graphs[0].graph_def.as_mut().unwrap().library.as_mut().unwrap();
        // Every signature wrapper now calls itself instead of the model.
        for f in &mut library.function {
            let name = f.signature.as_ref().unwrap().name.clone();
            let call = f.node_def.iter_mut().find(|n| n.op == "StatefulPartitionedCall");
            if let (true, Some(call)) = (name.contains("signature_wrapper"), call)
                && let Some(attr_value::Value::Func(g)) = call.attr.get_mut("f").and_then(|a| a.value.as_mut())
            {
                g.name = name;
            }
        }
    });
    let err = load(&dir, &serve);
    assert!(err.contains("function calls nest deeper than 64"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
    let dir = edited_copy("savedmodel-cycle", |m| {
        let library = m.meta_graphs[0].graph_def.as_mut().unwrap().library.as_mut().unwrap();
        for f in &mut library.function {
            if let Some(relu) = f.node_def.iter_mut().find(|n| n.op == "Relu") {
                relu.input[0] = format!("{}:activations:0", relu.name);
            }
        }
    });
    let err = load(&dir, &serve);
    assert!(err.contains("depends on itself"), "{err}");
    let _ = std::fs::remove_dir_all(dir);

    // Without its checkpoint, the load names the missing index.
    let dir = temp_dir("savedmodel-no-variables");
    copy_dir(&root().join("examples/models/mnist_savedmodel/1"), &dir);
    std::fs::remove_file(dir.join("variables/variables.index")).unwrap();
    let err = load(&dir, &serve);
    assert!(err.contains("variables.index") && err.contains("cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_metadata_and_predict_on_a_saved_model() {
    use crate::harness::TestServer;

    let server = TestServer::start_with(vec![saved_model_config()], std::time::Duration::ZERO).await;
    let (code, _, body) = server.http("GET", "/v1/models/mnist_savedmodel/metadata", b"").await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let defs = &json["metadata"]["signature_def"]["signature_def"];
    let init = &defs["__saved_model_init_op"];
    assert_eq!(init["method_name"], "");
    assert_eq!(
        init["outputs"]["__saved_model_init_op"],
        serde_json::json!({"dtype": "DT_INVALID", "tensor_shape": {"dim": [], "unknown_rank": true}, "name": "NoOp"})
    );
    assert_eq!(defs["serving_default"]["inputs"]["image"]["name"], "serving_default_image:0");
    let pixels = image_pixels(&root().join("examples/digits/7.png"));
    let rows: Vec<Vec<Vec<f32>>> = pixels.chunks(28).map(|row| row.iter().map(|&p| vec![p]).collect()).collect();
    let request = serde_json::json!({"instances": [rows]}).to_string();
    let (code, _, body) = server.http("POST", "/v1/models/mnist_savedmodel:predict", request.as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let probabilities: Vec<f32> =
        json["predictions"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(crate::harness::argmax(&probabilities), 7);
    // A wrong shape is refused before the graph runs, naming the alias.
    let (code, _, body) =
        server.http("POST", "/v1/models/mnist_savedmodel:predict", br#"{"instances": [[1.0, 2.0]]}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("image"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_defaults_fill_inputs_a_request_leaves_out() {
    use crate::harness::{TestServer, float_tensor, spec};
    use ferroserve::proto::tensorflow::serving::{GetModelMetadataRequest, PredictRequest, SignatureDefMap};
    use prost::Message;

    // The bundled model with a default image (all zeros) for serving_default.
    let zeros = float_tensor(&[1, 28, 28, 1], vec![0.0; 784]);
    let version = edited_copy("savedmodel-defaults", |m| {
        let signature = m.meta_graphs[0].signature_def.get_mut("serving_default").unwrap();
        signature.defaults.insert("image".into(), zeros.clone());
    });
    let base = temp_dir("savedmodel-defaults-base");
    std::fs::rename(&version, base.join("1")).unwrap();
    let config = ferroserve::repository::ModelConfig::new("m", &base);
    let server = TestServer::start_with(vec![config], std::time::Duration::ZERO).await;
    let mut client = server.prediction().await;
    let request = |inputs: Vec<(&str, ferroserve::proto::tensorflow::TensorProto)>| PredictRequest {
        model_spec: spec("m"),
        inputs: inputs.into_iter().map(|(a, t)| (a.to_string(), t)).collect(),
        ..PredictRequest::default()
    };
    let defaulted = client.predict(request(vec![])).await.unwrap().into_inner();
    let explicit = client.predict(request(vec![("image", zeros.clone())])).await.unwrap().into_inner();
    assert_eq!(defaulted.outputs["probabilities"], explicit.outputs["probabilities"]);
    let err = client.predict(request(vec![("image", zeros.clone()), ("other", zeros)])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("input size does not match signature"), "{}", err.message());

    let response = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: spec("m"),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let map = SignatureDefMap::decode(response.metadata["signature_def"].value.as_slice()).unwrap();
    let default = &map.signature_def["serving_default"].defaults["image"];
    assert_eq!(ferroserve::tensor::proto::from_proto(default).unwrap().shape(), &[1, 28, 28, 1]);
    server.stop().await;
    let _ = std::fs::remove_dir_all(base);
}
