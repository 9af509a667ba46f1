//! The HTTP server: hyper connections with the limits a public endpoint
//! needs, for the plain and the TLS listener alike.
//!
//! - **Open connections** are capped: at the cap the server stops accepting
//!   (new clients wait in the kernel's backlog) instead of running out of file
//!   descriptors, which would also starve the connections to nodes.
//! - **Header timeout**: a request's head must be complete within
//!   `header_timeout` of its first byte (of the accept, for a new connection),
//!   or the connection is closed. Slow-loris clients hold a socket that long.
//! - **Idle timeout**: a kept-alive connection with no request and no traffic
//!   for `idle_timeout` is closed.
//! - **Body rate**: a request body may take `body_grace`, then must keep
//!   arriving at `body_min_rate` bytes per second on average; a slower one
//!   fails with [`BodyTooSlow`] (the inference API answers 408).
//!
//! None of these ever cuts a request being answered: a connection is only
//! closed while it has no request, or while it has not finished sending one.
//!
//! Each connection's state is a few atomics its I/O and its requests update;
//! one timer per connection looks at it when a deadline is due, and at least
//! once per the shorter of the two timeouts.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// The limits on client connections. Defaults as in `--help`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_grace: Duration,
    /// Bytes per second a body must average once `body_grace` has passed.
    pub body_min_rate: u64,
    /// `None`: derived from the open-file limit at start (see [`raise_open_file_limit`]).
    pub max_connections: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_grace: Duration::from_secs(20),
            body_min_rate: 1024,
            max_connections: None,
        }
    }
}

/// Connections kept in reserve below the open-file limit for nodes, files and logs.
const RESERVED_FILES: u64 = 128;
/// The most connections served when the open-file limit would allow more.
const DEFAULT_MAX_CONNECTIONS: u64 = 16_384;

/// Raises the soft open-file limit to the hard one (services often start with
/// 1,024) and returns the connection cap it allows: half of what is left after a
/// reserve, the other half being for the connections to nodes. Windows has no
/// such limit: the cap is [`DEFAULT_MAX_CONNECTIONS`].
pub fn raise_open_file_limit() -> usize {
    let limit = open_file_limit();
    let cap = (limit.saturating_sub(RESERVED_FILES) / 2).clamp(16, DEFAULT_MAX_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

#[cfg(unix)]
fn open_file_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    let after = rlimit::increase_nofile_limit(u64::MAX);
    match (&before, &after) {
        (Ok(before), Ok(after)) => {
            if after > before {
                tracing::info!(
                    from = before,
                    to = after,
                    "raised the open-file limit to the hard limit"
                );
            } else {
                tracing::info!(limit = after, "open-file limit");
            }
            *after
        }
        (_, Err(error)) | (Err(error), _) => {
            tracing::warn!(%error, "could not read or raise the open-file limit; assuming 1024");
            1024
        }
    }
}

#[cfg(not(unix))]
fn open_file_limit() -> u64 {
    u64::MAX
}

/// How a server stops: `accepting` ends the accept loops, closes idle
/// connections and lets each busy one finish the request it serves;
/// `connections`, later, closes those still open (a client that stopped
/// reading, an answer cut at the end of the grace).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub accepting: CancellationToken,
    pub connections: CancellationToken,
}

/// Serves `router` on `listener` until `stop.accepting` is cancelled, then
/// lets the requests under way finish (their connections close as they end,
/// or all at once on `stop.connections`) and returns. Connections run on the
/// calling runtime.
pub async fn serve<L>(listener: L, router: Router, limits: ConnectionLimits, stop: Stop)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = connection_slots(&limits);
    serve_with(listener, router, limits, &slots, &stop).await;
}

/// Accepts on `listener` until `stop`, then waits for its connections to end.
async fn serve_with<L>(
    listener: L,
    router: Router,
    limits: ConnectionLimits,
    slots: &Slots,
    stop: &Stop,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let connections = TaskTracker::new();
    accept(listener, router, limits, slots, &connections, stop).await;
    connections.close();
    connections.wait().await;
}

/// The threads that serve client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threads {
    /// How many; `None`: one per CPU.
    pub count: Option<usize>,
    /// Their name, as `top -H` and `/proc` show it (at most 15 bytes show).
    pub name: String,
}

impl Default for Threads {
    fn default() -> Self {
        Self {
            count: None,
            name: "llm-router-http".to_owned(),
        }
    }
}

thread_local! {
    /// Which serving thread this is (see [`serving_thread`]).
    static SERVING_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the serving thread the caller runs on, `None` elsewhere. What
/// a request needs of its own (a connection pool to the nodes) is kept per
/// serving thread, so that a request never wakes another thread.
pub fn serving_thread() -> Option<usize> {
    SERVING_THREAD.get()
}

/// [`serve`] on `threads.count` threads of their own, each a single-threaded
/// runtime accepting from the same socket: a connection lives on the thread
/// that accepted it, from its first byte to its last, as in nginx's workers.
/// Nothing on a request's way crosses threads, so no request pays for waking
/// another one. `wrap` turns each thread's copy of the socket into the
/// listener it serves (TLS or plain TCP), on that thread's runtime.
pub async fn serve_on_threads<L, W>(
    listener: std::net::TcpListener,
    wrap: W,
    router: Router,
    limits: ConnectionLimits,
    threads: &Threads,
    stop: Stop,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    W: Fn(tokio::net::TcpListener) -> io::Result<L> + Send + Sync + 'static,
{
    let count = threads
        .count
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let slots = connection_slots(&limits);
    let wrap = Arc::new(wrap);
    let mut ended = Vec::with_capacity(count);
    let mut failed = None;
    for index in 0..count {
        match start_thread(
            index, &listener, &wrap, &router, limits, &slots, threads, &stop,
        ) {
            Ok(finished) => ended.push(finished),
            Err(error) => {
                // Those started stop too: a coordinator serves fully or not at all.
                stop.accepting.cancel();
                failed = Some(error);
                break;
            }
        }
    }
    // Each thread has its own copy: once they stop accepting, the port
    // closes and new clients are refused instead of waiting in its backlog.
    drop(listener);
    if failed.is_none() {
        tracing::info!(threads = count, "serving threads started");
    }
    for finished in ended {
        let _ = finished.await;
    }
    failed.map_or(Ok(()), Err)
}

/// Starts serving thread `index`; the receiver completes when it has ended.
#[allow(clippy::too_many_arguments)]
fn start_thread<L, W>(
    index: usize,
    listener: &std::net::TcpListener,
    wrap: &Arc<W>,
    router: &Router,
    limits: ConnectionLimits,
    slots: &Arc<Slots>,
    threads: &Threads,
    stop: &Stop,
) -> io::Result<tokio::sync::oneshot::Receiver<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    W: Fn(tokio::net::TcpListener) -> io::Result<L> + Send + Sync + 'static,
{
    let socket = listener.try_clone()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let (router, slots, wrap, stop) = (
        router.clone(),
        Arc::clone(slots),
        Arc::clone(wrap),
        stop.clone(),
    );
    std::thread::Builder::new()
        .name(threads.name.clone())
        .spawn(move || {
            SERVING_THREAD.set(Some(index));
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(socket).and_then(|l| wrap(l)) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, thread = index, "a serving thread could not listen; the others serve");
                        return;
                    }
                };
                serve_with(listener, router, limits, &slots, &stop).await;
            });
            // The receiver learns of the end when `done` is dropped.
            drop(done);
        })?;
    Ok(finished)
}

/// One slot per connection allowed, shared by every serving thread.
struct Slots {
    free: Arc<Semaphore>,
    max: usize,
}

fn connection_slots(limits: &ConnectionLimits) -> Arc<Slots> {
    let max_connections = limits.max_connections.unwrap_or_else(raise_open_file_limit);
    tracing::info!(
        max_connections,
        header_timeout_secs = limits.header_timeout.as_secs_f64(),
        idle_timeout_secs = limits.idle_timeout.as_secs_f64(),
        "serving connections"
    );
    Arc::new(Slots {
        free: Arc::new(Semaphore::new(max_connections)),
        max: max_connections,
    })
}

/// Accepts connections while a slot is free, each served by a task of
/// `connections`, until `stop.accepting` is cancelled.
async fn accept<L>(
    mut listener: L,
    router: Router,
    limits: ConnectionLimits,
    slots: &Slots,
    connections: &TaskTracker,
    stop: &Stop,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let mut full = false;
    loop {
        let slot = match Arc::clone(&slots.free).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full {
                    tracing::warn!(
                        max_connections = slots.max,
                        "connection cap reached: new connections wait until others close"
                    );
                    full = true;
                }
                tokio::select! {
                    slot = Arc::clone(&slots.free).acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = stop.accepting.cancelled() => break,
                }
            }
        };
        if full && slots.free.available_permits() > slots.max / 10 {
            tracing::info!("below the connection cap again");
            full = false;
        }
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.accepting.cancelled() => break,
        };
        let (router, stop) = (router.clone(), stop.clone());
        connections.spawn(async move {
            serve_connection(io, peer, router, limits, stop).await;
            drop(slot);
        });
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    stop: Stop,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        inner: io,
        state: Arc::clone(&state),
    });
    let service = ConnService {
        router,
        peer,
        state: Arc::clone(&state),
        limits,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The connection's own watchdog below times heads; hyper's timer would also
    // count the idle time between requests as head time.
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let check = state.next_check(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = stop.accepting.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = stop.connections.cancelled() => {
                tracing::debug!(%peer, "closed: the server stopped");
                return;
            }
            () = tokio::time::sleep_until(check) => match state.verdict(Instant::now(), &limits) {
                Verdict::Keep => {}
                Verdict::HeadTooSlow => {
                    tracing::debug!(%peer, timeout_secs = limits.header_timeout.as_secs_f64(), "closed: no complete request head within the header timeout");
                    return;
                }
                Verdict::Idle => {
                    tracing::debug!(%peer, "closed: idle past the keep-alive timeout");
                    // No request is under way: this closes at once.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            },
        }
    }
}

/// What a connection is doing, in nanoseconds since it was accepted.
struct ConnState {
    born: Instant,
    /// Requests whose answer has not ended.
    busy: AtomicU32,
    /// When `busy` last fell to zero.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; [`NONE`] when none did.
    head_since: AtomicU64,
    /// When bytes were last written while no request was busy (the end of an answer).
    last_write: AtomicU64,
}

const NONE: u64 = u64::MAX;

enum Verdict {
    Keep,
    HeadTooSlow,
    Idle,
}

impl ConnState {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first head from the accept on.
            head_since: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(NONE - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.born + Duration::from_nanos(nanos)
    }

    fn on_read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_since.load(Ordering::Relaxed) == NONE
        {
            self.head_since.store(self.now(), Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 {
            self.last_write.store(self.now(), Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        BusyGuard(Arc::clone(self))
    }

    /// When the watchdog should look next: the deadline of the present state, and
    /// no later than the shorter timeout from now. A state change (an answer
    /// ending, a head starting) sets a deadline at least that far off, so the
    /// watchdog never sleeps past a deadline, and requests never need to wake it.
    fn next_check(&self, limits: &ConnectionLimits) -> Instant {
        let soon = Instant::now() + limits.header_timeout.min(limits.idle_timeout);
        if self.busy.load(Ordering::Relaxed) > 0 {
            return soon;
        }
        let due = match self.head_since.load(Ordering::Relaxed) {
            NONE => self.at(self.quiet_since()) + limits.idle_timeout,
            since => self.at(since) + limits.header_timeout,
        };
        due.min(soon)
    }

    fn quiet_since(&self) -> u64 {
        self.idle_since
            .load(Ordering::Relaxed)
            .max(self.last_write.load(Ordering::Relaxed))
    }

    fn verdict(&self, now: Instant, limits: &ConnectionLimits) -> Verdict {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Verdict::Keep;
        }
        match self.head_since.load(Ordering::Relaxed) {
            NONE if now >= self.at(self.quiet_since()) + limits.idle_timeout => Verdict::Idle,
            NONE => Verdict::Keep,
            since if now >= self.at(since) + limits.header_timeout => Verdict::HeadTooSlow,
            _ => Verdict::Keep,
        }
    }
}

/// A request of the connection, until its answer ends (or is dropped).
struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// The connection's socket, telling its state when bytes come and go.
    struct Watched<I> {
        #[pin]
        inner: I,
        state: Arc<ConnState>,
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = ready!(this.inner.poll_read(cx, buf));
        if buf.filled().len() > before {
            this.state.on_read();
        }
        Poll::Ready(result)
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = ready!(this.inner.poll_write(cx, buf));
        if matches!(result, Ok(n) if n > 0) {
            this.state.on_write();
        }
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = ready!(this.inner.poll_write_vectored(cx, bufs));
        if matches!(result, Ok(n) if n > 0) {
            this.state.on_write();
        }
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    limits: ConnectionLimits,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let guard = self.state.request_started();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = RateLimitedBody::new(body, self.limits.body_grace, self.limits.body_min_rate);
        let request = hyper::Request::from_parts(parts, body);
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| Answer {
                body,
                _guard: guard,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, keeping its connection busy until it ends.
    pub struct Answer {
        #[pin]
        body: axum::body::Body,
        _guard: BusyGuard,
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a request body read failed: it came slower than the minimum rate.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly ({received} bytes in {elapsed_secs} s; at least {min_rate} bytes/s are needed after the first {grace_secs} s)"
)]
pub struct BodyTooSlow {
    pub received: u64,
    pub elapsed_secs: u64,
    pub min_rate: u64,
    pub grace_secs: u64,
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTooSlow`] once it falls behind the
    /// minimum rate. The timer exists only while the body waits for bytes.
    pub struct RateLimitedBody {
        #[pin]
        inner: Incoming,
        grace: Duration,
        min_rate: u64,
        started: Option<Instant>,
        received: u64,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl RateLimitedBody {
    fn new(inner: Incoming, grace: Duration, min_rate: u64) -> Self {
        Self {
            inner,
            grace,
            min_rate: min_rate.max(1),
            started: None,
            received: 0,
            timer: None,
        }
    }
}

impl http_body::Body for RateLimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let started = *this.started.get_or_insert_with(Instant::now);
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // The next byte is due when the average would fall below the rate.
                let due = started
                    + *this.grace
                    + Duration::from_secs_f64(*this.received as f64 / *this.min_rate as f64);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow {
                        received: *this.received,
                        elapsed_secs: started.elapsed().as_secs(),
                        min_rate: *this.min_rate,
                        grace_secs: this.grace.as_secs(),
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
