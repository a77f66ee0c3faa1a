//! Any bytes as saved_model.pb, next to the variables of a real TensorFlow 1
//! export (tests/fixtures/savedmodels_tf1/tf1_mlp_resource): the load
//! either succeeds or fails with an error, never a panic, a hang or an
//! out-of-memory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferroserve::kernels::KernelRegistry;
use ferroserve::servable::Servable;
use libfuzzer_sys::fuzz_target;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/savedmodels_tf1/tf1_mlp_resource/1");

fn setup() -> &'static (KernelRegistry, PathBuf) {
    static SETUP: OnceLock<(KernelRegistry, PathBuf)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferroserve-fuzz-savedmodel-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("variables")).unwrap();
        for file in ["variables.index", "variables.data-00000-of-00001"] {
            std::fs::copy(format!("{FIXTURE}/variables/{file}"), dir.join("variables").join(file)).unwrap();
        }
        (KernelRegistry::with_all_ops(), dir)
    })
}

fuzz_target!(|data: &[u8]| {
    let (registry, dir) = setup();
    std::fs::write(dir.join("saved_model.pb"), data).unwrap();
    let _ = Servable::load_saved_model("fuzz", 1, dir, &["serve".to_string()], registry);
});
