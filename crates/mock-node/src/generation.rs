//! One generation from admission to its last token: the deterministic text,
//! the pacing clock (token `i` is due at `first + i × interval`, measured
//! from one start instant so waits never drift), and the streamed body that
//! carries the in-flight guard.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::scheduler::Slot;
use crate::state::MockState;
use crate::stats::GenerationGuard;

/// Appends the text of token `index`: the node's name first, then
/// ` token1`, ` token2`, … so a whole answer reads `node-a token1 token2`.
pub(crate) fn write_token(out: &mut String, node_name: &str, index: u64) {
    if index == 0 {
        out.push_str(node_name);
    } else {
        let _ = write!(out, " token{index}");
    }
}

/// The whole text of a generation of `tokens` tokens.
pub fn generated_text(node_name: &str, tokens: u64) -> String {
    // About 8 bytes per token; an estimate, not a limit.
    let capacity = usize::try_from(tokens.saturating_mul(8)).unwrap_or(usize::MAX);
    let mut text = String::with_capacity(capacity.min(1 << 20) + node_name.len());
    for i in 0..tokens {
        write_token(&mut text, node_name, i);
    }
    text
}

/// Whitespace-separated words, the mock's idea of a token count.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Largest generation the node agrees to produce in one request, so that a
/// huge `max_tokens` cannot make it build gigabytes of text.
pub(crate) const MAX_TOKENS: u64 = 1 << 20;

/// Durations and counts of a finished generation, as Ollama reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) total_duration: u64,
    pub(crate) load_duration: u64,
    pub(crate) prompt_eval_count: u64,
    pub(crate) prompt_eval_duration: u64,
    pub(crate) eval_count: u64,
    pub(crate) eval_duration: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How an encoder turns tokens into wire bytes (NDJSON lines, SSE events).
pub(crate) trait ChunkEncoder: Send + 'static {
    /// `Content-Type` of the streamed form.
    const STREAM_CONTENT_TYPE: &'static str;
    /// Appends the chunk carrying token number `index`, whose text is `text`.
    fn token(&mut self, index: u64, text: &str, out: &mut BytesMut);
    /// Appends everything that closes the stream (final object, usage,
    /// terminator).
    fn finish(&mut self, summary: &Summary, out: &mut BytesMut);
    /// The non-streamed answer carrying the whole `text`.
    fn whole(&mut self, text: &str, summary: &Summary) -> Bytes;
}

/// Why a generation did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// `die_after_tokens` was reached.
    Died,
    /// The node is stopping.
    Stopped,
}

impl Cut {
    fn into_io_error(self) -> io::Error {
        match self {
            Cut::Died => io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock node died mid-generation (die_after_tokens)",
            ),
            Cut::Stopped => io::Error::new(io::ErrorKind::ConnectionAborted, "mock node stopped"),
        }
    }
}

/// A response body that fails at once, so hyper drops the connection
/// instead of finishing the response.
pub(crate) fn broken_body(cut: Cut) -> Body {
    Body::from_stream(futures::stream::once(async move {
        Err::<Bytes, io::Error>(cut.into_io_error())
    }))
}

/// An admitted generation: it holds a slot and counts as in flight.
#[derive(Debug)]
pub(crate) struct Generation {
    pub(crate) node: Arc<MockState>,
    pub(crate) guard: GenerationGuard,
    slot: Option<Slot>,
    received: Instant,
    /// When token 0 is due (slot ready + time to first token).
    first_token_at: Instant,
    interval: Duration,
    pub(crate) tokens: u64,
    pub(crate) prompt_tokens: u64,
    die_after: Option<u64>,
}

impl Generation {
    pub(crate) fn new(
        node: Arc<MockState>,
        guard: GenerationGuard,
        slot: Slot,
        received: Instant,
        tokens: u64,
        prompt_tokens: u64,
    ) -> Self {
        let control = node.control();
        let first_token_at = slot.ready_at + control.ttft();
        let interval = control.token_interval();
        let die_after = control.die_after_tokens();
        Self {
            node,
            guard,
            slot: Some(slot),
            received,
            first_token_at,
            interval,
            tokens,
            prompt_tokens,
            die_after,
        }
    }

    /// When token `index` is due.
    fn due(&self, index: u64) -> Instant {
        let offset = self.interval.as_nanos().saturating_mul(u128::from(index));
        let offset = Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
        self.first_token_at + offset
    }

    /// Waits until token `index` is due. False when the node stops first.
    async fn wait_for_token(&self, index: u64) -> bool {
        if self.interval.is_zero() && index > 0 {
            // Token 0 may still be in its time to first token; the others
            // are due at once when there is no pace.
            return !self.node.stop_signal().is_stopped();
        }
        self.node.stop_signal().pause_until(self.due(index)).await
    }

    /// Waits for the first token (prompt evaluation).
    pub(crate) async fn wait_first_token(&self) -> Result<(), Cut> {
        if self.wait_for_token(0).await {
            Ok(())
        } else {
            Err(Cut::Stopped)
        }
    }

    /// Runs the generation to its end without streaming: waits as long as
    /// emitting every token would take, or until the injected death.
    pub(crate) async fn run_to_end(&mut self) -> Result<Summary, Cut> {
        let cut_at = self.die_after.filter(|&n| n <= self.tokens);
        let last = match cut_at {
            Some(n) => n,
            None => self.tokens.saturating_sub(1),
        };
        if !self.wait_for_token(last).await {
            self.guard.abort();
            return Err(Cut::Stopped);
        }
        if cut_at.is_some() {
            self.guard.abort();
            return Err(Cut::Died);
        }
        self.guard.complete();
        let summary = self.summary();
        self.slot = None;
        Ok(summary)
    }

    fn summary(&self) -> Summary {
        let now = Instant::now();
        let (ready_at, load) = self
            .slot
            .as_ref()
            .map_or((self.first_token_at, Duration::ZERO), |s| {
                (s.ready_at, s.load_time)
            });
        // At least 1 ns, so clients computing tokens per second never
        // divide by zero.
        Summary {
            total_duration: nanos(now - self.received).max(1),
            load_duration: nanos(load),
            prompt_eval_count: self.prompt_tokens,
            prompt_eval_duration: nanos(self.first_token_at - ready_at).max(1),
            eval_count: self.tokens,
            eval_duration: nanos(now.saturating_duration_since(self.first_token_at)).max(1),
        }
    }

    /// The body of a whole (non-streamed) answer. It holds the generation,
    /// and with it the in-flight count, until hyper takes the bytes.
    pub(crate) fn into_whole_body(self, bytes: Bytes) -> Body {
        Body::from_stream(futures::stream::once(async move {
            drop(self);
            Ok::<_, std::convert::Infallible>(bytes)
        }))
    }

    /// The streamed body: one chunk per token, paced, then the closing
    /// chunk. The body owns the generation, so its guard and slot live until
    /// the body is dropped, by hyper when done or when the client leaves.
    pub(crate) fn into_stream_body<E: ChunkEncoder>(self, encoder: E) -> Body {
        let state = StreamState {
            generation: self,
            encoder,
            next: 0,
            buf: BytesMut::with_capacity(4096),
            text: String::with_capacity(64),
            done: false,
        };
        Body::from_stream(futures::stream::unfold(state, StreamState::step))
    }
}

struct StreamState<E> {
    generation: Generation,
    encoder: E,
    /// Tokens emitted so far.
    next: u64,
    buf: BytesMut,
    text: String,
    done: bool,
}

impl<E: ChunkEncoder> StreamState<E> {
    async fn step(mut self) -> Option<(Result<Bytes, io::Error>, Self)> {
        if self.done {
            return None;
        }
        if self.generation.die_after == Some(self.next) {
            // Let hyper flush the tokens already produced before the
            // connection drops, so the client really sees a partial answer.
            tokio::task::yield_now().await;
            return Some(self.cut(Cut::Died));
        }
        if self.next < self.generation.tokens {
            if !self.generation.wait_for_token(self.next).await {
                return Some(self.cut(Cut::Stopped));
            }
            self.text.clear();
            write_token(&mut self.text, self.generation.node.name(), self.next);
            self.encoder.token(self.next, &self.text, &mut self.buf);
            self.next += 1;
        } else {
            let summary = self.generation.summary();
            self.encoder.finish(&summary, &mut self.buf);
            self.generation.guard.complete();
            self.generation.slot = None;
            self.done = true;
        }
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(4096);
        }
        let chunk = self.buf.split().freeze();
        Some((Ok(chunk), self))
    }

    fn cut(mut self, cut: Cut) -> (Result<Bytes, io::Error>, Self) {
        self.generation.guard.abort();
        self.generation.slot = None;
        self.done = true;
        (Err(cut.into_io_error()), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_text_starts_with_the_node_name_and_has_one_word_per_token() {
        let text = generated_text("node-a", 4);
        assert_eq!(text, "node-a token1 token2 token3");
        assert_eq!(count_words(&text), 4);
        assert_eq!(generated_text("node-a", 0), "");
    }
}
