//! HTTPS for the coordinator's own listener: the certificate and key from
//! `--tls-cert`/`--tls-key`, and a listener that hands the server finished
//! TLS connections, with each handshake off the accept path.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its handshake before it is dropped;
/// one that never sends a hello only holds its own socket this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after an accept error such as EMFILE: retrying at once would spin
/// while nothing has freed a descriptor (axum's own TCP listener waits the same).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Handshaken connections waiting for `accept()`. The server takes them as
/// fast as it can spawn a task, so this only fills if the server stalls; then
/// handshake tasks wait instead of piling connections up without bound.
const READY_CAPACITY: usize = 64;

/// The rustls configuration for serving `cert_path` (a PEM chain, the
/// server's own certificate first) with `key_path` (a PEM private key:
/// PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only, no client certificates.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                anyhow::anyhow!(
                    "the TLS key {} does not match the certificate {}",
                    key_path.display(),
                    cert_path.display()
                )
            }
            other => anyhow::anyhow!(
                "the TLS certificate {} and key {} cannot be used: {other}",
                cert_path.display(),
                key_path.display()
            ),
        })?;
    // The server speaks HTTP/1.1 only; announcing it lets clients that offer h2 fall back at once.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("could not read the TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "the TLS certificate file {} holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("could not read the TLS key {}", path.display()))?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => anyhow::bail!(
            "the TLS key file {} holds no private key (PEM: PKCS#8, PKCS#1 or SEC1)",
            path.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("the TLS key {} is not valid PEM", path.display()))
        }
    }
}

/// A TLS listener for [`crate::serve::serve`]: accepts TCP in a background task,
/// handshakes each connection in its own task, and yields only finished ones,
/// so a slow or silent client delays nobody but itself. Dropping it closes
/// the port.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; must be called inside a tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_CAPACITY);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), ready_tx));
        Ok(Self {
            ready,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The task owns the TCP listener; ending it closes the port. Handshakes
        // under way end on their own: their connection has nowhere to go.
        self.acceptor.abort();
    }
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if let Some(connection) = self.ready.recv().await {
            return connection;
        }
        // The accept task only ends by panicking; it has been reported already.
        tracing::error!(addr = %self.local_addr, "the TLS listener stopped accepting connections");
        std::future::pending().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(connection) => connection,
            // The client gave up before we took it; nothing is wrong here.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "could not accept a connection; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Without TCP_NODELAY, small streamed chunks wait for delayed ACKs (~40 ms each).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "could not set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            // Debug, not warn: port scanners and plain-http clients fail here all day.
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only once the listener is gone, which drops the connection as it should.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
