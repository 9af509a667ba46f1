//! The models a node holds on disk and the ones it keeps loaded in memory
//! (least recently used first out), with deterministic fake metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::hashing::{fnv1a64, splitmix64};

/// `llama3.2` → `llama3.2:latest`; names that carry a tag are kept as they
/// are. The tag is looked for after the last `/` so that a registry host with
/// a port (`host:5000/ns/model`) is not taken for one.
pub fn normalize_model_name(name: &str) -> String {
    let name = name.trim();
    let base = name.rsplit('/').next().unwrap_or(name);
    if base.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// Whether `requested` names the held model `held` (already normalised),
/// without allocating.
fn names_match(held: &str, requested: &str) -> bool {
    let requested = requested.trim();
    held == requested || held.strip_suffix(":latest") == Some(requested)
}

/// 64 hex digits (like a sha256) made up from `seed`.
pub(crate) fn hex_digest(seed: u64) -> String {
    let mut digest = String::with_capacity(64);
    let mut word = seed;
    for _ in 0..4 {
        word = splitmix64(word);
        digest.push_str(&format!("{word:016x}"));
    }
    digest
}

/// Metadata of a held model. All values are derived from the name, so two
/// nodes holding the same model report the same digest and size.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Normalised name, `model:tag`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// 64 hex digits, like a sha256.
    pub digest: String,
    pub family: String,
    pub parameter_size: String,
    pub quantization_level: String,
    /// When the model was "pulled".
    pub modified_at: DateTime<Utc>,
}

impl ModelInfo {
    /// Makes up stable metadata for `name`.
    pub fn synthesize(name: &str, modified_at: DateTime<Utc>) -> Self {
        let name = normalize_model_name(name);
        let seed = fnv1a64(name.as_bytes());
        let digest = hex_digest(seed);
        let (base, tag) = name.rsplit_once(':').unwrap_or((&name, "latest"));
        let base = base.rsplit('/').next().unwrap_or(base);
        let family: String = base
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_lowercase();
        let family = if family.is_empty() {
            "llama".to_owned()
        } else {
            family
        };
        // A tag such as `8b` or `0.5b-instruct` names the parameter count.
        let billions = tag
            .split(['-', '_'])
            .find_map(|part| part.strip_suffix(['b', 'B'])?.parse::<f64>().ok())
            .unwrap_or(3.2);
        let parameter_size = format!("{billions}B");
        // q4_0 weighs about 0.6 bytes per parameter.
        let size = (billions * 0.6e9) as u64 + (seed % 1_000_000);
        Self {
            name,
            size,
            digest,
            family,
            parameter_size,
            quantization_level: "Q4_K_M".to_owned(),
            modified_at,
        }
    }

    /// `library` for plain names, else the namespace (`ns/model` → `ns`), as
    /// OpenAI's `owned_by`.
    pub fn owner(&self) -> &str {
        match self.name.rsplit_once('/') {
            Some((prefix, _)) => prefix.rsplit('/').next().unwrap_or(prefix),
            None => "library",
        }
    }
}

/// A model in memory.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub info: Arc<ModelInfo>,
    /// Last time a request used it.
    pub last_used: Instant,
}

#[derive(Debug, Default)]
struct Catalog {
    held: Vec<Arc<ModelInfo>>,
    /// Most recently used last.
    loaded: Vec<LoadedModel>,
}

/// Held and loaded models. One short lock per request: the slow part of a
/// model load (the wait) happens outside it, in the scheduler.
#[derive(Debug)]
pub struct ModelCatalog {
    inner: Mutex<Catalog>,
    max_loaded: usize,
    created: DateTime<Utc>,
}

impl ModelCatalog {
    /// A catalogue holding `held`, with `loaded` already in memory.
    pub fn new(held: &[String], loaded: &[String], max_loaded: usize) -> Self {
        let catalog = Self {
            inner: Mutex::new(Catalog::default()),
            max_loaded: max_loaded.max(1),
            created: Utc::now(),
        };
        catalog.set_held(held.iter().map(String::as_str));
        for name in loaded {
            if let Some(info) = catalog.find(name) {
                catalog.insert_loaded(&info);
            }
        }
        catalog
    }

    /// The held model called `name` (with or without its `:latest` tag).
    pub fn find(&self, name: &str) -> Option<Arc<ModelInfo>> {
        let inner = self.inner.lock();
        inner
            .held
            .iter()
            .find(|m| names_match(&m.name, name))
            .cloned()
    }

    /// All held models, in the order they were added.
    pub fn held(&self) -> Vec<Arc<ModelInfo>> {
        self.inner.lock().held.clone()
    }

    /// Adds a model (no-op when already held) and returns its metadata.
    pub fn add(&self, name: &str) -> Arc<ModelInfo> {
        let mut inner = self.inner.lock();
        if let Some(found) = inner.held.iter().find(|m| names_match(&m.name, name)) {
            return found.clone();
        }
        let info = Arc::new(ModelInfo::synthesize(name, Utc::now()));
        inner.held.push(info.clone());
        info
    }

    /// Adds `info` unless a model of that name is already held; returns the
    /// held one either way.
    pub fn insert(&self, info: ModelInfo) -> Arc<ModelInfo> {
        let mut inner = self.inner.lock();
        if let Some(found) = inner.held.iter().find(|m| m.name == info.name) {
            return found.clone();
        }
        let info = Arc::new(info);
        inner.held.push(info.clone());
        info
    }

    /// Copies the held model `source` to `destination` (same size and
    /// digest, like `ollama cp`), replacing a model already called so.
    /// `None` when `source` is not held.
    pub fn copy(&self, source: &str, destination: &str) -> Option<Arc<ModelInfo>> {
        let destination = normalize_model_name(destination);
        let mut inner = self.inner.lock();
        let source = inner.held.iter().find(|m| names_match(&m.name, source))?;
        if source.name == destination {
            return Some(source.clone());
        }
        let copy = Arc::new(ModelInfo {
            name: destination,
            modified_at: Utc::now(),
            ..ModelInfo::clone(source)
        });
        match inner.held.iter_mut().find(|m| m.name == copy.name) {
            Some(existing) => *existing = copy.clone(),
            None => inner.held.push(copy.clone()),
        }
        // A model loaded under the old contents of that name is gone.
        inner.loaded.retain(|l| l.info.name != copy.name);
        Some(copy)
    }

    /// Forgets a model (and unloads it). Returns whether it was held.
    pub fn remove(&self, name: &str) -> bool {
        let mut inner = self.inner.lock();
        let before = inner.held.len();
        inner.held.retain(|m| !names_match(&m.name, name));
        inner.loaded.retain(|m| !names_match(&m.info.name, name));
        inner.held.len() != before
    }

    /// Replaces the held models; loaded models no longer held are unloaded.
    pub fn set_held<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut held: Vec<Arc<ModelInfo>> = Vec::new();
        for name in names {
            let normalized = normalize_model_name(name);
            if !held.iter().any(|m| m.name == normalized) {
                held.push(Arc::new(ModelInfo::synthesize(&normalized, self.created)));
            }
        }
        let mut inner = self.inner.lock();
        inner
            .loaded
            .retain(|l| held.iter().any(|m| m.name == l.info.name));
        inner.held = held;
    }

    /// Names of the models in memory, most recently used first.
    pub fn loaded_names(&self) -> Vec<String> {
        let inner = self.inner.lock();
        inner
            .loaded
            .iter()
            .rev()
            .map(|l| l.info.name.clone())
            .collect()
    }

    /// The models in memory, most recently used first.
    pub fn loaded(&self) -> Vec<LoadedModel> {
        let inner = self.inner.lock();
        inner.loaded.iter().rev().cloned().collect()
    }

    /// Drops a model from memory. Returns whether it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        let mut inner = self.inner.lock();
        let before = inner.loaded.len();
        inner.loaded.retain(|l| !names_match(&l.info.name, name));
        inner.loaded.len() != before
    }

    /// Marks `name` as just used if it is in memory; false when it must be
    /// loaded first.
    pub(crate) fn touch(&self, name: &str) -> bool {
        let mut inner = self.inner.lock();
        let Some(pos) = inner.loaded.iter().position(|l| l.info.name == name) else {
            return false;
        };
        let last = inner.loaded.len() - 1;
        if pos != last {
            let entry = inner.loaded.remove(pos);
            inner.loaded.push(entry);
        }
        inner.loaded[last].last_used = Instant::now();
        true
    }

    /// Puts a model in memory as the most recently used, evicting the least
    /// recently used ones beyond the limit. Returns how many were evicted.
    pub(crate) fn insert_loaded(&self, info: &Arc<ModelInfo>) -> usize {
        let mut inner = self.inner.lock();
        inner.loaded.retain(|l| l.info.name != info.name);
        inner.loaded.push(LoadedModel {
            info: info.clone(),
            last_used: Instant::now(),
        });
        let excess = inner.loaded.len().saturating_sub(self.max_loaded);
        inner.loaded.drain(..excess);
        excess
    }
}

/// When a model used at `last_used` will be unloaded, for `/api/ps`.
pub(crate) fn expires_at(last_used: Instant, keep_alive: Duration) -> DateTime<Utc> {
    let left = keep_alive.saturating_sub(last_used.elapsed());
    Utc::now() + chrono::Duration::from_std(left).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_adds_latest_only_when_no_tag() {
        assert_eq!(normalize_model_name("llama3.2"), "llama3.2:latest");
        assert_eq!(normalize_model_name("llama3.2:1b"), "llama3.2:1b");
        assert_eq!(normalize_model_name("ns/model"), "ns/model:latest");
        assert_eq!(
            normalize_model_name("host:5000/ns/model"),
            "host:5000/ns/model:latest"
        );
    }

    #[test]
    fn find_accepts_name_with_or_without_latest() {
        let catalog = ModelCatalog::new(&["llama3.2".into(), "qwen3:8b".into()], &[], 1);
        assert_eq!(catalog.find("llama3.2").unwrap().name, "llama3.2:latest");
        assert_eq!(
            catalog.find("llama3.2:latest").unwrap().name,
            "llama3.2:latest"
        );
        assert!(catalog.find("qwen3").is_none());
        assert_eq!(catalog.find("qwen3:8b").unwrap().parameter_size, "8B");
    }

    #[test]
    fn synthesized_metadata_is_stable_and_digest_is_64_hex() {
        let t = Utc::now();
        let a = ModelInfo::synthesize("llama3.2", t);
        let b = ModelInfo::synthesize("llama3.2:latest", t);
        assert_eq!(a, b);
        assert_eq!(a.digest.len(), 64);
        assert!(a.digest.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.family, "llama");
        assert_eq!(a.owner(), "library");
        assert_eq!(ModelInfo::synthesize("acme/foo", t).owner(), "acme");
    }

    #[test]
    fn copy_keeps_size_and_digest_and_replaces_an_existing_destination() {
        let catalog = ModelCatalog::new(&["llama3.2".into(), "qwen3".into()], &[], 1);
        let source = catalog.find("llama3.2").unwrap();
        let copy = catalog.copy("llama3.2", "mine").unwrap();
        assert_eq!(copy.name, "mine:latest");
        assert_eq!((copy.size, &copy.digest), (source.size, &source.digest));
        let over = catalog.copy("llama3.2:latest", "qwen3").unwrap();
        assert_eq!(over.digest, source.digest);
        let names: Vec<String> = catalog.held().iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["llama3.2:latest", "qwen3:latest", "mine:latest"]);
        assert!(catalog.copy("nothing", "x").is_none());
        assert!(catalog.find("x").is_none());
    }

    #[test]
    fn insert_adds_once_and_keeps_the_first() {
        let catalog = ModelCatalog::new(&[], &[], 1);
        let mut info = ModelInfo::synthesize("phi4", Utc::now());
        info.size = 5;
        assert_eq!(catalog.insert(info.clone()).size, 5);
        info.size = 6;
        assert_eq!(catalog.insert(info).size, 5);
        assert_eq!(catalog.held().len(), 1);
    }

    #[test]
    fn loading_beyond_the_limit_evicts_the_least_recently_used() {
        let catalog = ModelCatalog::new(&["a".into(), "b".into(), "c".into()], &[], 2);
        let [a, b, c] = ["a", "b", "c"].map(|n| catalog.find(n).unwrap());
        assert_eq!(catalog.insert_loaded(&a), 0);
        assert_eq!(catalog.insert_loaded(&b), 0);
        assert!(catalog.touch("a:latest"));
        assert_eq!(catalog.insert_loaded(&c), 1);
        assert_eq!(catalog.loaded_names(), ["c:latest", "a:latest"]);
        assert!(!catalog.touch("b:latest"));
    }
}
