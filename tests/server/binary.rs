//! The `ferroserve` binary: its command line, and a drain on SIGTERM that
//! lets an in-flight request finish with the right answer.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{float_tensor, spec, temp_dir, write_slow_model};
use ferroserve::proto::tensorflow::serving::PredictRequest;
use ferroserve::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;

const BIN: &str = env!("CARGO_BIN_EXE_ferroserve");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run ferroserve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_model_exits_with_tensorflow_servings_error_and_the_example_command() {
    let (code, _, err) = run(&[]);
    assert_eq!(code, Some(64));
    assert!(
        err.contains("Both server_options.model_base_path and server_options.model_config_file are empty!"),
        "{err}"
    );
    assert!(err.contains("--model_name=mnist --model_base_path=examples/models/mnist"), "{err}");
}

#[test]
fn unknown_flags_and_bad_values_exit_non_zero_naming_them() {
    for (args, needle) in [
        (&["--model_base_path=/m", "--no_such_flag=1"][..], "--no_such_flag"),
        (&["--model_base_path=/m", "--port=eighty"][..], "--port"),
        (&["--model_base_path=/m", "--enable_batching=perhaps"][..], "--enable_batching"),
        (&["--model_base_path=/m", "--tensorflow_intra_op_parallelism=-3"][..], "--tensorflow_intra_op_parallelism"),
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn help_lists_every_flag_with_its_default_and_version_prints() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--port <PORT>",
        "--grpc_socket_path",
        "--rest_api_port",
        "--model_name",
        "--model_base_path",
        "--model_config_file",
        "--file_system_poll_wait_seconds",
        "--enable_batching",
        "--tensorflow_intra_op_parallelism",
        "--ssl_config_file",
        "--enable_model_warmup",
        "--monitoring_config_file",
        "--xla_cpu_compilation_enabled",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    assert!(out.contains("[default: 8500]") && out.contains("[default: default]"), "{out}");
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ferroserve "), "{out}");
}

#[test]
fn a_missing_base_path_fails_the_start_with_the_path_named() {
    let (code, _, err) = run(&["--port=0", "--grpc_socket_path=/tmp/x", "--model_base_path=/nonexistent/models/m"]);
    assert_ne!(code, Some(0));
    let (code, _, err2) = run(&["--port=1", "--model_name=m", "--model_base_path=/nonexistent/models/m"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err2.contains("Could not find base path /nonexistent/models/m for servable m"), "{err2}");
}

#[test]
fn a_model_that_cannot_load_stops_the_start_with_tensorflow_servings_message() {
    let dir = temp_dir("corrupt-start");
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("1/model.onnx"), b"\x08\x07 this is not an ONNX model").unwrap();
    let (code, _, err) = run(&["--port=1", "--model_name=m", &format!("--model_base_path={}", dir.display())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{name: m version: 1} due to error: "),
        "{err}"
    );
    assert!(err.contains(&dir.join("1/model.onnx").display().to_string()), "the file is named: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child on drop, so a failing test leaves no server behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(port: u16) -> PredictionServiceClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        match endpoint.connect().await {
            Ok(channel) => return PredictionServiceClient::new(channel).max_decoding_message_size(64 << 20),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("the server did not open port {port}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_zero() {
    let dir = temp_dir("slow");
    let (width, layers, batch) = (512, 1024, 256);
    write_slow_model(&dir, width, layers);
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            &format!("--port={port}"),
            "--model_name=slow",
            &format!("--model_base_path={}", dir.display()),
            "--shutdown_delay_seconds=0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferroserve");
    let mut server = Server(child);
    let mut client = connect(port).await;

    let x: Vec<f32> = (0..batch * width).map(|i| (i % 97) as f32 * 0.25 - 3.0).collect();
    let request = PredictRequest {
        model_spec: spec("slow"),
        inputs: [("x".to_string(), float_tensor(&[batch as i64, width as i64], x.clone()))].into(),
        ..PredictRequest::default()
    };
    // Measure one run, so the signal can be sent well inside the next one.
    let started = Instant::now();
    client.predict(request.clone()).await.expect("warm-up predict");
    let duration = started.elapsed();

    let mut in_flight = client.clone();
    let call = tokio::spawn(async move { in_flight.predict(request).await });
    tokio::time::sleep(duration / 3).await;
    let signalled = Instant::now();
    // SAFETY: kill(2) with a pid we spawned and still own.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) }, 0);

    let response = call.await.unwrap().expect("the in-flight request completes");
    assert!(signalled.elapsed() < duration * 4, "the answer came long after the signal");
    assert_eq!(response.into_inner().outputs["y"].float_val, x, "identity layers return the input");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ferroserve did not exit within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    // The drain started while our request was running.
    assert!(log.contains("1 request(s) in flight"), "warm-up took {duration:?}; log:\n{log}");
    assert!(log.contains("drained; exiting"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_health_says_not_serving_and_a_second_signal_exits_at_once() {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            &format!("--port={port}"),
            "--model_name=mnist",
            &format!("--model_base_path={}", crate::harness::root().join("examples/models/mnist").display()),
            "--shutdown_delay_seconds=60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferroserve");
    let mut server = Server(child);
    let _ = connect(port).await;
    let health = || async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .expect("the port still accepts during the delay");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .expect("health answers")
            .into_inner()
            .status
    };
    assert_eq!(health().await, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // SAFETY: kill(2) with a pid we spawned and still own.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while health().await != tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
        assert!(Instant::now() < deadline, "health did not turn NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new connection is still accepted (load balancers are catching up).
    assert_eq!(health().await, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    assert!(server.0.try_wait().unwrap().is_none(), "the delay keeps the process up");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(5), "a second signal must exit at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}
