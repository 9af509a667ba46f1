//! `history.db`: the SQLite file that keeps every proxied request.
//!
//! Two tables: `requests` holds the small columns that lists, filters and
//! charts read (indexed by time, model, node, client API key and status),
//! `bodies` the captured request and response bodies, so that scanning
//! requests never pages through large bodies, and `search`, a trigram full-text index
//! (FTS5, contentless) of what the text search looks in, so that a search
//! for a rare word does not read every body. The file is in WAL mode: the
//! writer thread commits while API handlers read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params, params_from_iter,
};
use serde::{Deserialize, Serialize};

use super::entry::{HistoryEntry, digest_response};
use super::query::{Filter, Page, StatusFilter, model_key};

/// Name of the history file in the data folder.
pub const FILE_NAME: &str = "history.db";

/// Connections kept open for reuse (readers and the writer).
const POOL_SIZE: usize = 4;

/// Counts of text searches stop here (the list says `total_capped`): a
/// word found in most requests would otherwise make every search read them all.
pub const SEARCH_COUNT_CAP: u64 = 10_000;

/// Rows deleted per transaction when pruning, so readers and the writer are never held up long.
const PRUNE_CHUNK: usize = 5_000;

/// Version of the schema this build writes (`PRAGMA user_version`).
/// 1: the first; 2: `requests.api_key`, the client's API key name.
pub const SCHEMA_VERSION: i64 = 2;

/// The tables of a new file, at [`SCHEMA_VERSION`].
const SCHEMA: &str = "
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    client_ip TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    model_key TEXT NOT NULL,
    node TEXT,
    nodes_tried TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    stream INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ttft_ms REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    generation_ms REAL,
    error TEXT,
    api_key TEXT
);
CREATE TABLE bodies (
    id INTEGER PRIMARY KEY,
    request_body BLOB NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_body BLOB NOT NULL,
    response_bytes_dropped INTEGER NOT NULL,
    response_text TEXT,
    counters TEXT
);
CREATE VIRTUAL TABLE search USING fts5(
    text, content='', contentless_delete=1, tokenize='trigram', detail=none
);
CREATE INDEX requests_time ON requests(time_ms);
CREATE INDEX requests_model ON requests(model_key, time_ms);
CREATE INDEX requests_node ON requests(node, time_ms);
CREATE INDEX requests_key ON requests(api_key, time_ms);
CREATE INDEX requests_status ON requests(status, time_ms);
";

/// From version 1 to 2. Adding a nullable column only rewrites the schema
/// (rows are untouched and read it as NULL); the index reads every row once.
const MIGRATE_FROM_1: &str = "
ALTER TABLE requests ADD COLUMN api_key TEXT;
CREATE INDEX requests_key ON requests(api_key, time_ms);
";

/// The columns of a list item, in [`HistoryItem::from_row`]'s order.
const ITEM_COLUMNS: &str = "r.id, r.request_id, r.time_ms, r.client_ip, r.endpoint, r.model, \
     r.node, r.nodes_tried, r.status, r.outcome, r.stream, r.duration_ms, r.ttft_ms, \
     r.prompt_tokens, r.completion_tokens, r.error, r.api_key";
const ITEM_COLUMN_COUNT: usize = 17;

/// One request in a list (no bodies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub id: i64,
    pub request_id: String,
    /// When the request arrived.
    pub time: DateTime<Utc>,
    pub client_ip: Option<String>,
    /// Name of the client API key the request came with; none without a valid key.
    pub api_key: Option<String>,
    pub endpoint: String,
    pub model: String,
    /// The node that answered (or last failed); none when no node was tried.
    pub node: Option<String>,
    pub nodes_tried: Vec<String>,
    pub status: u16,
    pub outcome: String,
    pub stream: bool,
    pub duration_ms: f64,
    /// Time to the first byte of the node's answer (the first token of a stream).
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub error: Option<String>,
}

/// One request in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryDetail {
    #[serde(flatten)]
    pub item: HistoryItem,
    /// The request body as stored (lossy UTF-8), at most the body limit.
    pub request_body: String,
    /// Whether the request body was longer than the limit and cut.
    pub request_truncated: bool,
    /// Size of the request body as received.
    pub request_bytes: u64,
    /// The response as captured, at most the body limit (lossy UTF-8).
    pub response_body: String,
    /// The generated text, assembled from the stream's pieces; none when the response had none.
    pub response_text: Option<String>,
    /// Response bytes beyond the limit, not stored (0 when `response_body` is complete).
    pub response_bytes_dropped: u64,
    /// The final counters: Ollama's `done` fields or OpenAI's `usage` and `finish_reason`.
    pub counters: Option<serde_json::Value>,
}

/// Requests that arrived in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteBucket {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    pub requests: u64,
    /// Requests answered with status 400 or above, or that failed mid-answer.
    pub errors: u64,
    /// Mean duration of the minute's requests (0 when there were none).
    pub avg_latency_ms: f64,
    /// Completion tokens of the minute's requests.
    pub tokens: u64,
    /// Completion tokens generated per second over the minute (`tokens / 60`).
    pub tokens_per_second: f64,
}

/// Where the export stopped: the last item sent (lists are newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub id: i64,
}

impl From<&HistoryItem> for Cursor {
    fn from(item: &HistoryItem) -> Self {
        Cursor {
            time_ms: item.time.timestamp_millis(),
            id: item.id,
        }
    }
}

/// How [`HistoryStore::open_in_dir`] found the file.
#[derive(Debug)]
pub enum Opened {
    /// The file was opened (or created).
    Ready(HistoryStore),
    /// The file could not be opened as a database; it was moved to `moved_to`
    /// and a new one created.
    Recovered {
        store: HistoryStore,
        reason: String,
        moved_to: PathBuf,
    },
}

/// The history database. Cheap to share: every call takes a pooled connection.
#[derive(Debug)]
pub struct HistoryStore {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl HistoryStore {
    /// Opens (or creates) the database at `path` and its tables, bringing
    /// a file of an older schema up to [`SCHEMA_VERSION`] in place. A file of
    /// a newer schema is refused, not changed.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = connect(path)?;
        check_pages(&conn)?;
        prepare_schema(&mut conn)?;
        Ok(Self {
            path: path.to_owned(),
            pool: Mutex::new(vec![conn]),
        })
    }

    /// Opens `history.db` in `data_dir`. A file that is not a database (or
    /// cannot be opened at all) is moved aside, with its WAL, and a new one created.
    pub fn open_in_dir(data_dir: &Path) -> anyhow::Result<Opened> {
        let path = data_dir.join(FILE_NAME);
        owner_only(&path);
        let error = match Self::open(&path) {
            Ok(store) => return Ok(Opened::Ready(store)),
            Err(e) => e,
        };
        let unusable = matches!(
            error.sqlite_error_code(),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt | ErrorCode::CannotOpen)
        );
        if !unusable || std::fs::symlink_metadata(&path).is_err() {
            return Err(
                anyhow::Error::new(error).context(format!("could not open {}", path.display()))
            );
        }
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let moved_to = data_dir.join(format!("{FILE_NAME}.corrupt-{stamp}"));
        std::fs::rename(&path, &moved_to).map_err(|e| {
            anyhow::anyhow!(
                "could not open {} ({error}) nor move it aside: {e}",
                path.display()
            )
        })?;
        for suffix in ["-wal", "-shm"] {
            let side = data_dir.join(format!("{FILE_NAME}{suffix}"));
            if side.exists() {
                let _ = std::fs::rename(
                    &side,
                    data_dir.join(format!("{FILE_NAME}.corrupt-{stamp}{suffix}")),
                );
            }
        }
        owner_only(&path);
        let store = Self::open(&path)
            .map_err(|e| anyhow::anyhow!("could not create {}: {e}", path.display()))?;
        Ok(Opened::Recovered {
            store,
            reason: error.to_string(),
            moved_to,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a pooled connection (opening one when none is free).
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let pooled = self.pool.lock().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = f(&mut conn);
        let mut pool = self.pool.lock();
        if pool.len() < POOL_SIZE {
            pool.push(conn);
        }
        result
    }

    /// Stores `entries` in one transaction, with their assembled response text.
    pub fn insert(&self, entries: &[HistoryEntry]) -> rusqlite::Result<()> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut request = tx.prepare_cached(
                    "INSERT INTO requests (request_id, time_ms, client_ip, endpoint, model, model_key, \
                     node, nodes_tried, status, outcome, stream, duration_ms, ttft_ms, prompt_tokens, \
                     completion_tokens, generation_ms, error, api_key) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )?;
                let mut search =
                    tx.prepare_cached("INSERT INTO search (rowid, text) VALUES (?1, ?2)")?;
                let mut body = tx.prepare_cached(
                    "INSERT INTO bodies (id, request_body, request_bytes, response_body, \
                     response_bytes_dropped, response_text, counters) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for entry in entries {
                    let nodes_tried =
                        serde_json::to_string(&entry.nodes_tried).unwrap_or_else(|_| "[]".into());
                    request.execute(params![
                        entry.request_id,
                        entry.time.timestamp_millis(),
                        entry.client_ip,
                        entry.endpoint,
                        entry.model,
                        model_key(&entry.model),
                        entry.node,
                        nodes_tried,
                        entry.status,
                        entry.outcome.as_str(),
                        entry.stream,
                        millis(entry.duration),
                        entry.time_to_first_token.map(millis),
                        entry.prompt_tokens.map(saturating_i64),
                        entry.completion_tokens.map(saturating_i64),
                        entry.generation_time.map(millis),
                        entry.error,
                        entry.api_key.as_deref(),
                    ])?;
                    let id = tx.last_insert_rowid();
                    let digest = digest_response(&entry.response_body);
                    let counters = digest
                        .counters
                        .map(|c| serde_json::Value::Object(c).to_string());
                    search.execute(params![id, search_text(entry, digest.text.as_deref())])?;
                    body.execute(params![
                        id,
                        &entry.request_body[..],
                        saturating_i64(entry.request_bytes),
                        &entry.response_body[..],
                        saturating_i64(entry.response_bytes_dropped),
                        digest.text,
                        counters,
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Deletes the requests that arrived before `cutoff`; returns how many.
    pub fn prune_before(&self, cutoff: DateTime<Utc>) -> rusqlite::Result<u64> {
        let cutoff_ms = cutoff.timestamp_millis();
        let mut deleted = 0u64;
        loop {
            let n = self.with_conn(|conn| {
                let tx = conn.transaction()?;
                let ids: Vec<i64> = {
                    let mut select = tx.prepare_cached(
                        "SELECT id FROM requests WHERE time_ms < ?1 ORDER BY time_ms LIMIT ?2",
                    )?;
                    select
                        .query_map(params![cutoff_ms, PRUNE_CHUNK as i64], |row| row.get(0))?
                        .collect::<rusqlite::Result<_>>()?
                };
                {
                    let mut bodies = tx.prepare_cached("DELETE FROM bodies WHERE id = ?1")?;
                    let mut search = tx.prepare_cached("DELETE FROM search WHERE rowid = ?1")?;
                    let mut requests = tx.prepare_cached("DELETE FROM requests WHERE id = ?1")?;
                    for id in &ids {
                        bodies.execute([id])?;
                        search.execute([id])?;
                        requests.execute([id])?;
                    }
                }
                tx.commit()?;
                Ok(ids.len())
            })?;
            deleted += n as u64;
            if n < PRUNE_CHUNK {
                return Ok(deleted);
            }
        }
    }

    /// How many requests match `filter` (exactly, however long a text search takes).
    pub fn count(&self, filter: &Filter) -> rusqlite::Result<u64> {
        self.with_conn(|conn| {
            let search = Search::plan(conn, filter.q.as_deref())?;
            count(conn, filter, &search, None)
        })
    }

    /// One page of the requests matching `filter`, newest first, and how
    /// many match: exactly, except for text searches that match more than
    /// [`SEARCH_COUNT_CAP`] requests, counted up to the cap.
    pub fn list(&self, filter: &Filter, page: Page) -> rusqlite::Result<Listed> {
        self.with_conn(|conn| {
            let search = Search::plan(conn, filter.q.as_deref())?;
            let cap = search.is_some().then_some(SEARCH_COUNT_CAP);
            let total = match search {
                // The index already counted (up to the cap) what the search alone matches.
                Search::Scan {
                    hits: Some(hits), ..
                } if filter.is_text_search_only() => hits,
                _ => count(conn, filter, &search, cap)?,
            };
            let mut values = Vec::new();
            let conditions = conditions(filter, &search, Use::Page, &mut values);
            values.push(Value::Integer(i64::from(page.limit)));
            values.push(Value::Integer(saturating_i64(page.offset)));
            let sql = format!(
                "SELECT {ITEM_COLUMNS} FROM requests r {} \
                 ORDER BY r.time_ms DESC, r.id DESC LIMIT ? OFFSET ?",
                where_clause(&conditions)
            );
            Ok(Listed {
                total: cap.map_or(total, |cap| total.min(cap)),
                total_capped: cap.is_some_and(|cap| total > cap),
                items: query_items(conn, &sql, values)?,
            })
        })
    }

    /// Up to `limit` requests matching `filter` that come after `cursor` in
    /// the newest-first order (from the newest when `cursor` is none). Pages
    /// read this way stay consistent while new requests are added.
    pub fn page_after(
        &self,
        filter: &Filter,
        cursor: Option<Cursor>,
        limit: u32,
    ) -> rusqlite::Result<Vec<HistoryItem>> {
        self.with_conn(|conn| {
            let search = Search::plan(conn, filter.q.as_deref())?;
            let mut values = Vec::new();
            let mut conditions = conditions(filter, &search, Use::Page, &mut values);
            if let Some(cursor) = cursor {
                conditions.push("r.time_ms <= ? AND (r.time_ms < ? OR r.id < ?)".to_owned());
                values.push(Value::Integer(cursor.time_ms));
                values.push(Value::Integer(cursor.time_ms));
                values.push(Value::Integer(cursor.id));
            }
            values.push(Value::Integer(i64::from(limit)));
            let sql = format!(
                "SELECT {ITEM_COLUMNS} FROM requests r {} ORDER BY r.time_ms DESC, r.id DESC LIMIT ?",
                where_clause(&conditions)
            );
            query_items(conn, &sql, values)
        })
    }

    /// One request in full, if it is (still) stored.
    pub fn get(&self, id: i64) -> rusqlite::Result<Option<HistoryDetail>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS}, b.request_body, b.request_bytes, b.response_body, \
             b.response_bytes_dropped, b.response_text, b.counters \
             FROM requests r LEFT JOIN bodies b ON b.id = r.id WHERE r.id = ?1"
        );
        self.with_conn(|conn| {
            conn.prepare_cached(&sql)?
                .query_row([id], |row| {
                    let item = HistoryItem::from_row(row)?;
                    let column = ITEM_COLUMN_COUNT;
                    let request_body: Option<Vec<u8>> = row.get(column)?;
                    let request_body = request_body.unwrap_or_default();
                    let request_bytes: Option<i64> = row.get(column + 1)?;
                    let request_bytes = request_bytes.map_or(0, |n| n.max(0) as u64);
                    let response_body: Option<Vec<u8>> = row.get(column + 2)?;
                    let dropped: Option<i64> = row.get(column + 3)?;
                    let counters: Option<String> = row.get(column + 5)?;
                    Ok(HistoryDetail {
                        item,
                        request_truncated: request_bytes > request_body.len() as u64,
                        request_body: String::from_utf8_lossy(&request_body).into_owned(),
                        request_bytes,
                        response_body: String::from_utf8_lossy(&response_body.unwrap_or_default())
                            .into_owned(),
                        response_text: row.get(column + 4)?,
                        response_bytes_dropped: dropped.map_or(0, |n| n.max(0) as u64),
                        counters: counters.and_then(|c| serde_json::from_str(&c).ok()),
                    })
                })
                .optional()
        })
    }

    /// Per-minute figures for the `minutes` minutes up to and including the
    /// one that holds `now`, oldest first, with empty minutes as zeros.
    pub fn timeseries(
        &self,
        now: DateTime<Utc>,
        minutes: u32,
    ) -> rusqlite::Result<Vec<MinuteBucket>> {
        let last = now.timestamp_millis().div_euclid(60_000);
        let first = last - i64::from(minutes.max(1)) + 1;
        let rows: Vec<(i64, i64, i64, f64, i64)> = self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT time_ms / 60000 AS minute, count(*), \
                 sum(status >= 400 OR outcome = 'failed'), avg(duration_ms), \
                 coalesce(sum(completion_tokens), 0) \
                 FROM requests WHERE time_ms >= ?1 AND time_ms < ?2 GROUP BY minute",
            )?;
            statement
                .query_map(params![first * 60_000, (last + 1) * 60_000], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?
                .collect()
        })?;
        let mut buckets: Vec<MinuteBucket> = (first..=last)
            .map(|minute| MinuteBucket {
                minute: DateTime::from_timestamp_millis(minute * 60_000).unwrap_or_default(),
                requests: 0,
                errors: 0,
                avg_latency_ms: 0.0,
                tokens: 0,
                tokens_per_second: 0.0,
            })
            .collect();
        for (minute, requests, errors, latency, tokens) in rows {
            if let Some(bucket) = usize::try_from(minute - first)
                .ok()
                .and_then(|i| buckets.get_mut(i))
            {
                bucket.requests = requests.max(0) as u64;
                bucket.errors = errors.max(0) as u64;
                bucket.avg_latency_ms = round3(latency);
                bucket.tokens = tokens.max(0) as u64;
                bucket.tokens_per_second = round3(tokens.max(0) as f64 / 60.0);
            }
        }
        Ok(buckets)
    }
}

impl HistoryItem {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let time_ms: i64 = row.get(2)?;
        let nodes_tried: String = row.get(7)?;
        let unsigned = |n: Option<i64>| n.map(|n| n.max(0) as u64);
        Ok(HistoryItem {
            id: row.get(0)?,
            request_id: row.get(1)?,
            time: DateTime::from_timestamp_millis(time_ms).unwrap_or_default(),
            client_ip: row.get(3)?,
            api_key: row.get(16)?,
            endpoint: row.get(4)?,
            model: row.get(5)?,
            node: row.get(6)?,
            nodes_tried: serde_json::from_str(&nodes_tried).unwrap_or_default(),
            status: row.get(8)?,
            outcome: row.get(9)?,
            stream: row.get(10)?,
            duration_ms: row.get(11)?,
            ttft_ms: row.get(12)?,
            prompt_tokens: unsigned(row.get(13)?),
            completion_tokens: unsigned(row.get(14)?),
            error: row.get(15)?,
        })
    }
}

/// Creates the tables of a new file, or migrates an older one, in one
/// transaction: a failed migration leaves the file as it was.
fn prepare_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    // Immediate: a second coordinator opening the same file waits here
    // instead of migrating it at the same time.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        SCHEMA_VERSION => return Ok(()),
        0 => tx.execute_batch(SCHEMA)?,
        1 => tx.execute_batch(MIGRATE_FROM_1)?,
        newer => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(format!(
                    "the request history has schema version {newer}, newer than this \
                     coordinator's {SCHEMA_VERSION}; it was written by a newer release"
                )),
            ));
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    if version != 0 {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "request history schema upgraded"
        );
    }
    Ok(())
}

/// `PRAGMA quick_check`: a file with a valid header and broken pages opens, then
/// fails every write; it is refused here, so that it is moved aside at start.
fn check_pages(conn: &Connection) -> rusqlite::Result<()> {
    let result: String = conn.query_row("PRAGMA quick_check(1)", [], |row| row.get(0))?;
    if result == "ok" {
        return Ok(());
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!("the database is damaged: {result}")),
    ))
}

/// Makes the database at `path` readable by its owner only, creating it
/// empty if it is not there (SQLite takes an empty file as a new database,
/// and gives its `-wal` and `-shm` files the database's mode): it holds
/// prompts and answers. A file another version left readable by others is
/// restricted, with its side files. A failure is logged; opening then says
/// what is wrong.
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let result = match created {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut restricted = Ok(());
                for suffix in ["", "-wal", "-shm"] {
                    let file = PathBuf::from(format!("{}{suffix}", path.display()));
                    if let Ok(meta) = std::fs::metadata(&file)
                        && meta.permissions().mode() & 0o077 != 0
                    {
                        tracing::info!(path = %file.display(), "the request history was readable by other users; it is now owner-only");
                        restricted = restricted.and(std::fs::set_permissions(
                            &file,
                            std::fs::Permissions::from_mode(0o600),
                        ));
                    }
                }
                restricted
            }
            Err(e) => Err(e),
        };
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "could not make the request history owner-only");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Opens a connection with the settings every one uses.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers never wait for the writer; NORMAL sync is durable across
    // process crashes (a power cut may lose the last transactions).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A page of [`HistoryStore::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Requests matching the filter (at most [`SEARCH_COUNT_CAP`] when `total_capped`).
    pub total: u64,
    /// Whether more than `total` requests match (text searches only).
    pub total_capped: bool,
    pub items: Vec<HistoryItem>,
}

/// How a text search is run, chosen per query.
enum Search {
    None,
    /// Through the trigram index: the term has 3 characters or more and the
    /// index finds at most [`SEARCH_COUNT_CAP`] candidates (requests holding
    /// all of its trigrams), which are then checked like a scan would.
    Index {
        trigrams: String,
        pattern: String,
    },
    /// By reading the columns (LIKE): the term is too short for trigrams, or
    /// so common that a newest-first scan finds a page of matches at once.
    /// `hits`: the matches the index found, counted up to the cap + 1.
    Scan {
        pattern: String,
        hits: Option<u64>,
    },
}

/// What the conditions are for: counting uses the indexes on every column,
/// pages prefer walking the time index (they stop after one page).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Count,
    Page,
}

impl Search {
    fn plan(conn: &Connection, q: Option<&str>) -> rusqlite::Result<Self> {
        let Some(q) = q else {
            return Ok(Search::None);
        };
        // SQLite ends a LIKE pattern at a NUL, which would match every request; a
        // stored body never holds one (JSON writes it as \u0000), so nothing should.
        let cleaned;
        let q = if q.contains('\0') {
            cleaned = q.replace('\0', "\u{FFFD}");
            cleaned.as_str()
        } else {
            q
        };
        if q.chars().count() < 3 {
            return Ok(Search::Scan {
                pattern: format!("%{}%", escape_like(q)),
                hits: None,
            });
        }
        let trigrams = trigram_query(q);
        let hits: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT rowid FROM search WHERE search MATCH ?1 LIMIT ?2)",
            )?
            .query_row(
                params![trigrams, saturating_i64(SEARCH_COUNT_CAP + 1)],
                |row| row.get(0),
            )?;
        let hits = hits.max(0) as u64;
        let pattern = format!("%{}%", escape_like(q));
        Ok(if hits > SEARCH_COUNT_CAP {
            Search::Scan {
                pattern,
                hits: Some(hits),
            }
        } else {
            Search::Index { trigrams, pattern }
        })
    }

    fn is_some(&self) -> bool {
        !matches!(self, Search::None)
    }
}

/// How many requests match, stopping at `cap` + 1 when there is a cap.
fn count(
    conn: &Connection,
    filter: &Filter,
    search: &Search,
    cap: Option<u64>,
) -> rusqlite::Result<u64> {
    let mut values = Vec::new();
    let conditions = conditions(filter, search, Use::Count, &mut values);
    let sql = match cap {
        None => format!(
            "SELECT count(*) FROM requests r {}",
            where_clause(&conditions)
        ),
        Some(cap) => {
            values.push(Value::Integer(saturating_i64(cap + 1)));
            format!(
                "SELECT count(*) FROM (SELECT 1 FROM requests r {} LIMIT ?)",
                where_clause(&conditions)
            )
        }
    };
    let count: i64 = conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(values), |row| row.get(0))?;
    Ok(count.max(0) as u64)
}

fn query_items(
    conn: &Connection,
    sql: &str,
    values: Vec<Value>,
) -> rusqlite::Result<Vec<HistoryItem>> {
    conn.prepare_cached(sql)?
        .query_map(params_from_iter(values), HistoryItem::from_row)?
        .collect()
}

/// What the text search looks in, as indexed: model, node, error, request body, response text.
fn search_text(entry: &HistoryEntry, response_text: Option<&str>) -> String {
    let request = String::from_utf8_lossy(&entry.request_body);
    let mut text = String::with_capacity(
        entry.model.len() + request.len() + response_text.map_or(0, str::len) + 64,
    );
    for part in [
        entry.model.as_str(),
        entry.node.as_deref().unwrap_or_default(),
        entry.error.as_deref().unwrap_or_default(),
        &request,
        response_text.unwrap_or_default(),
    ] {
        text.push_str(part);
        text.push('\n');
    }
    text
}

/// SQL conditions for `filter` (with `r` as the requests table), their values appended to `values`.
fn conditions(
    filter: &Filter,
    search: &Search,
    usage: Use,
    values: &mut Vec<Value>,
) -> Vec<String> {
    let mut conditions = Vec::new();
    let mut equal = |column: &str, value: Value| {
        conditions.push(format!("{column} = ?"));
        values.push(value);
    };
    if let Some(model) = &filter.model {
        equal("r.model_key", Value::Text(model_key(model).to_owned()));
    }
    if let Some(node) = &filter.node {
        equal("r.node", Value::Text(node.clone()));
    }
    if let Some(key) = &filter.key {
        equal("r.api_key", Value::Text(key.clone()));
    }
    if let Some(endpoint) = &filter.endpoint {
        equal("r.endpoint", Value::Text(endpoint.clone()));
    }
    if let Some(outcome) = &filter.outcome {
        equal("r.outcome", Value::Text(outcome.clone()));
    }
    match filter.status {
        Some(StatusFilter::Code(code)) => equal("r.status", Value::Integer(i64::from(code))),
        Some(StatusFilter::Class(class)) => {
            // A page walks the time index and stops after one page; the
            // status index would make it sort every request of the class first.
            conditions.push(if usage == Use::Page {
                "+r.status >= ? AND +r.status < ?".to_owned()
            } else {
                "r.status >= ? AND r.status < ?".to_owned()
            });
            values.push(Value::Integer(i64::from(class) * 100));
            values.push(Value::Integer(i64::from(class) * 100 + 100));
        }
        None => {}
    }
    if let Some(since) = filter.since {
        conditions.push("r.time_ms >= ?".to_owned());
        values.push(Value::Integer(since.timestamp_millis()));
    }
    if let Some(until) = filter.until {
        conditions.push("r.time_ms < ?".to_owned());
        values.push(Value::Integer(until.timestamp_millis()));
    }
    match search {
        Search::None => {}
        Search::Index { trigrams, pattern } => {
            conditions.push("r.id IN (SELECT rowid FROM search WHERE search MATCH ?)".to_owned());
            values.push(Value::Text(trigrams.clone()));
            // The index knows which trigrams a request holds, not where:
            // the candidates are checked for the term itself.
            contains_condition(pattern, &mut conditions, values);
        }
        Search::Scan { pattern, .. } => contains_condition(pattern, &mut conditions, values),
    }
    conditions
}

/// The condition that a request's searched columns contain the LIKE `pattern`.
fn contains_condition(pattern: &str, conditions: &mut Vec<String>, values: &mut Vec<Value>) {
    // The small columns first: the bodies are read only for rows they do not match.
    conditions.push(
        "(r.model LIKE ? ESCAPE '\\' OR r.node LIKE ? ESCAPE '\\' OR r.error LIKE ? ESCAPE '\\' \
         OR EXISTS (SELECT 1 FROM bodies b WHERE b.id = r.id \
         AND (b.response_text LIKE ? ESCAPE '\\' OR b.request_body LIKE ? ESCAPE '\\')))"
            .to_owned(),
    );
    for _ in 0..5 {
        values.push(Value::Text(pattern.to_owned()));
    }
}

/// An FTS5 query for the requests holding every trigram of `term` (3
/// characters or more), each once: the index keeps no positions, so a
/// phrase query is not possible.
fn trigram_query(term: &str) -> String {
    let chars: Vec<char> = term.chars().collect();
    let mut seen = std::collections::HashSet::new();
    let mut query = String::new();
    for window in chars.windows(3) {
        let trigram: String = window.iter().collect();
        if !seen.insert(trigram.to_lowercase()) {
            continue;
        }
        if !query.is_empty() {
            query.push_str(" AND ");
        }
        query.push('"');
        query.push_str(&trigram.replace('"', "\"\""));
        query.push('"');
    }
    query
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

/// `text` with LIKE's wildcards (and the escape character) taken literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn millis(duration: Duration) -> f64 {
    round3(duration.as_secs_f64() * 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::record::Outcome;
    use bytes::Bytes;

    fn entry(time: DateTime<Utc>, model: &str, prompt: &str) -> HistoryEntry {
        HistoryEntry {
            request_id: format!("r-{}", time.timestamp_millis()),
            time,
            client_ip: Some("10.0.0.1".into()),
            api_key: Some("alice".into()),
            endpoint: "/api/generate".into(),
            model: model.into(),
            stream: true,
            node: Some("a".into()),
            nodes_tried: vec!["b".into(), "a".into()],
            status: 200,
            outcome: Outcome::Completed,
            duration: Duration::from_millis(12),
            time_to_first_token: Some(Duration::from_millis(2)),
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            generation_time: Some(Duration::from_millis(8)),
            error: None,
            request_bytes: 13 + prompt.len() as u64,
            request_body: Bytes::from(format!("{{\"prompt\":\"{prompt}\"}}")),
            response_body: Bytes::from_static(b"{\"response\":\"he\"}\n{\"response\":\"llo\"}\n"),
            response_bytes_dropped: 0,
        }
    }

    fn store() -> (tempfile::TempDir, HistoryStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(&dir.path().join(FILE_NAME)).unwrap();
        (dir, store)
    }

    #[test]
    fn rows_read_back_as_written() {
        let (_dir, store) = store();
        let time = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        store
            .insert(&[entry(time, "llama3.2:latest", "hi")])
            .unwrap();
        let detail = store.get(1).unwrap().unwrap();
        assert_eq!(detail.item.time, time);
        assert_eq!(detail.item.nodes_tried, ["b", "a"]);
        assert_eq!(detail.item.api_key.as_deref(), Some("alice"));
        assert_eq!(detail.item.duration_ms, 12.0);
        assert_eq!(detail.item.ttft_ms, Some(2.0));
        assert_eq!(detail.item.completion_tokens, Some(4));
        assert_eq!(detail.request_body, "{\"prompt\":\"hi\"}");
        assert!(!detail.request_truncated);
        assert_eq!(detail.response_text.as_deref(), Some("hello"));
        assert_eq!(store.get(2).unwrap(), None);
        // `llama3.2` and `llama3.2:latest` are one model.
        let filter = Filter {
            model: Some("llama3.2".into()),
            ..Filter::default()
        };
        assert_eq!(store.count(&filter).unwrap(), 1);
    }

    /// How many stored requests the text search `q` matches.
    fn search_count(store: &HistoryStore, q: &str) -> u64 {
        store
            .count(&Filter {
                q: Some(q.into()),
                ..Filter::default()
            })
            .unwrap()
    }

    #[test]
    fn search_takes_wildcards_literally() {
        let (_dir, store) = store();
        let now = Utc::now();
        store
            .insert(&[entry(now, "m", "100% sure"), entry(now, "m", "1000 a_b")])
            .unwrap();
        let count = |q: &str| search_count(&store, q);
        assert_eq!(count("100%"), 1);
        assert_eq!(count("a_b"), 1);
        assert_eq!(count("_"), 1);
        assert_eq!(count("SURE"), 1);
        assert_eq!(count("goodbye"), 0);
        assert_eq!(count("llo"), 2);
    }

    #[test]
    fn search_matches_the_term_not_just_its_trigrams() {
        let (_dir, store) = store();
        let now = Utc::now();
        // The first prompt holds "abc", "bca" and "cab" but not "abcab".
        store
            .insert(&[
                entry(now, "m", "xabcx cabx bcax"),
                entry(now, "m", "say ABCAB twice"),
            ])
            .unwrap();
        let count = |q: &str| search_count(&store, q);
        assert_eq!(count("abcab"), 1);
        assert_eq!(count("cab"), 2);
        assert_eq!(count("x cabx b"), 1);
        assert_eq!(count("\"quoted\""), 0);
        assert_eq!(trigram_query("aaaa\"b"), r#""aaa" AND "aa""" AND "a""b""#);
    }

    #[test]
    fn pruning_and_keyset_pages() {
        let (_dir, store) = store();
        let now = Utc::now();
        let entries: Vec<_> = (0..12)
            .map(|i| entry(now - chrono::Duration::hours(i), "m", "x"))
            .collect();
        store.insert(&entries).unwrap();
        // Pages after a cursor cover everything once, newest first.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.page_after(&Filter::default(), cursor, 5).unwrap();
            let Some(last) = page.last() else { break };
            cursor = Some(Cursor::from(last));
            seen.extend(page.iter().map(|i| i.id));
        }
        assert_eq!(seen, (1..=12).collect::<Vec<i64>>());
        let deleted = store
            .prune_before(now - chrono::Duration::minutes(330))
            .unwrap();
        assert_eq!(deleted, 6);
        assert_eq!(store.count(&Filter::default()).unwrap(), 6);
        assert_eq!(store.get(12).unwrap(), None);
    }

    #[test]
    fn timeseries_has_one_bucket_per_minute() {
        let (_dir, store) = store();
        let now = Utc::now();
        let mut failed = entry(now, "m", "x");
        failed.status = 502;
        store
            .insert(&[
                entry(now, "m", "x"),
                failed,
                entry(now - chrono::Duration::minutes(2), "m", "x"),
            ])
            .unwrap();
        let buckets = store.timeseries(now, 5).unwrap();
        assert_eq!(buckets.len(), 5);
        let last = &buckets[4];
        assert_eq!((last.requests, last.errors, last.tokens), (2, 1, 8));
        assert_eq!(last.avg_latency_ms, 12.0);
        assert_eq!(buckets[2].requests, 1);
        assert_eq!(buckets[3].requests, 0);
        assert!(
            buckets
                .windows(2)
                .all(|w| w[1].minute - w[0].minute == chrono::Duration::minutes(1))
        );
    }

    /// The schema as version 1 wrote it, before requests had an API key.
    const SCHEMA_V1: &str = "
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    client_ip TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    model_key TEXT NOT NULL,
    node TEXT,
    nodes_tried TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    stream INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ttft_ms REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    generation_ms REAL,
    error TEXT
);
CREATE TABLE bodies (
    id INTEGER PRIMARY KEY,
    request_body BLOB NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_body BLOB NOT NULL,
    response_bytes_dropped INTEGER NOT NULL,
    response_text TEXT,
    counters TEXT
);
CREATE VIRTUAL TABLE search USING fts5(
    text, content='', contentless_delete=1, tokenize='trigram', detail=none
);
CREATE INDEX requests_time ON requests(time_ms);
CREATE INDEX requests_model ON requests(model_key, time_ms);
CREATE INDEX requests_node ON requests(node, time_ms);
CREATE INDEX requests_status ON requests(status, time_ms);
PRAGMA user_version = 1;
";

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_1_file_is_migrated_in_place_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            for (i, model) in ["old-a", "old-b"].iter().enumerate() {
                conn.execute(
                    "INSERT INTO requests (request_id, time_ms, client_ip, endpoint, model, \
                     model_key, node, nodes_tried, status, outcome, stream, duration_ms) \
                     VALUES (?1, ?2, NULL, '/api/chat', ?3, ?3, 'a', '[\"a\"]', 200, \
                     'completed', 0, 5.0)",
                    params![format!("old-{i}"), 1_700_000_000_000i64 + i as i64, model],
                )
                .unwrap();
                let id = conn.last_insert_rowid();
                conn.execute(
                    "INSERT INTO bodies (id, request_body, request_bytes, response_body, \
                     response_bytes_dropped) VALUES (?1, X'7B7D', 2, X'', 0)",
                    [id],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO search (rowid, text) VALUES (?1, ?2)",
                    params![id, model],
                )
                .unwrap();
            }
        }

        let store = HistoryStore::open(&path).unwrap();
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        let old = store.page_after(&Filter::default(), None, 10).unwrap();
        assert_eq!(old.len(), 2);
        assert!(old.iter().all(|item| item.api_key.is_none()), "{old:?}");
        assert_eq!(store.get(old[0].id).unwrap().unwrap().request_body, "{}");
        assert_eq!(search_count(&store, "old-b"), 1);

        store.insert(&[entry(Utc::now(), "new", "x")]).unwrap();
        let alice = Filter {
            key: Some("alice".into()),
            ..Filter::default()
        };
        let keyed = store.page_after(&alice, None, 10).unwrap();
        assert_eq!(keyed.len(), 1);
        assert_eq!(keyed[0].model, "new");
        assert_eq!(keyed[0].api_key.as_deref(), Some("alice"));
        assert_eq!(store.count(&Filter::default()).unwrap(), 3);
        drop(store);
        // Opening it again changes nothing.
        let store = HistoryStore::open(&path).unwrap();
        assert_eq!(store.count(&Filter::default()).unwrap(), 3);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    #[test]
    fn a_new_file_starts_at_the_current_version_and_a_newer_one_is_refused() {
        let (dir, store) = store();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        drop(store);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = HistoryStore::open(&path).unwrap_err();
        assert!(error.to_string().contains("newer"), "{error}");
        // Refused, not moved aside: a newer release can still read it.
        assert!(matches!(
            HistoryStore::open_in_dir(dir.path()),
            Err(e) if format!("{e:#}").contains("newer")
        ));
        assert!(path.is_file());
    }

    #[cfg(unix)]
    #[test]
    fn the_history_file_and_its_side_files_are_its_owners_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let Opened::Ready(store) = HistoryStore::open_in_dir(dir.path()).unwrap() else {
            panic!("a new file is ready");
        };
        store.insert(&[entry(Utc::now(), "m", "hello")]).unwrap();
        assert_eq!(mode(&path), 0o600);
        let wal = dir.path().join(format!("{FILE_NAME}-wal"));
        assert_eq!(mode(&wal), 0o600);
        drop(store);
        // Left readable by others (by an older version): restricted when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _reopened = HistoryStore::open_in_dir(dir.path()).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn the_key_filter_matches_the_name_exactly() {
        let (_dir, store) = store();
        let now = Utc::now();
        let mut anonymous = entry(now, "m", "x");
        anonymous.api_key = None;
        let mut bob = entry(now, "m", "x");
        bob.api_key = Some("bob".into());
        store
            .insert(&[entry(now, "m", "x"), anonymous, bob])
            .unwrap();
        let count = |key: &str| {
            store
                .count(&Filter {
                    key: Some(key.into()),
                    ..Filter::default()
                })
                .unwrap()
        };
        assert_eq!((count("alice"), count("bob")), (1, 1));
        assert_eq!((count("ALICE"), count("ali")), (0, 0));
        assert_eq!(store.count(&Filter::default()).unwrap(), 3);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"garbage garbage garbage").unwrap();
        let Opened::Recovered {
            store, moved_to, ..
        } = HistoryStore::open_in_dir(dir.path()).unwrap()
        else {
            panic!("the corrupt file was not reported");
        };
        assert_eq!(std::fs::read(moved_to).unwrap(), b"garbage garbage garbage");
        store.insert(&[entry(Utc::now(), "m", "x")]).unwrap();
        drop(store);
        assert!(matches!(
            HistoryStore::open_in_dir(dir.path()).unwrap(),
            Opened::Ready(_)
        ));
    }

    #[test]
    fn a_database_with_damaged_pages_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let store = HistoryStore::open(&path).unwrap();
            let now = Utc::now();
            let many: Vec<_> = (0..500)
                .map(|i| entry(now, "m", &format!("answer {i} {}", "x".repeat(200))))
                .collect();
            store.insert(&many).unwrap();
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .unwrap();
        }
        // The header (page 1) stays valid; pages further in become noise.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        assert!(bytes.len() > 8 * page, "the test database is too small");
        for (i, b) in bytes[3 * page..6 * page].iter_mut().enumerate() {
            *b = (i * 131 % 251) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let Opened::Recovered {
            store,
            moved_to,
            reason,
        } = HistoryStore::open_in_dir(dir.path()).unwrap()
        else {
            panic!("the damaged file was not reported");
        };
        assert!(
            reason.contains("damaged") || reason.contains("malformed"),
            "{reason}"
        );
        assert_eq!(std::fs::read(moved_to).unwrap(), bytes);
        store.insert(&[entry(Utc::now(), "m", "x")]).unwrap();
        assert_eq!(store.count(&Filter::default()).unwrap(), 1);
    }

    #[test]
    fn odd_search_terms_are_a_normal_search() {
        let (_dir, store) = store();
        store.insert(&[entry(Utc::now(), "m", "hello")]).unwrap();
        for q in [
            "\0\u{ff}",
            "\"\"\"",
            "'; DROP TABLE requests; --",
            "a\"b OR c*",
            "NEAR(",
            "\0",
        ] {
            let filter = Filter {
                q: Some(q.into()),
                ..Filter::default()
            };
            assert_eq!(store.count(&filter).unwrap(), 0, "{q:?}");
        }
    }
}
