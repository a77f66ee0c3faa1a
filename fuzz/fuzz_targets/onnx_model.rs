//! Any bytes as a version's model.onnx: the load either succeeds or fails
//! with an error, never a panic, a hang or an out-of-memory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferroserve::kernels::KernelRegistry;
use ferroserve::servable::Servable;
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (KernelRegistry, PathBuf) {
    static SETUP: OnceLock<(KernelRegistry, PathBuf)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferroserve-fuzz-onnx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        (KernelRegistry::with_all_ops(), dir.join("model.onnx"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (registry, path) = setup();
    std::fs::write(path, data).unwrap();
    let _ = Servable::load_onnx("fuzz", 1, path, registry);
});
