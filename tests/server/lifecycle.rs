//! The model lifecycle: versions appearing and disappearing on disk, broken
//! versions, policies, labels, config reloads, and health following
//! readiness, against a server whose poller runs every few milliseconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{TestServer, cases, predict_request, root, spec, temp_dir};
use ferroserve::config::parse_model_server_config;
use ferroserve::proto::tensorflow::serving::{
    GetModelStatusRequest, ModelSpec, PredictRequest, ReloadConfigRequest, model_spec, model_version_status,
};
use ferroserve::repository::{ModelConfig, RepositoryOptions, VersionPolicy};

const POLL: Duration = Duration::from_millis(25);

fn example_onnx() -> PathBuf {
    root().join("examples/models/mnist/1/model.onnx")
}

/// Writes a complete version the way deploy tools do: under a temporary
/// name, then renamed to its number.
fn add_version(base: &Path, version: i64) {
    let tmp = base.join(format!("tmp-{version}"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(example_onnx(), tmp.join("model.onnx")).unwrap();
    std::fs::rename(&tmp, base.join(version.to_string())).unwrap();
}

fn spec_version(name: &str, version: i64) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        version_choice: Some(model_spec::VersionChoice::Version(version)),
        ..ModelSpec::default()
    })
}

fn spec_label(name: &str, label: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        version_choice: Some(model_spec::VersionChoice::VersionLabel(label.into())),
        ..ModelSpec::default()
    })
}

/// (version, state, error) of every version of `name`, newest first.
async fn states(server: &TestServer, name: &str) -> Vec<(i64, i32, String)> {
    let response = server
        .models()
        .await
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(ModelSpec { name: name.into(), ..ModelSpec::default() }),
        })
        .await;
    match response {
        Ok(r) => r
            .into_inner()
            .model_version_status
            .into_iter()
            .map(|v| (v.version, v.state, v.status.map(|s| s.error_message).unwrap_or_default()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

const AVAILABLE: i32 = model_version_status::State::Available as i32;
const END: i32 = model_version_status::State::End as i32;

/// Waits (bounded) until `done` holds for the model's states.
async fn wait_for(server: &TestServer, name: &str, what: &str, done: impl Fn(&[(i64, i32, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = states(server, name).await;
        if done(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; states: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(states: &[(i64, i32, String)], version: i64, state: i32) -> bool {
    states.iter().any(|(v, s, _)| *v == version && *s == state)
}

async fn served_version(server: &TestServer, spec: Option<ModelSpec>) -> Result<i64, tonic::Status> {
    let mut request = predict_request(&cases()[0]);
    request.model_spec = spec;
    let response = server.prediction().await.predict(request).await?.into_inner();
    match response.model_spec.and_then(|s| s.version_choice) {
        Some(model_spec::VersionChoice::Version(v)) => Ok(v),
        other => panic!("no version in the answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_old_one_and_history_is_kept() {
    let base = temp_dir("swap");
    add_version(&base, 1);
    let server =
        TestServer::start_polling(vec![ModelConfig::new("m", &base)], RepositoryOptions::default(), POLL).await;
    assert_eq!(served_version(&server, spec("m")).await.unwrap(), 1);
    add_version(&base, 2);
    wait_for(&server, "m", "version 2 to replace 1", |s| has(s, 2, AVAILABLE) && has(s, 1, END)).await;
    assert_eq!(served_version(&server, spec("m")).await.unwrap(), 2);
    let now = states(&server, "m").await;
    assert_eq!(now.iter().map(|(v, _, _)| *v).collect::<Vec<_>>(), vec![2, 1], "descending, history kept");
    let err = served_version(&server, spec_version("m", 1)).await.unwrap_err();
    assert_eq!(err.message(), "Servable not found for request: Specific(m, 1)");

    // Deleting the newest version brings the older one back.
    std::fs::remove_dir_all(base.join("2")).unwrap();
    wait_for(&server, "m", "version 1 to come back", |s| has(s, 1, AVAILABLE) && has(s, 2, END)).await;
    assert_eq!(served_version(&server, spec("m")).await.unwrap(), 1);
    server.stop().await;
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_new_versions_never_take_down_the_served_one() {
    let base = temp_dir("broken");
    add_version(&base, 1);
    let server =
        TestServer::start_polling(vec![ModelConfig::new("m", &base)], RepositoryOptions::default(), POLL).await;
    let truncated = std::fs::read(example_onnx()).unwrap()[..5000].to_vec();
    let png = std::fs::read(root().join("examples/digits/3.png")).unwrap();
    let cases: Vec<(i64, Option<Vec<u8>>, &str)> = vec![
        (2, Some(truncated), "not a valid ONNX ModelProto"),
        (3, None, "holds neither model.onnx nor saved_model.pb"),
        (4, Some(png), "not a valid ONNX ModelProto"),
    ];
    for (version, content, reason) in cases {
        let tmp = base.join(format!("tmp-{version}"));
        std::fs::create_dir_all(&tmp).unwrap();
        if let Some(bytes) = content {
            std::fs::write(tmp.join("model.onnx"), bytes).unwrap();
        }
        std::fs::rename(&tmp, base.join(version.to_string())).unwrap();
        wait_for(&server, "m", "the broken version to fail", |s| {
            s.iter().any(|(v, state, e)| *v == version && *state == END && !e.is_empty())
        })
        .await;
        let now = states(&server, "m").await;
        let (_, _, error) = now.iter().find(|(v, _, _)| *v == version).unwrap();
        assert!(error.contains(reason), "version {version}: {error}");
        assert!(error.contains(&base.join(version.to_string()).display().to_string()), "{error}");
        assert!(has(&now, 1, AVAILABLE), "version 1 must keep serving: {now:?}");
        assert_eq!(served_version(&server, spec("m")).await.unwrap(), 1);
    }
    // Fixing the broken version in place retries it; then it replaces 1.
    std::fs::copy(example_onnx(), base.join("4/model.onnx")).unwrap();
    wait_for(&server, "m", "the fixed version to load", |s| has(s, 4, AVAILABLE) && has(s, 1, END)).await;
    assert_eq!(served_version(&server, spec("m")).await.unwrap(), 4);
    server.stop().await;
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readiness_when_every_version_is_deleted() {
    let base = temp_dir("vanish");
    add_version(&base, 1);
    let server =
        TestServer::start_polling(vec![ModelConfig::new("m", &base)], RepositoryOptions::default(), POLL).await;
    let mut health = HealthClient::new(server.channel().await);
    let check = |name: &'static str| HealthCheckRequest { service: name.into() };
    assert_eq!(health.check(check("m")).await.unwrap().into_inner().status, ServingStatus::Serving as i32);
    std::fs::remove_dir_all(base.join("1")).unwrap();
    wait_for(&server, "m", "the version to be unloaded", |s| has(s, 1, END)).await;
    for name in ["m", ""] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = health.check(check(name)).await.unwrap().into_inner().status;
            if status == ServingStatus::NotServing as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "health of {name:?} stayed {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let err = served_version(&server, spec("m")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "Servable not found for request: Latest(m)"));
    add_version(&base, 5);
    wait_for(&server, "m", "a new version", |s| has(s, 5, AVAILABLE)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while health.check(check("")).await.unwrap().into_inner().status != ServingStatus::Serving as i32 {
        assert!(Instant::now() < deadline, "health did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_never_fails_while_twenty_versions_come_and_go() {
    let base = temp_dir("churn");
    add_version(&base, 1);
    let server =
        TestServer::start_polling(vec![ModelConfig::new("m", &base)], RepositoryOptions::default(), POLL).await;
    // For each version: when its directory became complete, and when it
    // started to be deleted.
    type Lifetime = std::sync::Mutex<(Option<Instant>, Option<Instant>)>;
    let born: Arc<Vec<Lifetime>> = Arc::new((0..=21).map(|_| std::sync::Mutex::new((None, None))).collect());
    born[1].lock().unwrap().0 = Some(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut client = server.prediction().await;
        let (stop, born, answered) = (stop.clone(), born.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let case = &cases()[i];
            while !stop.load(Ordering::SeqCst) {
                let mut request: PredictRequest = predict_request(case);
                request.model_spec = spec("m");
                let sent = Instant::now();
                let response = client.predict(request).await.expect("no request may fail").into_inner();
                let answered_at = Instant::now();
                let Some(model_spec::VersionChoice::Version(v)) = response.model_spec.unwrap().version_choice else {
                    panic!("no version")
                };
                let (complete, deleted) = *born[v as usize].lock().unwrap();
                assert!(complete.is_some_and(|c| c <= answered_at), "version {v} answered before it was complete");
                assert!(deleted.is_none_or(|d| d >= sent), "version {v} answered after its deletion began");
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for version in 2..=21i64 {
        // The directory is complete from its rename on; record the time
        // just before it, so no answer can precede it.
        let tmp = base.join(format!("tmp-{version}"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(example_onnx(), tmp.join("model.onnx")).unwrap();
        born[version as usize].lock().unwrap().0 = Some(Instant::now());
        std::fs::rename(&tmp, base.join(version.to_string())).unwrap();
        wait_for(&server, "m", "the new version", |s| has(s, version, AVAILABLE)).await;
        // Delete the previous version once it is no longer served.
        wait_for(&server, "m", "the old version to unload", |s| has(s, version - 1, END)).await;
        born[(version - 1) as usize].lock().unwrap().1 = Some(Instant::now());
        std::fs::remove_dir_all(base.join((version - 1).to_string())).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(answered.load(Ordering::SeqCst) >= 20, "too few requests ran: {}", answered.load(Ordering::SeqCst));
    server.stop().await;
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_labels_and_reloads() {
    let base_a = temp_dir("reload-a");
    let base_b = temp_dir("reload-b");
    for v in [1, 2, 3] {
        add_version(&base_a, v);
    }
    add_version(&base_b, 7);
    let text = format!(
        "model_config_list {{ config {{ name: 'a' base_path: '{}' model_platform: 'onnx'
           model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
           version_labels {{ key: 'stable' value: 1 }} version_labels {{ key: 'canary' value: 2 }} }} }}",
        base_a.display()
    );
    let config = parse_model_server_config(&text).unwrap();
    let models = ferroserve::config::model_configs(&config).unwrap();
    assert_eq!(models[0].policy, VersionPolicy::Specific([1, 2].into()));
    let server = TestServer::start_polling(models, RepositoryOptions::default(), POLL).await;
    assert_eq!(served_version(&server, spec("a")).await.unwrap(), 2);
    assert_eq!(served_version(&server, spec_label("a", "stable")).await.unwrap(), 1);
    assert_eq!(served_version(&server, spec_label("a", "canary")).await.unwrap(), 2);
    let err = served_version(&server, spec_label("a", "beta")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "Unrecognized servable version label: beta"));
    assert_eq!(states(&server, "a").await.len(), 2, "version 3 is not wanted by the policy");

    let mut models = server.models().await;
    let reload = |text: String| ReloadConfigRequest {
        config: Some(parse_model_server_config(&text).unwrap()),
        metric_names: Vec::new(),
    };
    let entry = |name: &str, base: &Path, platform: &str, extra: &str| {
        format!("config {{ name: '{name}' base_path: '{}' model_platform: '{platform}' {extra} }}", base.display())
    };
    let list = |entries: &[String]| format!("model_config_list {{ {} }}", entries.join(" "));
    let invalid: Vec<(String, &str)> = vec![
        (
            list(&[entry("a", &base_a, "onnx", ""), entry("a", &base_b, "onnx", "")]),
            "Illegal to list model a multiple times in config list",
        ),
        (
            list(&[entry("b", Path::new("relative/b"), "onnx", "")]),
            "Expected model b to have an absolute path or URI; got base_path()=relative/b",
        ),
        (
            list(&[entry("a", &base_a, "tensorflow", "")]),
            "Illegal to change a model's platform. For model a platform was onnx and new platform requested is tensorflow",
        ),
        (
            "custom_model_config { type_url: 'x' }".to_string(),
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported",
        ),
        (list(&[entry("b", Path::new("gs://bucket/b"), "onnx", "")]), "are not supported"),
    ];
    for (text, message) in invalid {
        let err = models.handle_reload_config_request(reload(text.clone())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{text}");
        assert!(err.message().contains(message), "{text}: {}", err.message());
    }
    // Nothing changed.
    assert_eq!(served_version(&server, spec_label("a", "canary")).await.unwrap(), 2);

    // A label may only name an available version.
    let err = models
        .handle_reload_config_request(reload(list(&[entry(
            "a",
            &base_a,
            "onnx",
            "model_version_policy { all {} } version_labels { key: 'canary' value: 9 }",
        )])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "Request to assign label to version 9 of model a, which is not currently available for inference"
    );

    // Move the canary, serve every version of a, add b: the call returns
    // once b is available.
    let response = models
        .handle_reload_config_request(reload(list(&[
            entry("a", &base_a, "onnx", "model_version_policy { all {} } version_labels { key: 'canary' value: 3 }"),
            entry("b", &base_b, "tensorflow", ""),
        ])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status.unwrap().error_code, 0);
    assert_eq!(served_version(&server, spec("b")).await.unwrap(), 7);
    assert_eq!(served_version(&server, spec_label("a", "canary")).await.unwrap(), 3);
    wait_for(&server, "a", "all versions", |s| [1, 2, 3].iter().all(|v| has(s, *v, AVAILABLE))).await;

    // Removing a model: its requests are answered NOT_FOUND afterwards.
    models.handle_reload_config_request(reload(list(&[entry("b", &base_b, "tensorflow", "")]))).await.unwrap();
    let err = served_version(&server, spec("a")).await.unwrap_err();
    assert_eq!(err.message(), "Servable not found for request: Latest(a)");
    let mut health = HealthClient::new(server.channel().await);
    let gone = health.check(HealthCheckRequest { service: "a".into() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(
        health.check(HealthCheckRequest { service: "b".into() }).await.unwrap().into_inner().status,
        ServingStatus::Serving as i32
    );
    server.stop().await;
    std::fs::remove_dir_all(&base_a).unwrap();
    std::fs::remove_dir_all(&base_b).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_path_holding_the_model_file_serves_it_as_version_one() {
    let base = temp_dir("kserve");
    std::fs::copy(example_onnx(), base.join("model.onnx")).unwrap();
    let server = TestServer::start_with(vec![ModelConfig::new("k", &base)], Duration::ZERO).await;
    assert_eq!(served_version(&server, spec("k")).await.unwrap(), 1);
    server.stop().await;
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_complete_when_a_reload_removes_their_model() {
    let slow = temp_dir("reload-slow");
    let other = temp_dir("reload-other");
    crate::harness::write_slow_model(&slow, 512, 1024);
    add_version(&other, 1);
    let server = TestServer::start_polling(
        vec![ModelConfig::new("slow", &slow), ModelConfig::new("other", &other)],
        RepositoryOptions::default(),
        POLL,
    )
    .await;
    let x: Vec<f32> = (0..256 * 512).map(|i| (i % 89) as f32 - 40.0).collect();
    let request = PredictRequest {
        model_spec: spec("slow"),
        inputs: [("x".to_string(), crate::harness::float_tensor(&[256, 512], x.clone()))].into(),
        ..PredictRequest::default()
    };
    let mut client = server.prediction().await;
    let started = Instant::now();
    client.predict(request.clone()).await.expect("warm-up");
    let duration = started.elapsed();
    let call = tokio::spawn(async move { client.predict(request).await });
    tokio::time::sleep(duration / 4).await;
    let text = format!(
        "model_config_list {{ config {{ name: 'other' base_path: '{}' model_platform: 'tensorflow' }} }}",
        other.display()
    );
    let reload = ReloadConfigRequest { config: Some(parse_model_server_config(&text).unwrap()), metric_names: vec![] };
    server.models().await.handle_reload_config_request(reload).await.expect("reload");
    // The model is gone for new requests...
    let mut still = predict_request(&cases()[0]);
    still.model_spec = spec("other");
    server.prediction().await.predict(still).await.expect("the other model still serves");
    let mut gone = PredictRequest { model_spec: spec("slow"), ..PredictRequest::default() };
    gone.inputs.insert("x".into(), crate::harness::float_tensor(&[1, 512], vec![0.0; 512]));
    let err = server.prediction().await.predict(gone).await.unwrap_err();
    assert_eq!(err.message(), "Servable not found for request: Latest(slow)");
    // ...but the one already running finishes with the right answer.
    let response = call.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.into_inner().outputs["y"].float_val, x);
    server.stop().await;
    std::fs::remove_dir_all(&slow).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_a_model_that_cannot_serve_changes_nothing() {
    let good = temp_dir("reload-good");
    let broken = temp_dir("reload-broken");
    add_version(&good, 1);
    std::fs::create_dir_all(broken.join("1")).unwrap();
    std::fs::write(broken.join("1/model.onnx"), b"not a model").unwrap();
    let server =
        TestServer::start_polling(vec![ModelConfig::new("good", &good)], RepositoryOptions::default(), POLL).await;
    let mut models = server.models().await;
    let entry = |name: &str, base: &Path| {
        format!("config {{ name: '{name}' base_path: '{}' model_platform: 'tensorflow' }}", base.display())
    };
    let cases = [
        (entry("gone", Path::new("/nonexistent/ferroserve/gone")), Code::NotFound, "Could not find base path"),
        (entry("empty", &temp_dir("reload-empty")), Code::NotFound, "Did you forget to name your leaf directory"),
        (
            entry("broken", &broken),
            Code::Unknown,
            "1 servable(s) did not become available: {{name: broken version: 1} due to error:",
        ),
    ];
    let mut health = HealthClient::new(server.channel().await);
    for (extra, code, needle) in cases {
        let text = format!("model_config_list {{ {} {extra} }}", entry("good", &good));
        let request =
            ReloadConfigRequest { config: Some(parse_model_server_config(&text).unwrap()), metric_names: vec![] };
        let err = models.handle_reload_config_request(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(needle), "{}", err.message());
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "the server stays healthy");
        assert_eq!(served_version(&server, spec("good")).await.unwrap(), 1);
    }
    server.stop().await;
    for dir in [good, broken, temp_dir("reload-empty")] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_waiting_for_retries_holds_up_no_other_model() {
    let a = temp_dir("retry-a");
    let b = temp_dir("retry-b");
    add_version(&a, 1);
    add_version(&b, 1);
    let options = RepositoryOptions {
        max_load_retries: 3,
        load_retry_interval: Duration::from_secs(2),
        ..RepositoryOptions::default()
    };
    let server =
        TestServer::start_polling(vec![ModelConfig::new("a", &a), ModelConfig::new("b", &b)], options, POLL).await;
    // An empty version directory: a retry may fix it (the file may still
    // be on its way), so it is retried, but on later polls.
    std::fs::create_dir_all(a.join("2")).unwrap();
    wait_for(&server, "a", "the empty version to fail", |s| {
        s.iter()
            .any(|(v, state, e)| *v == 2 && *state == END && e.contains("holds neither model.onnx nor saved_model.pb"))
    })
    .await;
    let started = Instant::now();
    add_version(&b, 2);
    wait_for(&server, "b", "b's new version", |s| has(s, 2, AVAILABLE)).await;
    assert!(started.elapsed() < Duration::from_secs(2), "b waited {:?} for a's retries", started.elapsed());
    assert_eq!(served_version(&server, spec("a")).await.unwrap(), 1);
    // The file arrives: the next poll loads it.
    std::fs::copy(example_onnx(), a.join("2/model.onnx")).unwrap();
    wait_for(&server, "a", "a's version 2", |s| has(s, 2, AVAILABLE) && has(s, 1, END)).await;
    server.stop().await;
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn the_allow_flag_lets_only_new_labels_name_unavailable_versions() {
    use ferroserve::kernels::KernelRegistry;
    use ferroserve::repository::{ModelRepository, VersionChoice};
    let base = temp_dir("labels-allow");
    add_version(&base, 1);
    let options = RepositoryOptions { allow_labels_for_unavailable: true, ..RepositoryOptions::default() };
    let repo = ModelRepository::new(KernelRegistry::with_all_ops(), options);
    let with_labels = |labels: &[(&str, i64)]| {
        let mut config = ModelConfig::new("m", &base);
        config.labels = labels.iter().map(|(l, v)| (l.to_string(), *v)).collect();
        vec![config]
    };
    repo.apply_config(with_labels(&[("stable", 1), ("canary", 2)])).expect("a new label may name version 2");
    let err = repo.resolve("m", &VersionChoice::Label("canary".into())).unwrap_err();
    assert_eq!(err.to_string(), "Servable not found for request: Specific(m, 2)");
    let err = repo.apply_config(with_labels(&[("stable", 1), ("canary", 3)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Request to assign label to version 3 of model m, which is not currently available for inference"
    );
    add_version(&base, 2);
    repo.poll();
    assert_eq!(repo.resolve("m", &VersionChoice::Label("canary".into())).unwrap().version, 2);
    std::fs::remove_dir_all(&base).unwrap();
}
