//! Client API keys: created and revoked by operators, stored as digests in
//! `keys.json`, and looked up on every inference request.
//!
//! A lookup is one SHA-256 of the presented key and one probe of a hash table
//! published through an `ArcSwap`: no lock. Per-key limits are atomics too:
//! requests per minute are a GCRA token bucket (one theoretical-arrival-time
//! word updated by compare-and-swap), concurrent requests one counter whose
//! permit lives inside the response body, so a stream counts until its end.
//!
//! The file may be changed by `llm-router keys …` while the coordinator runs;
//! the coordinator reloads it when its modification time changes
//! ([`ApiKeys::reload_if_changed`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::secret::{Digest, generate_token, write_private_file};

/// File in the data folder.
pub const KEYS_FILE: &str = "keys.json";
/// Every client key starts with this.
pub const KEY_PREFIX: &str = "llmr_";
/// Characters of a key kept in the clear to tell keys apart in listings.
const SHOWN_PREFIX_LEN: usize = 12;
const MAX_NAME_LEN: usize = 64;
const FORMAT_VERSION: u32 = 1;

/// Optional limits of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests per minute (bursts up to this many at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
}

/// A key as the file and the management API show it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub limits: KeyLimits,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    info: KeyInfo,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    version: u32,
    keys: Vec<StoredKey>,
}

/// Why the key store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid keys file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("a key name must be 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', not {0:?}")]
    InvalidName(String),
    #[error("a key named {0:?} already exists")]
    Exists(String),
    #[error("no key is named {0:?}")]
    Unknown(String),
    #[error("a limit must be at least 1")]
    ZeroLimit,
}

/// One key in force, with the state of its limits.
#[derive(Debug)]
pub struct ClientKey {
    /// Shared with every request record that names the key.
    pub name: Arc<str>,
    limits: KeyLimits,
    /// GCRA's theoretical arrival time, in nanoseconds since [`ApiKeys::epoch`].
    tat_nanos: AtomicU64,
    in_flight: AtomicU32,
}

/// Why a key's request was refused by its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When trying again can succeed.
    pub retry_after: Duration,
    pub limit: &'static str,
}

/// A request's share of its key's concurrency; released on drop.
#[derive(Debug)]
pub struct KeyPermit {
    key: Arc<ClientKey>,
}

impl KeyPermit {
    pub fn key(&self) -> &Arc<ClientKey> {
        &self.key
    }
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        self.key.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a concurrency-limited client is asked to wait: a guess, since no one
/// knows when a running request ends.
const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

impl ClientKey {
    fn new(name: &str, limits: KeyLimits) -> Self {
        Self {
            name: Arc::from(name),
            limits,
            tat_nanos: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Admits one request at `now_nanos` (nanoseconds since the store's epoch), or
    /// says how long to wait.
    pub fn admit(self: &Arc<Self>, now_nanos: u64) -> Result<KeyPermit, Limited> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let permit = KeyPermit {
            key: Arc::clone(self),
        };
        if let Some(max) = self.limits.max_concurrent
            && in_flight > max
        {
            return Err(Limited {
                retry_after: CONCURRENCY_RETRY_AFTER,
                limit: "concurrent requests",
            });
        }
        if let Some(rpm) = self.limits.requests_per_minute {
            self.take_token(rpm, now_nanos)?;
        }
        Ok(permit)
    }

    /// GCRA: each request moves the theoretical arrival time on by one emission
    /// interval (a minute / rpm); a request is refused while that time is more than
    /// the burst tolerance (a minute less one interval) ahead of now. A full burst of
    /// `rpm` requests is therefore allowed, then one every interval.
    fn take_token(&self, rpm: u32, now: u64) -> Result<(), Limited> {
        let interval = 60_000_000_000 / u64::from(rpm.max(1));
        let tolerance = 60_000_000_000 - interval;
        let mut tat = self.tat_nanos.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > tolerance {
                return Err(Limited {
                    retry_after: Duration::from_nanos(start - now - tolerance),
                    limit: "requests per minute",
                });
            }
            match self.tat_nanos.compare_exchange_weak(
                tat,
                start + interval,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// The keys in force, by digest.
#[derive(Debug, Default)]
struct KeyTable {
    by_digest: HashMap<Digest, Arc<ClientKey>>,
    listed: Vec<KeyInfo>,
}

/// The key store of one data folder.
#[derive(Debug)]
pub struct ApiKeys {
    path: PathBuf,
    table: ArcSwap<KeyTable>,
    /// Serialises changes: read the file, change, write.
    write: Mutex<Option<SystemTime>>,
    epoch: Instant,
}

impl ApiKeys {
    /// The store in `data_dir`, read now. A missing file is an empty store; one that
    /// does not parse is an error (running without the operator's keys would refuse
    /// every client, or worse).
    pub fn open(data_dir: &Path) -> Result<Self, KeyStoreError> {
        let path = data_dir.join(KEYS_FILE);
        let (file, modified) = read(&path)?;
        let store = Self {
            table: ArcSwap::from_pointee(KeyTable::default()),
            write: Mutex::new(modified),
            path,
            epoch: Instant::now(),
        };
        store.publish(&file);
        Ok(store)
    }

    /// An empty store that is never written (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self {
            path: PathBuf::new(),
            table: ArcSwap::from_pointee(KeyTable::default()),
            write: Mutex::new(None),
            epoch: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key `presented`, if it is one in force.
    pub fn lookup(&self, presented: &str) -> Option<Arc<ClientKey>> {
        if !presented.starts_with(KEY_PREFIX) {
            return None;
        }
        self.table
            .load()
            .by_digest
            .get(&Digest::of(presented))
            .cloned()
    }

    /// Nanoseconds since this store began, the clock of the rate limits.
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn list(&self) -> Vec<KeyInfo> {
        self.table.load().listed.clone()
    }

    pub fn len(&self) -> usize {
        self.table.load().listed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a key; returns it (shown this once, never stored) and its listing.
    pub fn create(
        &self,
        name: &str,
        limits: KeyLimits,
    ) -> Result<(String, KeyInfo), KeyStoreError> {
        check_name(name)?;
        if limits.requests_per_minute == Some(0) || limits.max_concurrent == Some(0) {
            return Err(KeyStoreError::ZeroLimit);
        }
        let key = generate_token(KEY_PREFIX);
        let info = KeyInfo {
            name: name.to_owned(),
            prefix: key[..SHOWN_PREFIX_LEN].to_owned(),
            created_at: Utc::now(),
            limits,
        };
        self.change(|file| {
            if file.keys.iter().any(|k| k.info.name == name) {
                return Err(KeyStoreError::Exists(name.to_owned()));
            }
            file.keys.push(StoredKey {
                info: info.clone(),
                sha256: Digest::of(&key).to_hex(),
            });
            Ok(())
        })?;
        tracing::info!(key = %name, "API key created");
        Ok((key, info))
    }

    /// Revokes the key `name`; it stops working at once.
    pub fn revoke(&self, name: &str) -> Result<(), KeyStoreError> {
        self.change(|file| {
            let before = file.keys.len();
            file.keys.retain(|k| k.info.name != name);
            if file.keys.len() == before {
                return Err(KeyStoreError::Unknown(name.to_owned()));
            }
            Ok(())
        })?;
        tracing::info!(key = %name, "API key revoked");
        Ok(())
    }

    /// Reads the file again when another process changed it; a file that became
    /// unreadable keeps the keys in force and says so.
    pub fn reload_if_changed(&self) {
        let mut known = self.write.lock();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == *known {
            return;
        }
        match read(&self.path) {
            Ok((file, modified)) => {
                *known = modified;
                self.publish(&file);
                tracing::info!(path = %self.path.display(), keys = file.keys.len(), "API keys reloaded");
            }
            Err(error) => {
                *known = modified;
                tracing::error!(%error, "API keys file changed but cannot be used; the keys read before stay in force");
            }
        }
    }

    /// Applies `edit` to the file as it is on disk now, writes it, and publishes it.
    fn change(
        &self,
        edit: impl FnOnce(&mut KeysFile) -> Result<(), KeyStoreError>,
    ) -> Result<(), KeyStoreError> {
        let mut known = self.write.lock();
        let (mut file, _) = read(&self.path)?;
        edit(&mut file)?;
        let text = serde_json::to_vec_pretty(&file).expect("the keys file always serialises");
        write_private_file(&self.path, &text).map_err(|source| KeyStoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        *known = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        self.publish(&file);
        Ok(())
    }

    /// Publishes the keys of `file`, keeping the limit state of keys that stay.
    fn publish(&self, file: &KeysFile) {
        let old = self.table.load();
        let mut table = KeyTable::default();
        for stored in &file.keys {
            let Some(digest) = Digest::from_hex(&stored.sha256) else {
                continue;
            };
            let key = old
                .by_digest
                .get(&digest)
                .filter(|k| k.limits == stored.info.limits)
                .cloned()
                .unwrap_or_else(|| Arc::new(ClientKey::new(&stored.info.name, stored.info.limits)));
            table.by_digest.insert(digest, key);
            table.listed.push(stored.info.clone());
        }
        table.listed.sort_by(|a, b| a.name.cmp(&b.name));
        self.table.store(Arc::new(table));
    }

    /// Adds a key in memory only, never written (benchmarks, tests).
    pub fn insert_unsaved(&self, name: &str, key: &str, limits: KeyLimits) {
        let old = self.table.load();
        let mut table = KeyTable {
            by_digest: old.by_digest.clone(),
            listed: old.listed.clone(),
        };
        table
            .by_digest
            .insert(Digest::of(key), Arc::new(ClientKey::new(name, limits)));
        table.listed.push(KeyInfo {
            name: name.to_owned(),
            prefix: key.chars().take(SHOWN_PREFIX_LEN).collect(),
            created_at: Utc::now(),
            limits,
        });
        self.table.store(Arc::new(table));
    }
}

fn check_name(name: &str) -> Result<(), KeyStoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(KeyStoreError::InvalidName(name.to_owned()))
    }
}

fn read(path: &Path) -> Result<(KeysFile, Option<SystemTime>), KeyStoreError> {
    let empty = || KeysFile {
        version: FORMAT_VERSION,
        keys: Vec::new(),
    };
    if path.as_os_str().is_empty() {
        return Ok((empty(), None));
    }
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((empty(), None)),
        Err(source) => {
            return Err(KeyStoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let corrupt = |reason: String| KeyStoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file: KeysFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {}", file.version)));
    }
    if let Some(bad) = file
        .keys
        .iter()
        .find(|k| Digest::from_hex(&k.sha256).is_none())
    {
        return Err(corrupt(format!(
            "key {:?} has no valid digest",
            bad.info.name
        )));
    }
    Ok((file, modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_created_key_is_found_until_it_is_revoked_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ApiKeys::open(dir.path()).unwrap();
        let (key, info) = keys.create("alice", KeyLimits::default()).unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        assert!(key.starts_with(&info.prefix));
        assert_eq!(&*keys.lookup(&key).unwrap().name, "alice");
        assert!(keys.lookup("llmr_not-a-key").is_none());
        let text = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!text.contains(&key), "the file must hold only the digest");

        let reopened = ApiKeys::open(dir.path()).unwrap();
        assert!(reopened.lookup(&key).is_some());
        reopened.revoke("alice").unwrap();
        assert!(reopened.lookup(&key).is_none());
        assert!(matches!(
            reopened.revoke("alice"),
            Err(KeyStoreError::Unknown(_))
        ));
    }

    #[test]
    fn names_are_checked_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ApiKeys::open(dir.path()).unwrap();
        keys.create("ci-bot", KeyLimits::default()).unwrap();
        assert!(matches!(
            keys.create("ci-bot", KeyLimits::default()),
            Err(KeyStoreError::Exists(_))
        ));
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            assert!(matches!(
                keys.create(bad, KeyLimits::default()),
                Err(KeyStoreError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn a_change_by_another_process_is_picked_up_by_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let running = ApiKeys::open(dir.path()).unwrap();
        let cli = ApiKeys::open(dir.path()).unwrap();
        let (key, _) = cli.create("bob", KeyLimits::default()).unwrap();
        // The modification time may not move within one clock tick: force a new one.
        let file = std::fs::File::options()
            .append(true)
            .open(dir.path().join(KEYS_FILE))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        running.reload_if_changed();
        assert!(running.lookup(&key).is_some());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEYS_FILE), b"{not json").unwrap();
        let error = ApiKeys::open(dir.path()).unwrap_err();
        assert!(matches!(error, KeyStoreError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_request_per_interval() {
        let key = Arc::new(ClientKey::new(
            "k",
            KeyLimits {
                requests_per_minute: Some(2),
                max_concurrent: None,
            },
        ));
        let now = 100 * SECOND;
        assert!(key.admit(now).is_ok());
        assert!(key.admit(now).is_ok());
        let limited = key.admit(now).unwrap_err();
        assert_eq!(limited.limit, "requests per minute");
        assert_eq!(limited.retry_after, Duration::from_secs(30));
        assert!(key.admit(now + 29 * SECOND).is_err());
        assert!(key.admit(now + 30 * SECOND).is_ok());
    }

    #[test]
    fn the_concurrency_limit_counts_permits_until_they_drop() {
        let key = Arc::new(ClientKey::new(
            "k",
            KeyLimits {
                requests_per_minute: None,
                max_concurrent: Some(1),
            },
        ));
        let first = key.admit(0).unwrap();
        assert_eq!(key.admit(0).unwrap_err().limit, "concurrent requests");
        assert_eq!(key.in_flight(), 1, "a refused request releases its share");
        drop(first);
        assert!(key.admit(0).is_ok());
    }
}
