//! Any bytes as a checkpoint's variables.index (an SSTable of
//! BundleEntryProtos), read in memory and as a bundle next to a real data
//! shard: every entry either reads or fails with an error.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferroserve::savedmodel::bundle::Bundle;
use ferroserve::savedmodel::sstable::read_table;
use libfuzzer_sys::fuzz_target;

const FIXTURE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/savedmodels_tf1/tf1_mlp_resource/1/variables");

fn prefix() -> &'static PathBuf {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferroserve-fuzz-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(format!("{FIXTURE}/variables.data-00000-of-00001"), dir.join("variables.data-00000-of-00001"))
            .unwrap();
        dir.join("variables")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = read_table(data);
    let prefix = prefix();
    std::fs::write(prefix.with_extension("index"), data).unwrap();
    if let Ok(bundle) = Bundle::open(prefix) {
        let keys: Vec<String> = bundle.keys().map(str::to_string).collect();
        for key in keys {
            let _ = bundle.read(&key);
        }
    }
});
