//! Knobs that tests (or `POST /mock/config`) turn while the node runs:
//! latency, speed and failure injection. Plain atomics, read once per
//! request, so the request path never waits on them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::MockConfig;
use crate::hashing::{splitmix64, unit_f64};

/// `die_after_tokens` is stored as a plain number; this one means "never".
const NEVER: u64 = u64::MAX;

/// Runtime knobs of one node. Every change applies to requests that start
/// after it (a generation already under way keeps the pace it started with).
#[derive(Debug)]
pub struct MockControl {
    ttft_micros: AtomicU64,
    tokens_per_sec_bits: AtomicU64,
    load_micros: AtomicU64,
    default_tokens: AtomicU64,
    fail_rate_bits: AtomicU64,
    die_after_tokens: AtomicU64,
    roll_counter: AtomicU64,
}

/// The knobs at one moment, as `GET`/`POST /mock/config` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlSnapshot {
    pub ttft_ms: f64,
    pub tokens_per_sec: f64,
    pub load_ms: f64,
    pub default_tokens: u64,
    pub fail_rate: f64,
    pub die_after_tokens: Option<u64>,
}

/// A partial change of the knobs: absent fields stay as they are.
/// `die_after_tokens: null` turns that failure off.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlUpdate {
    pub ttft_ms: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub load_ms: Option<f64>,
    pub default_tokens: Option<u64>,
    pub fail_rate: Option<f64>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub die_after_tokens: Option<Option<u64>>,
    /// Replaces the list of held models.
    pub models: Option<Vec<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A knob value that makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct InvalidKnob {
    pub field: &'static str,
    pub problem: &'static str,
}

fn millis_to_micros(field: &'static str, ms: f64) -> Result<u64, InvalidKnob> {
    if ms.is_finite() && ms >= 0.0 {
        Ok((ms * 1000.0).round() as u64)
    } else {
        Err(InvalidKnob {
            field,
            problem: "must be a finite number >= 0",
        })
    }
}

impl MockControl {
    /// Knobs starting from the configuration's values.
    pub fn new(config: &MockConfig) -> Self {
        let control = Self {
            ttft_micros: AtomicU64::new(0),
            tokens_per_sec_bits: AtomicU64::new(0f64.to_bits()),
            load_micros: AtomicU64::new(0),
            default_tokens: AtomicU64::new(config.default_tokens),
            fail_rate_bits: AtomicU64::new(0f64.to_bits()),
            die_after_tokens: AtomicU64::new(NEVER),
            roll_counter: AtomicU64::new(0),
        };
        control.set_ttft(config.ttft);
        control.set_tokens_per_sec(config.tokens_per_sec);
        control.set_load_time(config.load_time);
        control.set_fail_rate(config.fail_rate);
        control.set_die_after_tokens(config.die_after_tokens);
        control
    }

    /// Time to first token.
    pub fn ttft(&self) -> Duration {
        Duration::from_micros(self.ttft_micros.load(Relaxed))
    }

    pub fn set_ttft(&self, ttft: Duration) {
        let micros = u64::try_from(ttft.as_micros()).unwrap_or(u64::MAX);
        self.ttft_micros.store(micros, Relaxed);
    }

    /// Generation speed; 0 means every token at once.
    pub fn tokens_per_sec(&self) -> f64 {
        f64::from_bits(self.tokens_per_sec_bits.load(Relaxed))
    }

    /// Sets the speed; negative or non-finite values count as 0 (instant).
    pub fn set_tokens_per_sec(&self, tokens_per_sec: f64) {
        let value = if tokens_per_sec.is_finite() && tokens_per_sec > 0.0 {
            tokens_per_sec
        } else {
            0.0
        };
        self.tokens_per_sec_bits.store(value.to_bits(), Relaxed);
    }

    /// Time between two tokens; zero when the speed is 0 (instant).
    pub fn token_interval(&self) -> Duration {
        let tps = self.tokens_per_sec();
        if tps > 0.0 {
            Duration::from_secs_f64(1.0 / tps)
        } else {
            Duration::ZERO
        }
    }

    /// Model load time.
    pub fn load_time(&self) -> Duration {
        Duration::from_micros(self.load_micros.load(Relaxed))
    }

    pub fn set_load_time(&self, load: Duration) {
        let micros = u64::try_from(load.as_micros()).unwrap_or(u64::MAX);
        self.load_micros.store(micros, Relaxed);
    }

    /// Tokens generated when the request does not say.
    pub fn default_tokens(&self) -> u64 {
        self.default_tokens.load(Relaxed)
    }

    pub fn set_default_tokens(&self, tokens: u64) {
        self.default_tokens.store(tokens, Relaxed);
    }

    /// Fraction of inference requests answered with an injected 500.
    pub fn fail_rate(&self) -> f64 {
        f64::from_bits(self.fail_rate_bits.load(Relaxed))
    }

    /// Sets the failure fraction, clamped to `0..=1` (NaN counts as 0).
    pub fn set_fail_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.fail_rate_bits.store(rate.to_bits(), Relaxed);
    }

    /// After how many tokens a generation drops its connection, if at all.
    pub fn die_after_tokens(&self) -> Option<u64> {
        match self.die_after_tokens.load(Relaxed) {
            NEVER => None,
            n => Some(n),
        }
    }

    pub fn set_die_after_tokens(&self, tokens: Option<u64>) {
        let stored = match tokens {
            Some(n) => n.min(NEVER - 1),
            None => NEVER,
        };
        self.die_after_tokens.store(stored, Relaxed);
    }

    /// Decides whether this request gets an injected failure. The sequence
    /// of rolls is deterministic (a hashed counter), so runs repeat.
    pub(crate) fn roll_failure(&self) -> bool {
        let rate = self.fail_rate();
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        let n = self.roll_counter.fetch_add(1, Relaxed);
        unit_f64(splitmix64(n)) < rate
    }

    /// Checks and applies every knob of `update` (the model list is not a
    /// knob; the caller applies it to the catalogue). Nothing changes when
    /// a value is invalid.
    pub fn apply(&self, update: &ControlUpdate) -> Result<(), InvalidKnob> {
        let ttft = update
            .ttft_ms
            .map(|ms| millis_to_micros("ttft_ms", ms))
            .transpose()?;
        let load = update
            .load_ms
            .map(|ms| millis_to_micros("load_ms", ms))
            .transpose()?;
        if update
            .tokens_per_sec
            .is_some_and(|tps| !(tps.is_finite() && tps >= 0.0))
        {
            return Err(InvalidKnob {
                field: "tokens_per_sec",
                problem: "must be a finite number >= 0",
            });
        }
        if update
            .fail_rate
            .is_some_and(|rate| !(0.0..=1.0).contains(&rate))
        {
            return Err(InvalidKnob {
                field: "fail_rate",
                problem: "must be between 0 and 1",
            });
        }
        if let Some(micros) = ttft {
            self.ttft_micros.store(micros, Relaxed);
        }
        if let Some(micros) = load {
            self.load_micros.store(micros, Relaxed);
        }
        if let Some(tps) = update.tokens_per_sec {
            self.set_tokens_per_sec(tps);
        }
        if let Some(tokens) = update.default_tokens {
            self.set_default_tokens(tokens);
        }
        if let Some(rate) = update.fail_rate {
            self.set_fail_rate(rate);
        }
        if let Some(die) = update.die_after_tokens {
            self.set_die_after_tokens(die);
        }
        Ok(())
    }

    /// The knobs as they are now.
    pub fn snapshot(&self) -> ControlSnapshot {
        ControlSnapshot {
            ttft_ms: self.ttft().as_secs_f64() * 1000.0,
            tokens_per_sec: self.tokens_per_sec(),
            load_ms: self.load_time().as_secs_f64() * 1000.0,
            default_tokens: self.default_tokens(),
            fail_rate: self.fail_rate(),
            die_after_tokens: self.die_after_tokens(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_distinguishes_null_from_absent_die_after_tokens() {
        let control = MockControl::new(&MockConfig {
            die_after_tokens: Some(3),
            ..MockConfig::default()
        });
        let absent: ControlUpdate = serde_json::from_str(r#"{"ttft_ms": 5}"#).unwrap();
        control.apply(&absent).unwrap();
        assert_eq!(control.die_after_tokens(), Some(3));
        assert_eq!(control.ttft(), Duration::from_millis(5));
        let null: ControlUpdate = serde_json::from_str(r#"{"die_after_tokens": null}"#).unwrap();
        control.apply(&null).unwrap();
        assert_eq!(control.die_after_tokens(), None);
    }

    #[test]
    fn invalid_update_changes_nothing() {
        let control = MockControl::new(&MockConfig::default());
        let bad = ControlUpdate {
            ttft_ms: Some(10.0),
            fail_rate: Some(2.0),
            ..ControlUpdate::default()
        };
        assert!(control.apply(&bad).is_err());
        assert_eq!(control.ttft(), Duration::ZERO);
        assert_eq!(control.fail_rate(), 0.0);
    }

    #[test]
    fn fail_rate_extremes_always_or_never_fail_and_half_fails_about_half() {
        let control = MockControl::new(&MockConfig::default());
        assert!((0..100).all(|_| !control.roll_failure()));
        control.set_fail_rate(1.0);
        assert!((0..100).all(|_| control.roll_failure()));
        control.set_fail_rate(0.5);
        let failed = (0..10_000).filter(|_| control.roll_failure()).count();
        assert!((4_000..6_000).contains(&failed), "{failed}");
    }
}
