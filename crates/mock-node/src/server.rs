//! Running a node: [`serve`] on a listener you bound, or [`MockNode`], which
//! binds, spawns and stops one for tests.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::app;
use crate::config::MockConfig;
use crate::control::MockControl;
use crate::models::ModelCatalog;
use crate::state::MockState;
use crate::stats::MockStats;

/// How long [`MockNode::stop`] waits for connections to close before it
/// abandons them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Serves `state` on `listener` until `shutdown` completes or
/// [`MockState::stop`] is called. Either way the listener is closed at once
/// (new connections are refused), requests still waiting and streams still
/// running are cut off, and idle connections are closed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let stopper = Arc::clone(&state);
    let signal = async move {
        tokio::select! {
            () = shutdown => {}
            () = stopper.stop_signal().stopped() => {}
        }
        stopper.stop();
    };
    // Token chunks are small writes; without TCP_NODELAY, Nagle's algorithm
    // and the client's delayed ACKs hold every stream up by ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(signal)
        .await
}

/// Binds `config.host:config.port`, prints the address, and serves until
/// `shutdown` completes. This is what the binary runs.
pub async fn run(
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = MockState::new(config.clone())?;
    let listener = TcpListener::bind((config.host, config.port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!(name = %config.name, %addr, models = ?config.models, "mock node listening");
    println!("mock node {} listening on http://{addr}", config.name);
    serve(listener, state, shutdown).await?;
    Ok(())
}

/// A mock node running in the background, for tests. Dropping it stops it.
#[derive(Debug)]
pub struct MockNode {
    addr: SocketAddr,
    state: Arc<MockState>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockNode {
    /// Binds `config.host:config.port` (by default `127.0.0.1:0`, a free
    /// port) and starts serving.
    pub async fn start(config: MockConfig) -> io::Result<MockNode> {
        let listener = TcpListener::bind((config.host, config.port)).await?;
        Self::start_on(listener, config)
    }

    /// Starts serving on a listener you bound, e.g. the address of a node
    /// you stopped, to bring it back.
    pub fn start_on(listener: TcpListener, config: MockConfig) -> io::Result<MockNode> {
        let state =
            MockState::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, Arc::clone(&state), std::future::pending()));
        Ok(MockNode {
            addr,
            state,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.state.name()
    }

    /// What the node saw.
    pub fn stats(&self) -> &MockStats {
        self.state.stats()
    }

    /// The runtime knobs.
    pub fn control(&self) -> &MockControl {
        self.state.control()
    }

    /// Held and loaded models.
    pub fn models(&self) -> &ModelCatalog {
        self.state.models()
    }

    /// The shared state, to hold on to stats or knobs beyond the node.
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    /// Stops the node: the listener is closed so connects are refused,
    /// in-flight requests and streams are cut off, idle connections closed.
    /// Returns once the server has wound down.
    pub async fn stop(mut self) {
        self.state.stop();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockNode {
    fn drop(&mut self) {
        self.state.stop();
    }
}
