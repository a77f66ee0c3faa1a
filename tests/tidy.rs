//! Architectural invariants that are absences: the compute layers never see
//! a wire format or an async runtime.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn kernels_graph_and_runtime_import_no_wire_or_async_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = ["tonic", "prost", "tokio", "axum", "crate::proto", "crate::service"];
    let mut files = Vec::new();
    for layer in ["kernels", "graph", "runtime"] {
        rust_files(&root.join(layer), &mut files);
    }
    assert!(files.len() >= 9, "the layers moved: {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                let uses = code.contains(&format!("use {word}"))
                    || code.contains(&format!("{word}::"))
                    || code.contains(&format!("extern crate {word}"));
                if uses {
                    offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "forbidden imports:\n{}", offences.join("\n"));
}
