//! `ferroserve`: flags -> Config -> telemetry -> load models -> bind ->
//! serve -> drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use ferroserve::compute::ComputePool;
use ferroserve::config::{Config, Flags};
use ferroserve::error::{ServeError, code_name};
use ferroserve::kernels::KernelRegistry;
use ferroserve::repository::ModelRepository;
use ferroserve::service::{self, ServingState};

/// Exit code for a bad command line (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// How many model runs may wait in the compute pool's queue per thread.
const RUNS_PER_THREAD: usize = 4;

/// Logs go to stderr through tracing; `RUST_LOG` sets the filter (default
/// `info`) and `FERROSERVE_LOG_FORMAT=json` switches to JSON lines.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("FERROSERVE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    ferroserve::runtime::tune_allocator();
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let config = match flags.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("Failed to start server. Error: INVALID_ARGUMENT: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_tracing();
    for (flag, note) in flags.not_honoured() {
        tracing::warn!(flag = %format!("--{flag}"), "{note}");
    }
    for name in &config.ignored_channel_arguments {
        tracing::warn!(argument = %name, "--grpc_channel_arguments: ignored (only grpc.max_receive_message_length and grpc.max_send_message_length are honoured)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Failed to start server. Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("Failed to start server. Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT; a second one exits at once.
async fn first_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting for in-flight requests");
        std::process::exit(0);
    });
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let compute = Arc::new(
        ComputePool::new(config.compute_threads, config.compute_threads.max(1) * RUNS_PER_THREAD * 4)?
            .with_max_queued(config.max_queued_requests),
    );
    tracing::info!(
        threads = compute.threads(),
        max_queued_requests = config.max_queued_requests,
        max_inflight_request_bytes = config.max_inflight_request_bytes.unwrap_or(0),
        "compute pool ready"
    );

    // Models load before any port opens, as in TensorFlow Serving: clients
    // see connection-refused until the server can answer.
    let mut repository = ModelRepository::new(KernelRegistry::with_all_ops(), config.repository.clone());
    if let Some(iterations) = config.warmup_iterations {
        repository = repository.with_warmup(Arc::new(ferroserve::service::Warmup { iterations }));
    }
    let repository = Arc::new(repository);
    let (repo, models) = (repository.clone(), config.models.clone());
    if let Err(e) = tokio::task::spawn_blocking(move || repo.apply_config(models)).await? {
        let e = ServeError::from(e);
        anyhow::bail!("{}: {e}", code_name(e.code()));
    }
    if let Some(interval) = config.file_system_poll {
        tokio::spawn(ferroserve::repository::poll_every(repository.clone(), interval));
    }
    if let (Some(path), Some(interval)) = (config.model_config_file.clone(), config.config_file_poll) {
        tokio::spawn(poll_config_file(repository.clone(), path, interval, config.models.clone()));
    }
    let state = Arc::new(
        ServingState::new(repository, compute)
            .with_tensor_content_outputs(config.tensor_content_outputs)
            .with_method_name_check(config.method_name_check)
            .with_message_limits(config.max_receive_bytes, config.max_send_bytes)
            .with_request_budget(config.max_inflight_request_bytes)
            .with_auth(config.auth.clone()),
    );

    let listener = match config.grpc_port {
        None => None,
        Some(port) => {
            let l = TcpListener::bind(("0.0.0.0", port))
                .await
                .with_context(|| format!("binding the gRPC port 0.0.0.0:{port}"))?;
            tracing::info!(
                address = %l.local_addr()?,
                tls = config.grpc_tls.is_some(),
                client_verify = config.grpc_tls.as_ref().is_some_and(|t| t.ssl.client_verify),
                bearer_token = config.auth.is_some(),
                "gRPC server listening (PredictionService, ModelService, grpc.health.v1, reflection)"
            );
            Some(l)
        }
    };
    let unix_listener = match &config.grpc_socket_path {
        None => None,
        Some(path) => {
            // A socket left by an earlier process is replaced, as gRPC does.
            if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding the gRPC socket --grpc_socket_path={}", path.display()))?;
            tracing::info!(path = %path.display(), bearer_token = config.auth.is_some(), "gRPC server listening on a UNIX socket");
            Some(l)
        }
    };

    let rest_listener = match config.rest_api_port {
        Some(rest) if Some(rest) == config.grpc_port => {
            tracing::error!(port = rest, "--rest_api_port equals --port; the REST API is not started");
            None
        }
        Some(rest) => {
            let l = TcpListener::bind(("0.0.0.0", rest))
                .await
                .with_context(|| format!("binding the REST port 0.0.0.0:{rest}"))?;
            tracing::info!(
                address = %l.local_addr()?,
                tls = config.rest_tls.is_some(),
                bearer_token = config.auth.is_some(),
                "REST API listening"
            );
            Some(l)
        }
        None => None,
    };

    // Both front ends drain on the first signal.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        if let Err(e) = first_signal().await {
            tracing::error!("{e:#}");
            return false;
        }
        let _ = drain_tx.send(true);
        true
    });
    let draining = move || {
        let mut rx = drain_rx.clone();
        async move {
            // A dropped sender (no signal handling) means never shut down.
            if rx.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let delay = config.shutdown_delay;
    let rest = match rest_listener {
        None => None,
        Some(l) => {
            let (state, drained) = (state.clone(), draining());
            let shutdown = async move {
                drained.await;
                // Keep accepting while load balancers notice the change.
                tokio::time::sleep(delay).await;
            };
            let options = config.rest.clone();
            Some(match &config.rest_tls {
                None => tokio::spawn(ferroserve::rest::serve(l, state, options, shutdown)),
                Some(tls) => {
                    let l = ferroserve::tls::TlsListener::new(l, tls.server.clone())?;
                    tokio::spawn(ferroserve::rest::serve(l, state, options, shutdown))
                }
            })
        }
    };
    let grace = config.shutdown_grace + config.shutdown_delay;
    let mut grpc = Vec::new();
    if let Some(listener) = listener {
        let (state, drained) = (state.clone(), draining());
        grpc.push(match &config.grpc_tls {
            None => tokio::spawn(service::serve(listener, state, drained, delay)),
            Some(tls) => tokio::spawn(service::serve_tls(listener, tls.server.clone(), state, drained, delay)),
        });
    }
    if let Some(listener) = unix_listener {
        grpc.push(tokio::spawn(service::serve_unix(listener, state.clone(), draining(), delay)));
    }
    let server = async move {
        for task in grpc {
            task.await??;
        }
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    };
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            result.map_err(|e| anyhow::anyhow!(e))?;
            if let Some(rest) = rest {
                match tokio::time::timeout(config.shutdown_grace, rest).await {
                    Ok(Ok(Err(e))) => tracing::error!("the REST server failed: {e}"),
                    Err(_) => tracing::warn!("REST requests did not finish within the grace period"),
                    _ => {}
                }
            }
        }
        () = grace_expired(signals, grace) => {
            tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish within the grace period; exiting");
        }
    }
    if let Some(path) = &config.grpc_socket_path {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// Re-reads the model config file every `interval` and applies it when it
/// changed; a file that does not parse or check is logged and ignored.
async fn poll_config_file(
    repository: Arc<ModelRepository>,
    path: std::path::PathBuf,
    interval: Duration,
    mut current: Vec<ferroserve::repository::ModelConfig>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let models = match ferroserve::config::read_model_config_file(&path) {
            Ok(models) => models,
            Err(e) => {
                tracing::error!("{e}; keeping the current models");
                continue;
            }
        };
        if models == current {
            continue;
        }
        if let Err(e) = repository.check_reload(&models) {
            tracing::error!("{}: {e}; keeping the current models", path.display());
            continue;
        }
        let (repo, apply) = (repository.clone(), models.clone());
        match tokio::task::spawn_blocking(move || repo.apply_config(apply)).await {
            Ok(Ok(())) => {
                tracing::info!(path = %path.display(), "model config file reloaded");
                current = models;
            }
            // Tried again at the next poll.
            Ok(Err(e)) => tracing::error!(path = %path.display(), "model config file reload failed: {e}"),
            Err(e) => tracing::error!("the config reload stopped: {e}"),
        }
    }
}

/// Resolves `grace` after the signal task finished (that is, after the first
/// signal); never when no signal comes.
async fn grace_expired(signals: tokio::task::JoinHandle<bool>, grace: Duration) {
    if !signals.await.unwrap_or(false) {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(grace).await;
}
