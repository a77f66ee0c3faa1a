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
