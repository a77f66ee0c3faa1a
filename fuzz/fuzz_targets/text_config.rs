//! Any text as the text-format files the server reads: a ModelServerConfig
//! (--model_config_file), a MonitoringConfig and an SSLConfig. Each parses
//! and checks, or fails with an error, never a panic.
#![no_main]

use ferroserve::config::{model_configs, parse_model_server_config, parse_text_format};
use ferroserve::proto::tensorflow::serving::{MonitoringConfig, SslConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = parse_model_server_config(text) {
        let _ = model_configs(&config);
    }
    let _ = parse_text_format::<MonitoringConfig>("tensorflow.serving.MonitoringConfig", text);
    if let Ok(ssl) = parse_text_format::<SslConfig>("tensorflow.serving.SSLConfig", text) {
        let _ = ferroserve::tls::server_config(&ssl, ferroserve::tls::GRPC_ALPN);
    }
});
