//! Knobs that tests (or `POST /mock/config`) turn while the node runs:
//! latency, speed, failure injection and how model pulls behave. Plain
//! atomics, read once per request, so the request path never waits on them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::MockConfig;
use crate::hashing::{splitmix64, unit_f64};

/// Optional counts (`die_after_tokens`, the `pull_*` byte knobs) are stored
/// as plain numbers; this one means "not set".
const NEVER: u64 = u64::MAX;

/// Time between two progress lines of a pull, unless configured.
pub const DEFAULT_PULL_TICK: Duration = Duration::from_millis(100);

/// Shortest pull tick accepted, so a pull never turns into a busy loop.
const MIN_PULL_TICK_MICROS: u64 = 1_000;

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
    pull_bytes_per_sec_bits: AtomicU64,
    pull_tick_micros: AtomicU64,
    pull_size_bytes: AtomicU64,
    pull_fail_after_bytes: AtomicU64,
    pull_stall_after_bytes: AtomicU64,
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
    /// Download speed of `POST /api/pull`; 0 = instant.
    pub pull_bytes_per_sec: f64,
    /// Time between two progress lines of a pull.
    pub pull_tick_ms: f64,
    /// Bytes a pull downloads; `None` = the model's own (synthesised) size.
    pub pull_size_bytes: Option<u64>,
    /// A pull fails once this many bytes of the weights layer are done.
    pub pull_fail_after_bytes: Option<u64>,
    /// A pull stops making progress (and stays open) at this many bytes of
    /// the weights layer.
    pub pull_stall_after_bytes: Option<u64>,
}

/// A partial change of the knobs: absent fields stay as they are.
/// `null` turns the optional ones off (`die_after_tokens`, `pull_size_bytes`,
/// `pull_fail_after_bytes`, `pull_stall_after_bytes`).
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
    pub pull_bytes_per_sec: Option<f64>,
    pub pull_tick_ms: Option<f64>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub pull_size_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub pull_fail_after_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub pull_stall_after_bytes: Option<Option<u64>>,
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

/// A pull tick of at least a millisecond, in microseconds.
fn pull_tick_micros(ms: f64) -> Result<u64, InvalidKnob> {
    match millis_to_micros("pull_tick_ms", ms) {
        Ok(micros) if micros >= MIN_PULL_TICK_MICROS => Ok(micros),
        _ => Err(InvalidKnob {
            field: "pull_tick_ms",
            problem: "must be a finite number >= 1",
        }),
    }
}

fn optional_to_stored(value: Option<u64>) -> u64 {
    match value {
        Some(n) => n.min(NEVER - 1),
        None => NEVER,
    }
}

fn stored_to_optional(stored: u64) -> Option<u64> {
    (stored != NEVER).then_some(stored)
}

/// How the pulls that start now behave: the `pull_*` knobs read at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PullKnobs {
    /// Bytes per second; 0 = instant.
    pub(crate) bytes_per_sec: f64,
    pub(crate) tick: Duration,
    pub(crate) size_bytes: Option<u64>,
    pub(crate) fail_after_bytes: Option<u64>,
    pub(crate) stall_after_bytes: Option<u64>,
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
            pull_bytes_per_sec_bits: AtomicU64::new(0f64.to_bits()),
            pull_tick_micros: AtomicU64::new(0),
            pull_size_bytes: AtomicU64::new(NEVER),
            pull_fail_after_bytes: AtomicU64::new(NEVER),
            pull_stall_after_bytes: AtomicU64::new(NEVER),
        };
        control.set_ttft(config.ttft);
        control.set_tokens_per_sec(config.tokens_per_sec);
        control.set_load_time(config.load_time);
        control.set_fail_rate(config.fail_rate);
        control.set_die_after_tokens(config.die_after_tokens);
        control.set_pull_bytes_per_sec(config.pull_bytes_per_sec);
        control.set_pull_tick(config.pull_tick);
        control.set_pull_size_bytes(config.pull_size_bytes);
        control.set_pull_fail_after_bytes(config.pull_fail_after_bytes);
        control.set_pull_stall_after_bytes(config.pull_stall_after_bytes);
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
        stored_to_optional(self.die_after_tokens.load(Relaxed))
    }

    pub fn set_die_after_tokens(&self, tokens: Option<u64>) {
        self.die_after_tokens
            .store(optional_to_stored(tokens), Relaxed);
    }

    /// Download speed of a pull, in bytes per second; 0 means instant.
    pub fn pull_bytes_per_sec(&self) -> f64 {
        f64::from_bits(self.pull_bytes_per_sec_bits.load(Relaxed))
    }

    /// Sets the pull speed; negative or non-finite values count as 0
    /// (instant).
    pub fn set_pull_bytes_per_sec(&self, bytes_per_sec: f64) {
        let value = if bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
            bytes_per_sec
        } else {
            0.0
        };
        self.pull_bytes_per_sec_bits.store(value.to_bits(), Relaxed);
    }

    /// Time between two progress lines of a pull.
    pub fn pull_tick(&self) -> Duration {
        Duration::from_micros(self.pull_tick_micros.load(Relaxed))
    }

    /// Sets the pull tick; anything under a millisecond counts as one.
    pub fn set_pull_tick(&self, tick: Duration) {
        let micros = u64::try_from(tick.as_micros()).unwrap_or(u64::MAX);
        self.pull_tick_micros
            .store(micros.max(MIN_PULL_TICK_MICROS), Relaxed);
    }

    /// Bytes a pull downloads; `None` means the model's own size.
    pub fn pull_size_bytes(&self) -> Option<u64> {
        stored_to_optional(self.pull_size_bytes.load(Relaxed))
    }

    pub fn set_pull_size_bytes(&self, bytes: Option<u64>) {
        self.pull_size_bytes
            .store(optional_to_stored(bytes), Relaxed);
    }

    /// After how many bytes of the weights layer a pull fails, if at all.
    pub fn pull_fail_after_bytes(&self) -> Option<u64> {
        stored_to_optional(self.pull_fail_after_bytes.load(Relaxed))
    }

    pub fn set_pull_fail_after_bytes(&self, bytes: Option<u64>) {
        self.pull_fail_after_bytes
            .store(optional_to_stored(bytes), Relaxed);
    }

    /// At how many bytes of the weights layer a pull stalls, if at all.
    pub fn pull_stall_after_bytes(&self) -> Option<u64> {
        stored_to_optional(self.pull_stall_after_bytes.load(Relaxed))
    }

    pub fn set_pull_stall_after_bytes(&self, bytes: Option<u64>) {
        self.pull_stall_after_bytes
            .store(optional_to_stored(bytes), Relaxed);
    }

    /// The pull knobs as they are now, for a pull that starts.
    pub(crate) fn pull_knobs(&self) -> PullKnobs {
        PullKnobs {
            bytes_per_sec: self.pull_bytes_per_sec(),
            tick: self.pull_tick(),
            size_bytes: self.pull_size_bytes(),
            fail_after_bytes: self.pull_fail_after_bytes(),
            stall_after_bytes: self.pull_stall_after_bytes(),
        }
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
        if update
            .pull_bytes_per_sec
            .is_some_and(|bps| !(bps.is_finite() && bps >= 0.0))
        {
            return Err(InvalidKnob {
                field: "pull_bytes_per_sec",
                problem: "must be a finite number >= 0",
            });
        }
        let pull_tick = update.pull_tick_ms.map(pull_tick_micros).transpose()?;
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
        self.apply_pull(update, pull_tick);
        Ok(())
    }

    /// Applies the (already checked) pull knobs of `update`.
    fn apply_pull(&self, update: &ControlUpdate, tick_micros: Option<u64>) {
        if let Some(bps) = update.pull_bytes_per_sec {
            self.set_pull_bytes_per_sec(bps);
        }
        if let Some(micros) = tick_micros {
            self.pull_tick_micros.store(micros, Relaxed);
        }
        if let Some(size) = update.pull_size_bytes {
            self.set_pull_size_bytes(size);
        }
        if let Some(fail) = update.pull_fail_after_bytes {
            self.set_pull_fail_after_bytes(fail);
        }
        if let Some(stall) = update.pull_stall_after_bytes {
            self.set_pull_stall_after_bytes(stall);
        }
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
            pull_bytes_per_sec: self.pull_bytes_per_sec(),
            pull_tick_ms: self.pull_tick().as_secs_f64() * 1000.0,
            pull_size_bytes: self.pull_size_bytes(),
            pull_fail_after_bytes: self.pull_fail_after_bytes(),
            pull_stall_after_bytes: self.pull_stall_after_bytes(),
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
    fn pull_knobs_update_and_null_turns_them_off() {
        let control = MockControl::new(&MockConfig::default());
        assert_eq!(control.pull_bytes_per_sec(), 0.0);
        assert_eq!(control.pull_tick(), DEFAULT_PULL_TICK);
        let set: ControlUpdate = serde_json::from_str(
            r#"{"pull_bytes_per_sec": 2e8, "pull_tick_ms": 50, "pull_size_bytes": 5000000000,
                "pull_fail_after_bytes": 7, "pull_stall_after_bytes": 9}"#,
        )
        .unwrap();
        control.apply(&set).unwrap();
        let knobs = control.pull_knobs();
        assert_eq!(knobs.bytes_per_sec, 2e8);
        assert_eq!(knobs.tick, Duration::from_millis(50));
        assert_eq!(knobs.size_bytes, Some(5_000_000_000));
        assert_eq!(knobs.fail_after_bytes, Some(7));
        assert_eq!(knobs.stall_after_bytes, Some(9));
        let snapshot = serde_json::to_value(control.snapshot()).unwrap();
        assert_eq!(snapshot["pull_tick_ms"], 50.0);
        assert_eq!(snapshot["pull_size_bytes"], 5_000_000_000u64);
        let null: ControlUpdate = serde_json::from_str(
            r#"{"pull_size_bytes": null, "pull_fail_after_bytes": null, "pull_stall_after_bytes": null}"#,
        )
        .unwrap();
        control.apply(&null).unwrap();
        let knobs = control.pull_knobs();
        assert_eq!(
            (
                knobs.size_bytes,
                knobs.fail_after_bytes,
                knobs.stall_after_bytes
            ),
            (None, None, None)
        );
        assert_eq!(knobs.bytes_per_sec, 2e8, "absent fields stay as they are");
        for bad in [
            r#"{"pull_tick_ms": 0}"#,
            r#"{"pull_tick_ms": 0.2}"#,
            r#"{"pull_bytes_per_sec": -1}"#,
        ] {
            let update: ControlUpdate = serde_json::from_str(bad).unwrap();
            assert!(control.apply(&update).is_err(), "{bad}");
        }
        assert_eq!(control.pull_tick(), Duration::from_millis(50));
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
