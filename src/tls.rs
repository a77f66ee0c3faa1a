//! TLS for both front ends, configured as TensorFlow Serving configures it:
//! a text-format `SSLConfig` (`server_key`, `server_cert`, `custom_ca`,
//! `client_verify`, PEM text inline) named by `--ssl_config_file` for gRPC
//! and, ferroserve's own, `--rest_api_ssl_config_file` for REST and metrics.
//!
//! rustls (with ring) does the cryptography. Handshakes run on their own
//! tasks, each bounded in time, so a client that connects and stalls holds
//! up nobody else; finished connections are handed to tonic or axum.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::proto::tensorflow::serving::SslConfig;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// The protocols gRPC offers in ALPN.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// The protocols the REST API offers in ALPN.
pub const REST_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// An `SSLConfig` read from its file and the rustls configuration made
/// from it; `Debug` shows the path, never the key.
#[derive(Clone)]
pub struct TlsSettings {
    pub path: std::path::PathBuf,
    pub ssl: SslConfig,
    /// What the listener serves with.
    pub server: Arc<rustls::ServerConfig>,
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &TlsSettings) -> bool {
        // `server` is made from `ssl`.
        self.path == other.path && self.ssl == other.ssl
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("path", &self.path)
            .field("client_verify", &self.ssl.client_verify)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads the file and makes the configuration; `alpn` is what the
    /// listener will offer.
    ///
    /// # Errors
    /// As [`read_ssl_config_file`] and [`server_config`].
    pub fn load(path: &Path, alpn: &[&[u8]]) -> Result<TlsSettings, String> {
        let ssl = read_ssl_config_file(path)?;
        let server = server_config(&ssl, alpn)?;
        Ok(TlsSettings { path: path.to_path_buf(), ssl, server })
    }
}

/// Reads a text-format `SSLConfig` file.
///
/// # Errors
/// When the file cannot be read or is not a text-format `SSLConfig`.
pub fn read_ssl_config_file(path: &Path) -> Result<SslConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    crate::config::parse_text_format("tensorflow.serving.SSLConfig", &text)
        .map_err(|e| format!("not a text-format SSLConfig: {e}"))
}

/// The rustls server configuration an `SSLConfig` describes, offering
/// `alpn`.
///
/// # Errors
/// With the field named when a key or certificate is missing or is not
/// PEM, when the key does not match the certificate, or when
/// `client_verify` is set without a `custom_ca`.
pub fn server_config(ssl: &SslConfig, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ssl.server_cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server_cert is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("server_cert holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let key = PrivateKeyDer::from_pem_slice(ssl.server_key.as_bytes())
        .map_err(|e| format!("server_key holds no PEM private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if ssl.client_verify {
        if ssl.custom_ca.trim().is_empty() {
            return Err("client_verify needs custom_ca, the authority client certificates are checked against".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ssl.custom_ca.as_bytes()) {
            let ca = ca.map_err(|e| format!("custom_ca is not PEM certificates: {e}"))?;
            roots.add(ca).map_err(|e| format!("custom_ca: {e}"))?;
        }
        if roots.is_empty() {
            return Err("custom_ca holds no PEM certificate".into());
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("custom_ca: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("server_key and server_cert do not make a usable identity: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Accepts TCP connections on `listener` and runs their TLS handshakes;
/// the finished connections come out of the returned channel. The
/// accepting stops when the receiver is dropped.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let (tcp, addr) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, for instance: wait, do not spin.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        drop(permit);
                        let _ = tx.send((tls, addr)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// A listener of finished TLS connections, for `axum::serve`.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// TLS on `listener` with `config`.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener { connections: accept(listener, config), local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The acceptor only stops when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        (key.serialize_pem(), cert.pem())
    }

    #[test]
    fn bad_ssl_configs_name_the_field() {
        let (key, cert) = identity();
        let ok = SslConfig { server_key: key.clone(), server_cert: cert.clone(), ..SslConfig::default() };
        assert!(server_config(&ok, GRPC_ALPN).is_ok());
        let err = |c: SslConfig| server_config(&c, GRPC_ALPN).unwrap_err();
        assert!(err(SslConfig { server_cert: String::new(), ..ok.clone() }).starts_with("server_cert holds no PEM"));
        assert!(err(SslConfig { server_key: "junk".into(), ..ok.clone() }).starts_with("server_key holds no PEM"));
        let (other_key, _) = identity();
        assert!(err(SslConfig { server_key: other_key, ..ok.clone() }).starts_with("server_key and server_cert"));
        assert!(err(SslConfig { client_verify: true, ..ok.clone() }).starts_with("client_verify needs custom_ca"));
        assert!(server_config(&SslConfig { client_verify: true, custom_ca: cert, ..ok }, GRPC_ALPN).is_ok());
    }
}
