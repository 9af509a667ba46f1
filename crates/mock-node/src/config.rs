//! Start-up configuration of a mock node: what it serves, how fast, how many
//! requests at once, how it pulls models, and how it misbehaves.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Everything a mock node needs to start. `Default` gives a quick, well
/// behaved node on `127.0.0.1:0` holding `llama3.2:latest`; change the public
/// fields (struct update syntax) or chain the `with_*` helpers.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Name of the node, sent in the `x-mock-node` header of every response
    /// and as the first word of every generated text.
    pub name: String,
    /// Address to bind (used by [`crate::MockNode::start`] and the binary).
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Models the node holds (`/api/tags`). Names without a tag get `:latest`.
    pub models: Vec<String>,
    /// Models already loaded in memory at start (`/api/ps`); must be held.
    pub loaded_models: Vec<String>,
    /// Version reported by `/api/version`.
    pub version: String,
    /// Time to first token: prompt evaluation time once a slot is free.
    pub ttft: Duration,
    /// Generation speed; 0 emits every token at once.
    pub tokens_per_sec: f64,
    /// Requests generated at the same time (like `OLLAMA_NUM_PARALLEL`);
    /// the rest wait in a first-come first-served queue.
    pub parallel: usize,
    /// Models kept in memory at once (like `OLLAMA_MAX_LOADED_MODELS`); a
    /// request for another model evicts the least recently used one.
    pub max_loaded_models: usize,
    /// Time to load a model into memory. The whole node stalls meanwhile.
    pub load_time: Duration,
    /// Tokens generated when the request does not say (`num_predict`,
    /// `max_tokens`).
    pub default_tokens: u64,
    /// Fraction (0..=1) of inference requests answered with an injected 500.
    pub fail_rate: f64,
    /// Drop the connection after this many tokens of every generation.
    pub die_after_tokens: Option<u64>,
    /// Length of the embedding vectors.
    pub embedding_dim: usize,
    /// How many raw request bodies to remember for tests (0 turns recording off).
    pub record_capacity: usize,
    /// How long a model stays loaded after use, as reported in `/api/ps`.
    pub keep_alive: Duration,
    /// Answer like a compromised server: every response labelled `text/html`, with
    /// `Set-Cookie` and `Access-Control-Allow-Origin: *` (for tests of what a router
    /// passes back).
    pub hostile_headers: bool,
    /// Download speed of `POST /api/pull`, in bytes per second; 0 = instant.
    pub pull_bytes_per_sec: f64,
    /// Time between two progress lines of a pull (at least 1 ms).
    pub pull_tick: Duration,
    /// Bytes a pull downloads; `None` = the model's own (synthesised) size.
    pub pull_size_bytes: Option<u64>,
    /// A pull fails with an error line once this many bytes of the weights
    /// layer are done.
    pub pull_fail_after_bytes: Option<u64>,
    /// A pull stops making progress at this many bytes of the weights layer
    /// and stays open, sending nothing, until the client leaves.
    pub pull_stall_after_bytes: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            name: "mock-node".to_owned(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            models: vec!["llama3.2:latest".to_owned()],
            loaded_models: Vec::new(),
            version: "0.12.0".to_owned(),
            ttft: Duration::ZERO,
            tokens_per_sec: 0.0,
            parallel: 4,
            max_loaded_models: 1,
            load_time: Duration::ZERO,
            default_tokens: 16,
            fail_rate: 0.0,
            die_after_tokens: None,
            embedding_dim: 8,
            record_capacity: 64,
            keep_alive: Duration::from_secs(300),
            hostile_headers: false,
            pull_bytes_per_sec: 0.0,
            pull_tick: crate::control::DEFAULT_PULL_TICK,
            pull_size_bytes: None,
            pull_fail_after_bytes: None,
            pull_stall_after_bytes: None,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("parallel must be at least 1")]
    NoSlots,
    #[error("max_loaded_models must be at least 1")]
    NoModelMemory,
    #[error("fail_rate must be between 0 and 1, got {0}")]
    FailRate(f64),
    #[error("tokens_per_sec must be a finite number >= 0, got {0}")]
    TokensPerSec(f64),
    #[error("embedding_dim must be at least 1")]
    EmbeddingDim,
    #[error("loaded model {0:?} is not among the held models")]
    LoadedNotHeld(String),
    #[error("model name must not be blank")]
    BlankModel,
    #[error("node name {0:?} cannot be sent as an HTTP header value")]
    Name(String),
    #[error("pull_bytes_per_sec must be a finite number >= 0, got {0}")]
    PullBytesPerSec(f64),
    #[error("pull_tick must be at least 1 ms")]
    PullTick,
}

impl MockConfig {
    /// The default configuration with another node name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Replaces the held models.
    pub fn with_models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the number of generation slots.
    pub fn with_parallel(mut self, parallel: usize) -> Self {
        self.parallel = parallel;
        self
    }

    /// Sets the time to first token.
    pub fn with_ttft(mut self, ttft: Duration) -> Self {
        self.ttft = ttft;
        self
    }

    /// Sets the generation speed (0 = instant).
    pub fn with_tokens_per_sec(mut self, tokens_per_sec: f64) -> Self {
        self.tokens_per_sec = tokens_per_sec;
        self
    }

    /// Sets the pull speed in bytes per second (0 = instant).
    pub fn with_pull_bytes_per_sec(mut self, bytes_per_sec: f64) -> Self {
        self.pull_bytes_per_sec = bytes_per_sec;
        self
    }

    /// Checks the values that would make the node misbehave in ways nobody
    /// asked for.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.parallel == 0 {
            return Err(ConfigError::NoSlots);
        }
        if self.max_loaded_models == 0 {
            return Err(ConfigError::NoModelMemory);
        }
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(ConfigError::FailRate(self.fail_rate));
        }
        if !self.tokens_per_sec.is_finite() || self.tokens_per_sec < 0.0 {
            return Err(ConfigError::TokensPerSec(self.tokens_per_sec));
        }
        if self.embedding_dim == 0 {
            return Err(ConfigError::EmbeddingDim);
        }
        if !self.pull_bytes_per_sec.is_finite() || self.pull_bytes_per_sec < 0.0 {
            return Err(ConfigError::PullBytesPerSec(self.pull_bytes_per_sec));
        }
        if self.pull_tick < Duration::from_millis(1) {
            return Err(ConfigError::PullTick);
        }
        if axum::http::HeaderValue::from_str(&self.name).is_err() {
            return Err(ConfigError::Name(self.name.clone()));
        }
        if self.models.iter().any(|m| m.trim().is_empty()) {
            return Err(ConfigError::BlankModel);
        }
        for loaded in &self.loaded_models {
            let wanted = crate::models::normalize_model_name(loaded);
            if !self
                .models
                .iter()
                .any(|m| crate::models::normalize_model_name(m) == wanted)
            {
                return Err(ConfigError::LoadedNotHeld(loaded.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(MockConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_zero_slots_bad_rates_and_unheld_loaded_models() {
        let zero = MockConfig::default().with_parallel(0);
        assert_eq!(zero.validate(), Err(ConfigError::NoSlots));
        let rate = MockConfig {
            fail_rate: 1.5,
            ..MockConfig::default()
        };
        assert_eq!(rate.validate(), Err(ConfigError::FailRate(1.5)));
        let speed = MockConfig::default().with_tokens_per_sec(f64::NAN);
        assert!(matches!(
            speed.validate(),
            Err(ConfigError::TokensPerSec(_))
        ));
        let loaded = MockConfig {
            loaded_models: vec!["qwen3".into()],
            ..MockConfig::default()
        };
        assert_eq!(
            loaded.validate(),
            Err(ConfigError::LoadedNotHeld("qwen3".into()))
        );
        let loaded_ok = MockConfig {
            loaded_models: vec!["llama3.2".into()],
            ..MockConfig::default()
        };
        assert_eq!(loaded_ok.validate(), Ok(()));
        let pull = MockConfig::default().with_pull_bytes_per_sec(-1.0);
        assert_eq!(pull.validate(), Err(ConfigError::PullBytesPerSec(-1.0)));
        let tick = MockConfig {
            pull_tick: Duration::ZERO,
            ..MockConfig::default()
        };
        assert_eq!(tick.validate(), Err(ConfigError::PullTick));
    }
}
