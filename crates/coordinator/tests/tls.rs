//! Nodes reached over https: the coordinator's client trusts the system's
//! certificate authorities plus `--node-ca-file`. A TLS front with a freshly
//! made certificate stands before a mock node, on loopback.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use llm_router_coordinator::config::ProxySettings;
use llm_router_coordinator::proxy::{get, upstream_client};
use llm_router_mock_node::{MockConfig, MockNode};
use rustls_pki_types::PrivateKeyDer;
use serde_json::json;
use support::chat;
use support::fleet::Fleet;
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(10);

/// A TLS server on loopback that passes every connection on to `target`,
/// with a self-signed certificate for 127.0.0.1; returns its https URL and
/// the certificate (PEM) to trust.
async fn tls_front(target: SocketAddr) -> (String, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://{addr}"), cert.pem())
}

async fn secure_node(name: &str) -> (MockNode, String, tempfile::NamedTempFile) {
    let node = MockNode::start(MockConfig::named(name).with_models(["llama3.2"]))
        .await
        .unwrap();
    let (url, pem) = tls_front(node.addr()).await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), pem).unwrap();
    (node, url, ca)
}

#[tokio::test]
async fn an_https_node_is_trusted_only_with_its_authority() {
    let (_node, url, ca) = secure_node("tls-a").await;
    let version = format!("{url}/api/version");

    let untrusting = upstream_client(&ProxySettings::default()).unwrap();
    let err = get(&untrusting, &version, None, DEADLINE)
        .await
        .unwrap_err();
    assert!(err.contains("certificate"), "{err}");

    let trusting = upstream_client(&ProxySettings {
        node_ca_file: Some(ca.path().to_owned()),
        ..ProxySettings::default()
    })
    .unwrap();
    let (status, body) = get(&trusting, &version, None, DEADLINE).await.unwrap();
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(body["version"].is_string(), "{body}");
}

#[tokio::test]
async fn a_node_ca_file_that_is_not_pem_is_refused_with_its_name() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "not a certificate").unwrap();
    let err = upstream_client(&ProxySettings {
        node_ca_file: Some(file.path().to_owned()),
        ..ProxySettings::default()
    })
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("holds no PEM certificate"), "{message}");
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );

    let missing = file.path().with_extension("missing");
    let err = upstream_client(&ProxySettings {
        node_ca_file: Some(missing.clone()),
        ..ProxySettings::default()
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains(&missing.display().to_string()),
        "{err:#}"
    );
}

#[tokio::test]
async fn requests_are_proxied_to_an_https_node_added_by_url() {
    let (_node, url, ca) = secure_node("tls-b").await;
    let ca_path = ca.path().to_owned();
    let fleet = Fleet::empty_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.proxy.node_ca_file = Some(ca_path);
    })
    .await;
    let (status, added) = fleet
        .post_json("/api/nodes", json!({"api_url": url, "name": "secure"}))
        .await;
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_str().unwrap().to_owned();
    fleet.wait_for_status(&id, "online").await;

    for stream in [false, true] {
        let response = fleet.post("/api/chat", chat("llama3.2", stream)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(Fleet::served_by(&response), "secure");
        let text = response.text().await.unwrap();
        assert!(text.contains("\"done\":true"), "{text}");
    }
    fleet.stop().await;
}
