//! Request history: every proxied request (answered, rejected, failed or
//! cancelled) kept in `history.db` in the data folder, for the dashboard and
//! `GET /api/history`.
//!
//! - [`entry`]: the row built from a [`RequestRecord`], and the response
//!   text assembled from streamed chunks;
//! - [`store`]: the SQLite file (WAL mode): inserts, queries, pruning;
//! - [`query`]: the list filters read from query parameters.
//!
//! Recording never slows a request down: the proxy's sink only tries to
//! queue the row (a bounded channel); a dedicated thread inserts queued rows
//! in batched transactions. When the queue is full the row is dropped and
//! counted ([`History::dropped`]). Rows older than the retention are pruned
//! at start and every few minutes.

pub mod entry;
pub mod query;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::HistorySettings;
use crate::proxy::record::{RequestRecord, RequestSink};
use entry::HistoryEntry;
use store::{HistoryStore, Opened};

/// Most rows inserted in one transaction.
const BATCH: usize = 1_000;
/// How long the writer waits for more rows before it writes a batch.
const LINGER: Duration = Duration::from_millis(50);
/// Rounds a batch is tried before it is dropped (each round waits for the next message
/// or the writer's timer).
const WRITE_ATTEMPTS: u32 = 3;

/// Shortest time between two warnings about dropped rows.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The request history of a running coordinator: its store, its writer
/// thread and the sink the proxy reports to.
#[derive(Debug)]
pub struct History {
    store: Option<Arc<HistoryStore>>,
    /// Why there is no store.
    unavailable: Option<String>,
    /// No history was asked for (a library default), which is no fault.
    off: bool,
    sink: Arc<HistorySink>,
    settings: HistorySettings,
    writer: Mutex<Option<JoinHandle<()>>>,
}

enum Message {
    Entry(Box<HistoryEntry>),
    /// Reply once everything queued before has been written.
    Flush(std::sync::mpsc::Sender<()>),
    Stop,
}

impl History {
    /// Opens (or creates) `history.db` in `data_dir` and starts the writer
    /// thread. A file that is not a database is moved aside and a new one
    /// started; if none can be opened at all, the coordinator runs without
    /// history (logged, and the API answers 503).
    pub fn start(data_dir: &std::path::Path, settings: HistorySettings) -> Self {
        match HistoryStore::open_in_dir(data_dir) {
            Ok(Opened::Ready(store)) => {
                tracing::info!(path = %store.path().display(), "request history opened");
                Self::with_store(store, settings)
            }
            Ok(Opened::Recovered {
                store,
                reason,
                moved_to,
            }) => {
                tracing::error!(
                    path = %store.path().display(),
                    moved_to = %moved_to.display(),
                    %reason,
                    "request history file could not be opened; it was moved aside and a new history started"
                );
                Self::with_store(store, settings)
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "request history is unavailable; requests are served but not recorded"
                );
                Self::disabled(format!("request history is unavailable: {e:#}"), settings)
            }
        }
    }

    /// History on `store`, with its writer thread running.
    pub fn with_store(store: HistoryStore, settings: HistorySettings) -> Self {
        let store = Arc::new(store);
        let (sender, receiver) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let sink = Arc::new(HistorySink::new(Some(sender), settings.body_limit_bytes));
        let writer = {
            let store = Arc::clone(&store);
            let sink = Arc::clone(&sink);
            let settings = settings.clone();
            std::thread::Builder::new()
                .name("history-writer".into())
                .spawn(move || run_writer(&store, &receiver, &sink, &settings))
        };
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!(error = %e, "could not start the request history writer");
                None
            }
        };
        Self {
            store: Some(store),
            unavailable: None,
            off: false,
            sink,
            settings,
            writer: Mutex::new(writer),
        }
    }

    /// No history at all (embedding the router without one); not a fault.
    pub fn off() -> Self {
        Self {
            off: true,
            ..Self::disabled("request history is not enabled", HistorySettings::default())
        }
    }

    /// History that records nothing; the API answers `reason`.
    pub fn disabled(reason: impl Into<String>, settings: HistorySettings) -> Self {
        Self {
            store: None,
            unavailable: Some(reason.into()),
            off: false,
            sink: Arc::new(HistorySink::new(None, settings.body_limit_bytes)),
            settings,
            writer: Mutex::new(None),
        }
    }

    /// The store, or why there is none.
    pub fn store(&self) -> Result<&Arc<HistoryStore>, &str> {
        self.store.as_ref().ok_or_else(|| {
            self.unavailable
                .as_deref()
                .unwrap_or("request history is off")
        })
    }

    /// The sink to add to the proxy's sinks.
    pub fn sink(&self) -> Arc<dyn RequestSink> {
        Arc::clone(&self.sink) as Arc<dyn RequestSink>
    }

    /// Why the history is not working now (no database, or the last write failed),
    /// for `/api/health`; `None` when it is.
    pub fn problem(&self) -> Option<String> {
        if self.off {
            return None;
        }
        if let Some(reason) = &self.unavailable {
            return Some(reason.clone());
        }
        self.store.as_ref()?;
        let slot = self.sink.write_error.lock();
        slot.as_ref().map(|e| format!("the last write failed: {e}"))
    }

    /// Requests not recorded: the queue was full, or their insert failed.
    pub fn dropped(&self) -> u64 {
        self.sink.dropped.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &HistorySettings {
        &self.settings
    }

    /// Waits until every request queued so far is written (or given up).
    pub async fn flush(&self) {
        let Some(sender) = self.sink.sender.clone() else {
            return;
        };
        let (done, wait) = std::sync::mpsc::channel();
        let _ = tokio::task::spawn_blocking(move || {
            if sender.send(Message::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        })
        .await;
    }

    /// Writes what is queued and stops the writer thread. Requests finishing
    /// after this are counted as dropped.
    pub async fn shutdown(&self) {
        let Some(handle) = self.writer.lock().take() else {
            return;
        };
        let sender = self.sink.sender.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(sender) = sender {
                let _ = sender.send(Message::Stop);
            }
            if handle.join().is_err() {
                tracing::error!("the request history writer panicked");
            }
        })
        .await;
    }
}

/// Queues each finished request for the writer, or counts it as dropped.
#[derive(Debug)]
pub struct HistorySink {
    sender: Option<SyncSender<Message>>,
    body_limit: usize,
    dropped: AtomicU64,
    /// Seconds after `epoch` of the last warning about drops (0: none yet).
    last_warning: AtomicU64,
    epoch: Instant,
    /// Why the last write failed; cleared by the next one that succeeds. Only the
    /// writer sets it and only health checks read it: never on the request path.
    write_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Entry(_) => "Entry",
            Message::Flush(_) => "Flush",
            Message::Stop => "Stop",
        })
    }
}

impl HistorySink {
    fn new(sender: Option<SyncSender<Message>>, body_limit: usize) -> Self {
        Self {
            sender,
            body_limit,
            dropped: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
            epoch: Instant::now(),
            write_error: Mutex::new(None),
        }
    }

    fn set_write_error(&self, error: Option<String>) {
        let mut slot = self.write_error.lock();
        *slot = error;
    }

    fn count_dropped(&self, n: u64, why: &str) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        // At most one warning a minute (the first one at once).
        let now = self.epoch.elapsed().as_secs() + WARN_EVERY.as_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now >= last + WARN_EVERY.as_secs())
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                "request history dropped records: {why}"
            );
        }
    }
}

impl RequestSink for HistorySink {
    fn record(&self, record: &RequestRecord) {
        let Some(sender) = &self.sender else {
            return;
        };
        let entry = Box::new(HistoryEntry::from_record(record, self.body_limit));
        match sender.try_send(Message::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.count_dropped(
                1,
                "the write queue is full (raise --history-queue, or the disk is too slow)",
            ),
            Err(TrySendError::Disconnected(_)) => {
                self.count_dropped(1, "the history writer has stopped")
            }
        }
    }
}

/// The writer thread: inserts queued rows in batches, prunes old ones.
fn run_writer(
    store: &HistoryStore,
    receiver: &Receiver<Message>,
    sink: &HistorySink,
    settings: &HistorySettings,
) {
    let prune = || {
        let Some(cutoff) = chrono::Duration::from_std(settings.retention)
            .ok()
            .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention))
        else {
            return;
        };
        match store.prune_before(cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "pruned request history older than the retention"
            ),
            Err(e) => tracing::error!(error = %e, "could not prune the request history"),
        }
    };
    prune();
    let mut next_prune = Instant::now() + settings.prune_interval;
    let mut batch = Vec::with_capacity(BATCH);
    let mut failed_writes = 0u32;
    let mut flushes = Vec::new();
    let mut stop = false;
    while !stop {
        let timeout = next_prune.saturating_duration_since(Instant::now());
        // Takes a message in; true when it asks for the batch to be written now.
        let mut take = |message, batch: &mut Vec<HistoryEntry>| match message {
            Message::Entry(entry) => {
                batch.push(*entry);
                false
            }
            Message::Flush(done) => {
                flushes.push(done);
                true
            }
            Message::Stop => {
                stop = true;
                true
            }
        };
        match receiver.recv_timeout(timeout) {
            Ok(message) => {
                let mut now = take(message, &mut batch);
                // Rows arriving meanwhile join the batch: one transaction for
                // many rows, so the search index is flushed and merged less
                // often (its flushes were most of the writer's work). A flush
                // or stop request ends the wait.
                let linger = Instant::now() + LINGER;
                while !now && batch.len() < BATCH {
                    let left = linger.saturating_duration_since(Instant::now());
                    match receiver.recv_timeout(left) {
                        Ok(message) => now = take(message, &mut batch),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => stop = true,
        }
        if !batch.is_empty() {
            match store.insert(&batch) {
                Ok(()) => {
                    if failed_writes > 0 {
                        tracing::info!("the request history is written again");
                        sink.set_write_error(None);
                    }
                    failed_writes = 0;
                    batch.clear();
                }
                Err(e) => {
                    failed_writes += 1;
                    sink.set_write_error(Some(e.to_string()));
                    // Kept for the next round (a full disk may have room again); after
                    // a few failures the batch is dropped, so memory stays bounded.
                    if failed_writes >= WRITE_ATTEMPTS || stop {
                        tracing::error!(error = %e, rows = batch.len(), "could not write request history");
                        sink.count_dropped(batch.len() as u64, "the database refused the write");
                        batch.clear();
                        failed_writes = 0;
                    } else {
                        tracing::warn!(error = %e, rows = batch.len(), attempt = failed_writes, "could not write request history; trying again");
                    }
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if Instant::now() >= next_prune {
            prune();
            next_prune = Instant::now() + settings.prune_interval;
        }
    }
    // Whatever was queued behind the stop request.
    let rest: Vec<HistoryEntry> = receiver
        .try_iter()
        .filter_map(|message| match message {
            Message::Entry(entry) => Some(*entry),
            _ => None,
        })
        .collect();
    for chunk in rest.chunks(BATCH) {
        if let Err(e) = store.insert(chunk) {
            tracing::error!(error = %e, rows = chunk.len(), "could not write request history");
            sink.count_dropped(chunk.len() as u64, "the database refused the write");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::record::{Outcome, Usage};
    use bytes::Bytes;
    use llm_router_common::ApiKind;

    fn record(body: &'static [u8]) -> RequestRecord {
        RequestRecord {
            api_key: None,
            request_id: "r-1".into(),
            started_at: chrono::Utc::now(),
            client_ip: None,
            flavor: ApiKind::Ollama,
            method: axum::http::Method::POST,
            endpoint: "/api/generate".into(),
            model: "m".into(),
            stream: true,
            node_id: None,
            node_name: Some("a".into()),
            nodes_tried: vec![crate::proxy::record::TriedNode {
                id: llm_router_common::NodeId::new_v4(),
                name: "a".into(),
            }],
            status: 200,
            outcome: Outcome::Completed,
            duration: Duration::from_millis(3),
            time_to_first_byte: Some(Duration::from_millis(1)),
            usage: Usage::default(),
            request_body: Bytes::from_static(body),
            response_body: Bytes::from_static(b"{\"response\":\"ok\",\"done\":true}\n"),
            response_bytes_dropped: 0,
            error: None,
        }
    }

    #[test]
    fn a_full_queue_counts_drops_instead_of_waiting() {
        let (sender, _receiver) = std::sync::mpsc::sync_channel(2);
        let sink = HistorySink::new(Some(sender), 1024);
        for _ in 0..5 {
            sink.record(&record(b"{}"));
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_failing_write_is_reported_kept_and_written_when_the_store_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(store::FILE_NAME);
        let history = History::with_store(
            HistoryStore::open(&path).unwrap(),
            HistorySettings::default(),
        );
        let sink = history.sink();
        sink.record(&record(b"{}"));
        history.flush().await;
        assert_eq!(history.problem(), None);

        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute_batch("ALTER TABLE requests RENAME TO requests_away")
            .unwrap();
        sink.record(&record(b"{}"));
        history.flush().await;
        let problem = history.problem().expect("the failed write is not reported");
        assert!(problem.contains("write failed"), "{problem}");
        assert_eq!(history.dropped(), 0, "dropped at the first failure");

        other
            .execute_batch("ALTER TABLE requests_away RENAME TO requests")
            .unwrap();
        sink.record(&record(b"{}"));
        history.flush().await;
        assert_eq!(history.problem(), None);
        let store = Arc::clone(history.store().unwrap());
        assert_eq!(store.count(&query::Filter::default()).unwrap(), 3);
        history.shutdown().await;
    }

    #[tokio::test]
    async fn the_writer_stores_queued_requests_with_bodies_cut_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(&dir.path().join(store::FILE_NAME)).unwrap();
        let settings = HistorySettings {
            body_limit_bytes: 4,
            ..HistorySettings::default()
        };
        let history = History::with_store(store, settings);
        let sink = history.sink();
        sink.record(&record(b"0123456789"));
        history.flush().await;
        let store = Arc::clone(history.store().unwrap());
        let list = store
            .list(
                &query::Filter::default(),
                query::Page {
                    limit: 10,
                    offset: 0,
                },
            )
            .unwrap()
            .items;
        assert_eq!(list.len(), 1);
        let detail = store.get(list[0].id).unwrap().unwrap();
        assert_eq!(detail.request_body, "0123");
        assert!(detail.request_truncated);
        assert_eq!(detail.request_bytes, 10);
        // The response was cut to the limit too, and the cut counted.
        assert_eq!(detail.response_body, "{\"re");
        assert_eq!(detail.response_bytes_dropped, 26);

        history.shutdown().await;
        sink.record(&record(b"{}"));
        assert_eq!(history.dropped(), 1);
        assert_eq!(store.count(&query::Filter::default()).unwrap(), 1);
    }
}
