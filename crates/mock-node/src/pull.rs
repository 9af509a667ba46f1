//! A simulated `ollama pull`: the model's three layers (weights, template,
//! params), a download clock, and the NDJSON progress Ollama streams.
//!
//! Progress advances by `pull_bytes_per_sec × elapsed`, measured from one
//! start instant, and is reported once per `pull_tick`: a pull of `S` bytes
//! at `R` bytes/s ends after exactly `S / R` seconds, with one progress
//! line per tick in between, whatever the size (no work per byte). The
//! model joins the catalogue only when the pull reaches `success`. The
//! [`PullGuard`] travels with the pull, so a client that goes away (hyper
//! drops the body) counts as a cancelled pull.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::push_json_line;
use crate::control::PullKnobs;
use crate::hashing::fnv1a64;
use crate::models::{ModelInfo, hex_digest};
use crate::state::MockState;
use crate::stats::PullGuard;

/// Stand-in for "never" when a deadline would overflow the clock (as tokio
/// does for its own far future).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// One blob of a model, as Ollama lists it while pulling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    /// `sha256:<64 hex>`.
    pub(crate) digest: String,
    /// `pulling <first 12 hex of the digest>`.
    pub(crate) status: String,
    pub(crate) size: u64,
    /// Bytes of the layers before this one: layers download one after the
    /// other, so this layer's progress is the pull's progress minus this.
    offset: u64,
}

impl Layer {
    fn new(model: &str, kind: &str, size: u64, offset: u64) -> Self {
        let hex = hex_digest(fnv1a64(format!("{model}\0{kind}").as_bytes()));
        Self {
            status: format!("pulling {}", &hex[..12]),
            digest: format!("sha256:{hex}"),
            size,
            offset,
        }
    }

    /// This layer's bytes done when the pull as a whole has done `done`.
    fn completed(&self, done: u64) -> u64 {
        done.saturating_sub(self.offset).min(self.size)
    }
}

/// The layers of `model` (a normalised name) weighing `total` bytes in
/// all: the weights take all but a few hundred bytes each for the template
/// and the params. Digests and small sizes derive from the name only.
pub(crate) fn layers(model: &str, total: u64) -> [Layer; 3] {
    let seed = fnv1a64(model.as_bytes());
    let template = (300 + seed % 500).min(total);
    let params = (100 + (seed >> 32) % 400).min(total - template);
    let weights = total - template - params;
    [
        Layer::new(model, "model", weights, 0),
        Layer::new(model, "template", template, weights),
        Layer::new(model, "params", params, weights + template),
    ]
}

/// What a pull does once its progress reaches its end point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// Verify, write the manifest, add the model: `success`.
    Finish,
    /// Send an error line (`pull_fail_after_bytes`).
    Fail,
    /// Send nothing more until the client leaves (`pull_stall_after_bytes`).
    Stall,
}

/// How a pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullEnding {
    Success,
    /// The injected failure, with its message.
    Failed(String),
    /// The node is stopping.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet.
    Manifest,
    Downloading,
    /// At the stall point, waiting for the client to leave.
    Stalled,
}

#[derive(Serialize)]
struct Progress<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
}

fn push_status(out: &mut BytesMut, status: &str) {
    push_json_line(
        out,
        &Progress {
            status,
            digest: None,
            total: None,
            completed: None,
        },
    );
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    error: &'a str,
}

/// `start + offset`, or the far future when that overflows.
fn after(start: Instant, offset: Duration) -> Instant {
    start
        .checked_add(offset)
        .unwrap_or_else(|| start + FAR_FUTURE)
}

/// One pull under way: it counts as in flight (its guard) until dropped.
#[derive(Debug)]
pub(crate) struct Pull {
    node: Arc<MockState>,
    guard: PullGuard,
    /// The model to add at `success`; `None` when it is already held.
    model: Option<ModelInfo>,
    layers: [Layer; 3],
    /// What each layer's last line said it had completed.
    reported: [Option<u64>; 3],
    phase: Phase,
    /// Where progress stops, in bytes of the whole pull, and what happens there.
    end: u64,
    halt: Halt,
    /// Bytes per second; 0 = everything at once.
    rate: f64,
    tick: Duration,
    start: Instant,
    /// When progress reaches `end`.
    end_at: Instant,
    /// Number of the next tick (tick `k` is due at `start + k × tick`).
    next_tick: u64,
}

impl Pull {
    /// Starts pulling `name` with the node's pull knobs as they are now.
    pub(crate) fn start(node: &Arc<MockState>, name: &str) -> Self {
        let knobs = node.control().pull_knobs();
        let guard = node.stats().pull_started();
        match node.models().find(name) {
            // Every blob is already there: progress completes at once.
            Some(held) => {
                let layers = layers(&held.name, held.size);
                Self::new(node, guard, None, layers, &knobs)
            }
            None => {
                let mut model = ModelInfo::synthesize(name, Utc::now());
                model.size = knobs.size_bytes.unwrap_or(model.size);
                let layers = layers(&model.name, model.size);
                Self::new(node, guard, Some(model), layers, &knobs)
            }
        }
    }

    fn new(
        node: &Arc<MockState>,
        guard: PullGuard,
        model: Option<ModelInfo>,
        layers: [Layer; 3],
        knobs: &PullKnobs,
    ) -> Self {
        let start = Instant::now();
        let held = model.is_none();
        let total: u64 = layers.iter().map(|l| l.size).sum();
        let (end, halt) = if held {
            (total, Halt::Finish)
        } else {
            end_point(total, layers[0].size, knobs)
        };
        let rate = if held { 0.0 } else { knobs.bytes_per_sec };
        let end_at = if rate > 0.0 {
            // In nanoseconds, so round sizes and speeds give exact times.
            let nanos = (end as f64 * 1e9 / rate).ceil();
            let offset = if nanos < u64::MAX as f64 {
                Duration::from_nanos(nanos as u64)
            } else {
                FAR_FUTURE
            };
            after(start, offset)
        } else {
            start
        };
        Self {
            node: Arc::clone(node),
            guard,
            model,
            layers,
            reported: [None; 3],
            phase: Phase::Manifest,
            end,
            halt,
            rate,
            tick: knobs.tick.max(Duration::from_millis(1)),
            start,
            end_at,
            next_tick: 1,
        }
    }

    /// Appends the lines of the next moment of the pull: the manifest and
    /// the progress at the start, then one tick's progress per call. Returns
    /// how the pull ended once it has; lines written before that (the final
    /// statuses, the error line) belong to the answer.
    pub(crate) async fn step(&mut self, out: &mut BytesMut) -> Option<PullEnding> {
        let at = match self.phase {
            Phase::Manifest => {
                push_status(out, "pulling manifest");
                self.phase = Phase::Downloading;
                // The first line of the weights says 0, unless it is all there.
                self.start
            }
            Phase::Downloading => {
                if !self.wait_for_tick().await {
                    return Some(self.stopped());
                }
                Instant::now()
            }
            Phase::Stalled => {
                self.node.stop_signal().stopped().await;
                return Some(self.stopped());
            }
        };
        let done = self.done_at(at);
        self.report(done, out);
        if done < self.end {
            return None;
        }
        match self.halt {
            Halt::Finish => Some(self.finish(out)),
            Halt::Fail => Some(self.fail(out)),
            Halt::Stall => {
                self.phase = Phase::Stalled;
                None
            }
        }
    }

    /// Runs the pull to its end without sending anything (`stream: false`):
    /// it takes as long as the streamed pull would.
    pub(crate) async fn run_to_end(mut self) -> PullEnding {
        let mut discarded = BytesMut::with_capacity(1024);
        loop {
            discarded.clear();
            if let Some(ending) = self.step(&mut discarded).await {
                return ending;
            }
        }
    }

    /// The streamed body. It owns the pull, so dropping the body before the
    /// end (the client went away) counts a cancelled pull and adds nothing.
    pub(crate) fn into_stream_body(self) -> Body {
        let stream = PullStream {
            pull: self,
            buf: BytesMut::with_capacity(1024),
            ended: false,
        };
        Body::from_stream(futures::stream::unfold(stream, PullStream::next_chunk))
    }

    /// Waits for the next tick, or for the end point when it comes first.
    /// False when the node stops meanwhile.
    async fn wait_for_tick(&mut self) -> bool {
        let tick_nanos = u64::try_from(self.tick.as_nanos()).unwrap_or(u64::MAX);
        let due = after(
            self.start,
            Duration::from_nanos(tick_nanos.saturating_mul(self.next_tick)),
        );
        if !self
            .node
            .stop_signal()
            .pause_until(due.min(self.end_at))
            .await
        {
            return false;
        }
        // A late wake-up skips the ticks it missed instead of catching up.
        let elapsed = Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos();
        let passed = u64::try_from(elapsed / u128::from(tick_nanos.max(1))).unwrap_or(u64::MAX);
        self.next_tick = self.next_tick.max(passed.saturating_add(1));
        true
    }

    /// Bytes of the whole pull done at `now`.
    fn done_at(&self, now: Instant) -> u64 {
        if self.rate <= 0.0 || now >= self.end_at {
            return self.end;
        }
        let nanos = now.saturating_duration_since(self.start).as_nanos() as f64;
        // Float to integer casts saturate.
        ((nanos * self.rate / 1e9) as u64).min(self.end)
    }

    /// Appends a progress line for every layer whose progress changed: the
    /// layer being downloaded (also at 0, when it starts) and those it
    /// finished since the last line.
    fn report(&mut self, done: u64, out: &mut BytesMut) {
        let current = self.layers.iter().position(|l| l.completed(done) < l.size);
        for (i, layer) in self.layers.iter().enumerate() {
            let completed = layer.completed(done);
            let started = completed > 0 || current == Some(i);
            if !started || self.reported[i] == Some(completed) {
                continue;
            }
            self.reported[i] = Some(completed);
            push_json_line(
                out,
                &Progress {
                    status: &layer.status,
                    digest: Some(&layer.digest),
                    total: Some(layer.size),
                    completed: Some(completed),
                },
            );
        }
    }

    /// Every byte is there: the closing statuses, and the model joins the
    /// catalogue.
    fn finish(&mut self, out: &mut BytesMut) -> PullEnding {
        push_status(out, "verifying sha256 digest");
        push_status(out, "writing manifest");
        if let Some(mut model) = self.model.take() {
            model.modified_at = Utc::now();
            self.node.models().insert(model);
        }
        self.guard.succeed();
        push_status(out, "success");
        PullEnding::Success
    }

    /// The injected failure: an error line, as Ollama reports a pull that
    /// failed mid-stream.
    fn fail(&mut self, out: &mut BytesMut) -> PullEnding {
        let message = format!("simulated download failure after {} bytes", self.end);
        push_json_line(out, &ErrorLine { error: &message });
        self.guard.fail();
        PullEnding::Failed(message)
    }

    fn stopped(&mut self) -> PullEnding {
        self.guard.fail();
        PullEnding::Stopped
    }
}

/// Where a pull of `total` bytes whose weights weigh `weights` stops, and
/// why: the failure or stall point (counted in bytes of the weights layer,
/// at most all of them; the earlier one wins, the failure on a tie), else
/// the end.
fn end_point(total: u64, weights: u64, knobs: &PullKnobs) -> (u64, Halt) {
    let fail = knobs.fail_after_bytes.map(|n| n.min(weights));
    let stall = knobs.stall_after_bytes.map(|n| n.min(weights));
    match (fail, stall) {
        (Some(f), Some(s)) if s < f => (s, Halt::Stall),
        (Some(f), _) => (f, Halt::Fail),
        (None, Some(s)) => (s, Halt::Stall),
        (None, None) => (total, Halt::Finish),
    }
}

/// The state of a streamed pull body.
struct PullStream {
    pull: Pull,
    buf: BytesMut,
    ended: bool,
}

impl PullStream {
    /// The next non-empty chunk of lines, or a broken body when the node
    /// stops mid-pull.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, io::Error>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            match self.pull.step(&mut self.buf).await {
                Some(PullEnding::Stopped) => {
                    self.ended = true;
                    let error =
                        io::Error::new(io::ErrorKind::ConnectionAborted, "mock node stopped");
                    return Some((Err(error), self));
                }
                Some(_) => {
                    self.ended = true;
                    break;
                }
                // A tick may bring no new byte at a very low speed.
                None if self.buf.is_empty() => continue,
                None => break,
            }
        }
        let chunk = self.buf.split().freeze();
        Some((Ok(chunk), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(fail: Option<u64>, stall: Option<u64>) -> PullKnobs {
        PullKnobs {
            bytes_per_sec: 0.0,
            tick: Duration::from_millis(100),
            size_bytes: None,
            fail_after_bytes: fail,
            stall_after_bytes: stall,
        }
    }

    #[test]
    fn layers_add_up_to_the_total_and_are_stable() {
        let [weights, template, params] = layers("llama3.2:latest", 2_000_000_000);
        assert_eq!(weights.size + template.size + params.size, 2_000_000_000);
        assert!((300..800).contains(&template.size), "{}", template.size);
        assert!((100..500).contains(&params.size), "{}", params.size);
        for layer in [&weights, &template, &params] {
            let hex = layer.digest.strip_prefix("sha256:").unwrap();
            assert_eq!(hex.len(), 64);
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(layer.status, format!("pulling {}", &hex[..12]));
        }
        assert_ne!(weights.digest, template.digest);
        assert_eq!(
            layers("llama3.2:latest", 10)[0],
            layers("llama3.2:latest", 10)[0]
        );
        let tiny = layers("x:latest", 10);
        assert_eq!(tiny.iter().map(|l| l.size).sum::<u64>(), 10);
    }

    #[test]
    fn layer_progress_follows_the_layers_in_order() {
        let [weights, template, _] = layers("m:latest", 10_000);
        assert_eq!(weights.completed(5), 5);
        assert_eq!(template.completed(5), 0);
        assert_eq!(weights.completed(u64::MAX), weights.size);
        assert_eq!(template.completed(weights.size + 1), 1);
    }

    #[test]
    fn the_earlier_of_failure_and_stall_wins_within_the_weights() {
        assert_eq!(end_point(100, 90, &knobs(None, None)), (100, Halt::Finish));
        assert_eq!(end_point(100, 90, &knobs(Some(5), None)), (5, Halt::Fail));
        assert_eq!(
            end_point(100, 90, &knobs(None, Some(500))),
            (90, Halt::Stall)
        );
        assert_eq!(
            end_point(100, 90, &knobs(Some(7), Some(3))),
            (3, Halt::Stall)
        );
        assert_eq!(
            end_point(100, 90, &knobs(Some(3), Some(3))),
            (3, Halt::Fail)
        );
    }
}
