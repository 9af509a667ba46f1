//! The coordinator's own HTTPS listener: a certificate made for the test,
//! a small router served through `tls::TlsListener` on loopback, and a client
//! that trusts only that certificate.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::Listener as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llm_router_coordinator::serve::{ConnectionLimits, Stop, serve};
use llm_router_coordinator::tls::{TlsListener, server_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Shorter than the listener's 10 s handshake timeout on purpose: a client
/// served only after a stalled one timed out would miss it.
const DEADLINE: Duration = Duration::from_secs(5);

/// A self-signed certificate for localhost and 127.0.0.1, as PEM files.
struct Certificate {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: rustls_pki_types::CertificateDer<'static>,
}

fn certificate() -> Certificate {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    Certificate {
        dir,
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
    }
}

/// An HTTPS server on loopback; stops when dropped.
struct Server {
    addr: SocketAddr,
    certificate: Certificate,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server() -> Server {
    let certificate = certificate();
    let config = server_config(&certificate.cert, &certificate.key).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, config).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hello", get(|| async { "hi" })).route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let task = tokio::spawn(async move {
        let limits = ConnectionLimits {
            max_connections: Some(64),
            ..ConnectionLimits::default()
        };
        serve(listener, app, limits, Stop::default()).await;
    });
    Server {
        addr,
        certificate,
        task,
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client that trusts the server's certificate and nothing else.
fn client(server: &Server) -> HttpsClient {
    Client::builder(TokioExecutor::new()).build(connector(&server.certificate.der))
}

/// Connections that trust `certificate` and nothing else.
fn connector(
    certificate: &rustls_pki_types::CertificateDer<'static>,
) -> HttpsConnector<HttpConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build()
}

async fn fetch(client: &HttpsClient, server: &Server, path: &str) -> (StatusCode, String) {
    let uri = format!("https://127.0.0.1:{}{path}", server.addr.port());
    let answer = async {
        let response = client.get(uri.parse().unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    tokio::time::timeout(DEADLINE, answer)
        .await
        .unwrap_or_else(|_| panic!("no answer to {uri} within {DEADLINE:?}"))
}

#[tokio::test]
async fn a_request_over_https_is_answered_and_its_handler_sees_the_loopback_peer() {
    let server = start_server().await;
    let client = client(&server);

    assert_eq!(
        fetch(&client, &server, "/hello").await,
        (StatusCode::OK, "hi".to_owned())
    );

    let (status, peer) = fetch(&client, &server, "/peer").await;
    assert_eq!(status, StatusCode::OK);
    let peer: IpAddr = peer.parse().unwrap();
    assert!(peer.is_loopback(), "{peer}");
}

#[tokio::test]
async fn clients_that_never_start_a_handshake_do_not_hold_up_others() {
    let server = start_server().await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }

    let client = client(&server);
    assert_eq!(
        fetch(&client, &server, "/hello").await,
        (StatusCode::OK, "hi".to_owned())
    );
    drop(silent);
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_closed_and_the_server_keeps_serving() {
    let server = start_server().await;

    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer))
        .await
        .expect("the server closes a plain-http connection");
    // A TLS alert then EOF, or a reset if the request was not all read: never an HTTP answer.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let client = client(&server);
    assert_eq!(
        fetch(&client, &server, "/hello").await,
        (StatusCode::OK, "hi".to_owned())
    );
}

#[tokio::test]
async fn dropping_the_listener_closes_its_port() {
    let certificate = certificate();
    let config = server_config(&certificate.cert, &certificate.key).unwrap();
    let listener =
        TlsListener::new(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    // The accept task ends at its next turn on the runtime, not inside drop;
    // a connection caught as the socket closes is reset rather than refused.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("unexpected error connecting to a closed port: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::task::yield_now().await;
    }
}

fn config_error(cert: &Path, key: &Path) -> String {
    format!("{:#}", server_config(cert, key).unwrap_err())
}

#[test]
fn a_missing_certificate_is_named() {
    let certificate = certificate();
    let missing = certificate.dir.path().join("missing.pem");
    let message = config_error(&missing, &certificate.key);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("could not read the TLS certificate"),
        "{message}"
    );
}

#[test]
fn a_key_file_without_a_key_is_named() {
    let certificate = certificate();
    // A certificate where the key should be: valid PEM, but no private key in it.
    let message = config_error(&certificate.cert, &certificate.cert);
    assert!(
        message.contains(&certificate.cert.display().to_string()),
        "{message}"
    );
    assert!(message.contains("holds no private key"), "{message}");
}

#[test]
fn a_certificate_file_without_a_certificate_is_named() {
    let certificate = certificate();
    let empty = certificate.dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let message = config_error(&empty, &certificate.key);
    assert!(message.contains(&empty.display().to_string()), "{message}");
    assert!(message.contains("holds no PEM certificate"), "{message}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_named() {
    let certificate = certificate();
    let other = certificate.dir.path().join("other-key.pem");
    std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let message = config_error(&certificate.cert, &other);
    assert!(message.contains(&other.display().to_string()), "{message}");
    assert!(
        message.contains("does not match the certificate"),
        "{message}"
    );
}

/// The whole coordinator over HTTPS: an agent trusting the certificate through
/// its CA file registers and heartbeats, and a login cookie is marked `Secure`.
#[tokio::test]
async fn an_agent_registers_with_a_coordinator_served_over_https() {
    use llm_router_coordinator::auth::{AccessSettings, AdminMode};
    let certificate = certificate();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = llm_router_coordinator::Config::with_data_dir(data_dir.path());
    config.tls = Some(llm_router_coordinator::config::TlsFiles {
        cert: certificate.cert.clone(),
        key: certificate.key.clone(),
    });
    config.access = AccessSettings {
        admin: Some(AdminMode::Auth),
        admin_password: Some("a long password".to_owned()),
        secure_cookies: true,
        ..AccessSettings::default()
    };
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let coordinator = tokio::spawn(llm_router_coordinator::run(
        tcp,
        config,
        stop.clone().cancelled_owned(),
    ));

    let ollama =
        llm_router_mock_node::MockNode::start(llm_router_mock_node::MockConfig::named("tls-node"))
            .await
            .unwrap();
    let mut agent = llm_router_agent::AgentConfig::new(
        format!("https://localhost:{port}").parse().unwrap(),
        ollama.url().parse().unwrap(),
        "tls-node",
    );
    agent.coordinator_ca_file = Some(certificate.cert.clone());
    agent.heartbeat_interval = Duration::from_millis(100);
    agent.register_retry = Duration::from_millis(50);
    let agent_stop = tokio_util::sync::CancellationToken::new();
    let agent_task = tokio::spawn(llm_router_agent::run(
        agent,
        agent_stop.clone().cancelled_owned(),
    ));

    let client: HttpsClient =
        Client::builder(TokioExecutor::new()).build(connector(&certificate.der));
    let login = hyper::Request::post(format!("https://localhost:{port}/api/auth/login"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"password":"a long password"}"#,
        )))
        .unwrap();
    let login_client: Client<HttpsConnector<HttpConnector>, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector(&certificate.der));
    let answer = login_client.request(login).await.unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = hyper::Request::get(format!("https://localhost:{port}/api/agents"))
            .header("cookie", &session)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let nodes: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if nodes[0]["status"] == "online" && nodes[0]["machine_name"] == "tls-node" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not register: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent_stop.cancel();
    agent_task.await.unwrap().unwrap();
    stop.cancel();
    coordinator.await.unwrap().unwrap();
}
