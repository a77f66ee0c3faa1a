//! TLS (`--ssl_config_file`, `--rest_api_ssl_config_file`) with and
//! without client verification, and bearer-token authentication
//! (`--auth_token_file`). Certificates are made at test time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferroserve::auth::BearerToken;
use ferroserve::proto::tensorflow::serving::SslConfig;
use ferroserve::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve::service::{self, ServingState};
use ferroserve::tls::{self, TlsListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::{TestServer, argmax, cases, predict_request};

/// A certificate authority that signs server and client certificates.
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, rcgen::KeyPair::from_pem(&key.serialize_pem()).unwrap());
        Ca { key, cert, issuer }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, key PEM) for `names`.
    fn sign(&self, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if client {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let _ = &self.key;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A gRPC server over TLS, on its own task until `stop` is sent.
async fn tls_server(ssl: &SslConfig, state: ServingState) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls::server_config(ssl, tls::GRPC_ALPN).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(service::serve_tls(
        listener,
        config,
        Arc::new(state),
        async {
            let _ = stopped.await;
        },
        Duration::ZERO,
    ));
    (addr, stop)
}

async fn tls_client(
    addr: SocketAddr,
    ca: &str,
    identity: Option<(String, String)>,
) -> Result<PredictionServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(PredictionServiceClient::new(channel))
}

/// Predicts the first reference digit and checks the class.
async fn predicts(client: &mut PredictionServiceClient<Channel>) -> Result<(), tonic::Status> {
    let case = &cases()[0];
    let response = client.predict(predict_request(case)).await?.into_inner();
    let probabilities = &response.outputs["probabilities"].float_val;
    assert_eq!(Some(argmax(probabilities) as u64), case.class);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_serves_and_refuses_plain_text() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.sign(&["localhost"], false);
    let ssl = SslConfig { server_key: key, server_cert: cert, ..SslConfig::default() };
    let (addr, stop) = tls_server(&ssl, TestServer::example_state()).await;

    let mut client = tls_client(addr, &ca.pem(), None).await.expect("TLS connects");
    predicts(&mut client).await.expect("Predict over TLS");

    // A plain-text client gets no answer.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("TCP connects");
    let err = PredictionServiceClient::new(plain).predict(predict_request(&cases()[0])).await.unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    // Nor does a client that trusts another authority.
    let other = Ca::new("other CA");
    let refused = match tls_client(addr, &other.pem(), None).await {
        Err(_) => true,
        Ok(mut c) => predicts(&mut c).await.is_err(),
    };
    assert!(refused, "a client that does not trust the server's CA must fail");
    predicts(&mut client).await.expect("still serving");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_verify_refuses_clients_without_a_certificate_from_custom_ca() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.sign(&["localhost"], false);
    let ssl = SslConfig { server_key: key, server_cert: cert, custom_ca: ca.pem(), client_verify: true };
    let (addr, stop) = tls_server(&ssl, TestServer::example_state()).await;

    let mut good = tls_client(addr, &ca.pem(), Some(ca.sign(&["client"], true))).await.expect("connects");
    predicts(&mut good).await.expect("a client with a certificate from custom_ca is served");

    let rogue = Ca::new("rogue CA");
    for identity in [None, Some(rogue.sign(&["client"], true))] {
        let with_cert = identity.is_some();
        let refused = match tls_client(addr, &ca.pem(), identity).await {
            Err(_) => true,
            Ok(mut c) => predicts(&mut c).await.is_err(),
        };
        assert!(refused, "client with certificate: {with_cert}: must be refused");
    }
    predicts(&mut good).await.expect("still serving");
    let _ = stop.send(());
}

/// One HTTPS/1.1 request: (status, head, body).
async fn https(addr: SocketAddr, ca: &str, request: &str) -> (u16, String, String) {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("answers");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (head.split(' ').nth(1).unwrap().parse().unwrap(), head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_over_tls_serves_status_and_metrics() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.sign(&["localhost"], false);
    let ssl = SslConfig { server_key: key, server_cert: cert, ..SslConfig::default() };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = TlsListener::new(listener, tls::server_config(&ssl, tls::REST_ALPN).unwrap()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ferroserve::rest::serve(
        listener,
        Arc::new(TestServer::example_state()),
        ferroserve::rest::RestOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (status, _, body) = https(addr, &ca.pem(), &get("/v1/models/mnist")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"AVAILABLE\""), "{body}");
    let (status, _, body) = https(addr, &ca.pem(), &get("/monitoring/prometheus/metrics")).await;
    assert_eq!(status, 200, "{body}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(get("/v1/models/mnist").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_every_call_but_health_and_metrics() {
    let token = "tok-3f9a1c";
    let state = TestServer::example_state().with_auth(Some(BearerToken::new(token).unwrap()));
    let server = TestServer::start_state(state, Duration::ZERO).await;
    let mut client = server.prediction().await;
    let request = || tonic::Request::new(predict_request(&cases()[0]));

    let err = client.predict(request()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("bearer token"), "{}", err.message());
    let mut wrong = request();
    wrong.metadata_mut().insert("authorization", "Bearer tok-3f9a1d".parse().unwrap());
    let err = client.predict(wrong).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(!err.message().contains("tok-"), "the answer never quotes a token: {}", err.message());
    let mut right = request();
    right.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.predict(right).await.expect("the token lets the call through");
    let mut models = server.models().await;
    let err = models
        .get_model_status(ferroserve::proto::tensorflow::serving::GetModelStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Health answers probes without credentials.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health needs no token")
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // REST: 401 without the token, the metrics page open.
    let body = br#"{"instances": [[[[0.0]]]]}"#;
    let (status, head, text) = server.http_with("POST", "/v1/models/mnist:predict", &[], body).await;
    assert_eq!(status, 401, "{text}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(text.contains("bearer token"), "{text}");
    let auth = format!("Bearer {token}");
    let (status, _, text) = server.http_with("GET", "/v1/models/mnist", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 200, "{text}");
    let (status, _, _) = server.http("GET", "/monitoring/prometheus/metrics", b"").await;
    assert_eq!(status, 200);
    server.stop().await;
}
