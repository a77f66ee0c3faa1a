//! Any bytes as the body of the REST predict, classify and regress calls
//! on the bundled example model, through the real router: an answer with a
//! status code every time, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use ferroserve::compute::ComputePool;
use ferroserve::kernels::KernelRegistry;
use ferroserve::repository::{ModelConfig, ModelRepository};
use ferroserve::rest::{RestOptions, router};
use ferroserve::service::ServingState;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Setup {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let model = ModelConfig::new("mnist", concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/mnist"));
        let repository =
            ModelRepository::load(&[model], KernelRegistry::with_all_ops()).expect("the example model loads");
        let state = ServingState::new(Arc::new(repository), Arc::new(ComputePool::new(1, 4).unwrap()));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Setup { runtime, router: router(Arc::new(state), RestOptions::default()) }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    // The first byte picks the call; the rest is the body.
    let Some((&pick, body)) = data.split_first() else { return };
    let (path, gzip) = match pick % 4 {
        0 => ("/v1/models/mnist:predict", false),
        1 => ("/v1/models/mnist:classify", false),
        2 => ("/v1/models/mnist/versions/1:regress", false),
        _ => ("/v1/models/mnist:predict", true),
    };
    let mut request = http::Request::post(path);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let request = request.body(axum::body::Body::from(body.to_vec())).unwrap();
    let response = setup.runtime.block_on(setup.router.clone().oneshot(request)).unwrap();
    let status = response.status().as_u16();
    assert!(status == 200 || (400..600).contains(&status), "status {status}");
    assert!(status < 500 || status == 501 || status == 503, "a server error for a request body: {status}");
});
