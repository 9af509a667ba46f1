//! The response body sent back to the client: the node's bytes as they
//! arrive, with the request's in-flight guard inside, an idle timeout, and a
//! terminal error chunk when the node fails mid-stream or a stopping
//! coordinator cuts it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::error::stream_error_chunk;
use super::record::{Outcome, RequestRecord, RequestSinks};
use super::usage::parse_tail;
use super::{CUT_MESSAGE, Cutoff};
use crate::admission::Admission;
use crate::registry::live::SpeedSample;
use crate::registry::{InFlightGuard, RoutableNode};
use llm_router_common::ApiKind;

/// Bytes kept from the end of a response to find its token counts.
const TAIL_BYTES: usize = 8 * 1024;

/// What starts a piece of generated text in a streamed chunk (OpenAI's `delta`,
/// Ollama's `message`): counted when a stream ends without token counts.
const CONTENT_FIELD: &[u8] = b"\"content\":\"";

/// Streamed chunks that carry text, in `chunk`: one token each, as the servers
/// that send no usage (OpenAI streams without `include_usage`) stream them.
fn text_chunks(chunk: &[u8]) -> u64 {
    memchr::memmem::find_iter(chunk, CONTENT_FIELD)
        .filter(|&at| {
            chunk
                .get(at + CONTENT_FIELD.len())
                .is_some_and(|b| *b != b'"')
        })
        .count() as u64
}

/// Watches a response go by and reports it to the sinks when it ends.
pub struct Tap {
    pub record: RequestRecord,
    pub sinks: RequestSinks,
    pub started: Instant,
    /// Most response bytes kept for the record.
    pub capture_limit: usize,
    captured: Vec<u8>,
    tail: Vec<u8>,
    /// Streamed chunks with text so far, the token count when the node sends none.
    text_chunks: u64,
    /// Where the request went, to feed the node's speed estimates.
    node: std::sync::Arc<RoutableNode>,
    model: String,
    /// Whether the model had to be loaded for this request.
    cold: bool,
    /// Whether it waited behind the node's busy slots: its first byte then
    /// says how long the node's queue was, not how fast the node starts.
    queued: bool,
    /// The request's place under the caps, given back when the answer ends.
    _admission: Admission,
}

impl Tap {
    pub fn new(
        record: RequestRecord,
        sinks: RequestSinks,
        started: Instant,
        capture_limit: usize,
        node: std::sync::Arc<RoutableNode>,
        model: String,
        cold: bool,
    ) -> Self {
        Self {
            record,
            sinks,
            started,
            capture_limit,
            captured: Vec::new(),
            tail: Vec::new(),
            text_chunks: 0,
            node,
            model,
            cold,
            queued: false,
            _admission: Admission::default(),
        }
    }

    /// Marks the request as sent to a node whose slots were all busy.
    pub fn queued(mut self, queued: bool) -> Self {
        self.queued = queued;
        self
    }

    /// Keeps the request's place under the caps until the answer ends.
    pub fn holding(mut self, admission: Admission) -> Self {
        self._admission = admission;
        self
    }

    fn observe(&mut self, chunk: &[u8]) {
        if self.record.time_to_first_byte.is_none() {
            self.record.time_to_first_byte = Some(self.started.elapsed());
        }
        let room = self.capture_limit.saturating_sub(self.captured.len());
        let kept = room.min(chunk.len());
        self.captured.extend_from_slice(&chunk[..kept]);
        self.record.response_bytes_dropped += (chunk.len() - kept) as u64;
        if self.record.stream {
            self.text_chunks += text_chunks(chunk);
        }
        if chunk.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
        } else {
            // Kept up to twice the tail and cut back to one only then: the bytes move
            // once per TAIL_BYTES of answer, not on every chunk.
            if self.tail.len() + chunk.len() > 2 * TAIL_BYTES {
                self.tail.drain(..self.tail.len() - TAIL_BYTES);
            }
            self.tail.extend_from_slice(chunk);
        }
    }

    /// The last [`TAIL_BYTES`] of the answer (all of it when shorter).
    fn tail_window(&self) -> &[u8] {
        &self.tail[self.tail.len().saturating_sub(TAIL_BYTES)..]
    }

    /// What this answer says of the node's speed. A streamed answer's first byte is
    /// its first token. A whole answer arrives at once: its first token came the
    /// generation time (the node's own, else its tokens at the speed known) before
    /// the first byte, and with neither known its tokens over the whole time are
    /// the speed, with nothing before them.
    fn speed_sample(&self) -> SpeedSample {
        let usage = self.record.usage;
        let tokens = usage.completion_tokens.filter(|&n| n > 1).map(|n| n as f64);
        let first_byte = self.record.time_to_first_byte;
        let (ttft, tokens_per_sec) = if self.record.stream {
            let tps = usage.tokens_per_second().or_else(|| {
                // Without the node's own timing: tokens over the time after the first byte.
                let generating = self.record.duration.checked_sub(first_byte?)?;
                let tokens = tokens?;
                (generating.as_secs_f64() > 0.0).then(|| tokens / generating.as_secs_f64())
            });
            (first_byte, tps)
        } else {
            let known = usage
                .tokens_per_second()
                .or_else(|| self.node.live.model_speed(&self.model)?.tokens_per_sec());
            match (first_byte, tokens, known) {
                (Some(whole), Some(n), Some(tps)) => (
                    Some(whole.saturating_sub(Duration::from_secs_f64(n / tps))),
                    usage.tokens_per_second(),
                ),
                (Some(whole), Some(n), None) if !whole.is_zero() => {
                    (Some(Duration::ZERO), Some(n / whole.as_secs_f64()))
                }
                _ => (None, None),
            }
        };
        SpeedSample {
            // Queue time is no first-token time (nor a load time).
            ttft: ttft.filter(|_| !self.queued),
            tokens_per_sec,
            completion_tokens: usage.completion_tokens,
            cold: self.cold,
        }
    }

    fn finish(mut self, outcome: Outcome, error: Option<String>) {
        // A node's error status is a failure, whatever the transfer did.
        let status = self.record.status;
        let (outcome, error) = match (outcome, error) {
            (Outcome::Completed, None) if status >= 400 => (
                Outcome::Failed,
                Some(node_error(status, self.tail_window())),
            ),
            other => other,
        };
        self.record.outcome = outcome;
        self.record.duration = self.started.elapsed();
        self.record.usage = parse_tail(self.tail_window());
        if self.record.usage.completion_tokens.is_none() && self.text_chunks > 0 {
            self.record.usage.completion_tokens = Some(self.text_chunks);
        }
        if outcome == Outcome::Completed && (200..300).contains(&self.record.status) {
            let sample = self.speed_sample();
            self.node.live.record_speed(&self.model, sample);
        }
        if self.sinks.is_empty() {
            return;
        }
        self.record.response_body = Bytes::from(self.captured);
        if error.is_some() {
            self.record.error = error;
        }
        self.sinks.record(&self.record);
    }
}

/// What the node said with its error status, for the history.
fn node_error(status: u16, body: &[u8]) -> String {
    format!(
        "the node answered {status}: {}",
        super::node_error_message(&String::from_utf8_lossy(body))
    )
}

/// How a failure after the first byte is reported.
#[derive(Debug, Clone, Copy)]
pub enum FailureReport {
    /// A streamed answer (NDJSON or SSE): end with an error chunk in this format.
    ErrorChunk(ApiKind),
    /// A single JSON document: appending text would corrupt it, so abort the
    /// connection and let the client see an incomplete body.
    Abort,
}

/// The body of a node's answer on its way to the client.
pub struct ProxiedBody {
    upstream: Incoming,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    failure: FailureReport,
    /// The node answering, whose health the end of the answer counts for: a stream
    /// that breaks off or stalls is a failure like a refused connection.
    health: BodyHealth,
    /// Whether the last chunk ended a line, so an error chunk starts on a new one.
    at_line_start: bool,
    finished: bool,
    /// Dropped when the body ends or the client goes away: the node's
    /// in-flight count covers the whole response.
    guard: Option<InFlightGuard>,
    /// Reports the request when the body ends, fails or is dropped.
    tap: Option<Tap>,
    /// Bytes still to come when the node announced a length: the server stops
    /// polling once that many went out, so the end must be noticed here.
    remaining: Option<u64>,
    /// Ends the answer when a stopping coordinator's grace is over.
    cutoff: Option<Arc<Cutoff>>,
    /// Waits for the cutoff; made the first time the node makes us wait.
    cut_wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Turns an OpenAI-compatible server's answer into the Ollama one the client asked for.
    translation: Option<Box<crate::translate::response::Answer>>,
}

/// The node of a [`ProxiedBody`] and the thresholds its health is judged by.
pub struct BodyHealth {
    pub node: std::sync::Arc<RoutableNode>,
    pub thresholds: crate::registry::live::HealthThresholds,
}

/// Counts and records an answer cut at the end of a stopping coordinator's grace.
fn record_cut(cutoff: &Cutoff, tap: Tap) {
    cutoff.counted();
    tap.finish(Outcome::Cut, Some(CUT_MESSAGE.to_owned()));
}

impl Drop for ProxiedBody {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.take() {
            // A client that stopped reading is closed at the end of the grace.
            match &self.cutoff {
                Some(cutoff) if cutoff.is_cut() => record_cut(cutoff, tap),
                _ => tap.finish(
                    Outcome::Cancelled,
                    Some("client closed the connection".into()),
                ),
            }
        }
    }
}

impl ProxiedBody {
    pub fn new(
        upstream: Incoming,
        idle_timeout: Duration,
        failure: FailureReport,
        health: BodyHealth,
        guard: InFlightGuard,
        tap: Tap,
        content_length: Option<u64>,
    ) -> Self {
        let mut body = Self {
            remaining: content_length,
            upstream,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            failure,
            health,
            at_line_start: true,
            finished: false,
            guard: Some(guard),
            tap: Some(tap),
            cutoff: None,
            cut_wait: None,
            translation: None,
        };
        if content_length == Some(0) {
            // Nothing to send: the server will not ask for a frame.
            body.complete();
        }
        body
    }

    /// Sends the client `answer`'s translation of the node's answer instead of the answer.
    pub fn translated(mut self, answer: crate::translate::response::Answer) -> Self {
        self.translation = Some(Box::new(answer));
        self
    }

    /// Passes one chunk the client gets on to the tap and the line tracking.
    fn sent(&mut self, chunk: &[u8]) {
        if let Some(&last) = chunk.last() {
            self.at_line_start = last == b'\n';
        }
        if let Some(tap) = &mut self.tap {
            tap.observe(chunk);
        }
    }

    /// Ends this answer early if `cutoff` is cut before it is over.
    pub fn cut_by(mut self, cutoff: Arc<Cutoff>) -> Self {
        self.cutoff = Some(cutoff);
        self
    }

    /// The grace of a stopping coordinator ran out: end the answer with an
    /// error (the node's health is not at stake).
    fn cut(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.finished = true;
        self.guard = None;
        if let (Some(cutoff), Some(tap)) = (&self.cutoff, self.tap.take()) {
            record_cut(cutoff, tap);
        }
        self.error_frame(CUT_MESSAGE)
    }

    /// The whole answer went through: release the slot and report it.
    fn complete(&mut self) {
        self.finished = true;
        self.guard = None;
        let BodyHealth { node, thresholds } = &self.health;
        super::log_health_change(node, node.live.record_success(*thresholds));
        if let Some(tap) = self.tap.take() {
            tap.finish(Outcome::Completed, None);
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.finished = true;
        self.guard = None;
        let BodyHealth { node, thresholds } = &self.health;
        tracing::warn!(node = %node.machine_name, error = %message, "response from node broke off");
        super::log_health_change(node, node.live.record_failure(*thresholds));
        if let Some(tap) = self.tap.take() {
            tap.finish(Outcome::Failed, Some(message.clone()));
        }
        self.error_frame(&message)
    }

    /// The frame that ends a failed answer: an error chunk in the stream's
    /// format, or an error that aborts a single JSON document.
    fn error_frame(&self, message: &str) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.failure {
            FailureReport::ErrorChunk(flavor) => {
                let chunk = stream_error_chunk(flavor, message);
                let chunk = if self.at_line_start {
                    chunk
                } else {
                    let mut joined = Vec::with_capacity(chunk.len() + 1);
                    joined.push(b'\n');
                    joined.extend_from_slice(&chunk);
                    Bytes::from(joined)
                };
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            FailureReport::Abort => {
                Poll::Ready(Some(Err(std::io::Error::other(message.to_owned()))))
            }
        }
    }
}

impl Body for ProxiedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    if let Some(translation) = &mut this.translation {
                        // The node's bytes are counted against its announced length; the
                        // client gets the translation, which may be nothing yet.
                        let Some(chunk) = frame.data_ref() else {
                            continue;
                        };
                        let out = translation.push(chunk);
                        if out.is_empty() {
                            continue;
                        }
                        this.sent(&out);
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    if let Some(chunk) = frame.data_ref() {
                        this.sent(chunk);
                        if let Some(remaining) = &mut this.remaining {
                            *remaining = remaining.saturating_sub(chunk.len() as u64);
                            if *remaining == 0 {
                                this.complete();
                            }
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let message = format!(
                        "node {} failed mid-response: {}",
                        this.health.node.machine_name,
                        error_chain(&e)
                    );
                    return this.fail(message);
                }
                Poll::Ready(None) => {
                    let last = this.translation.as_mut().map(|t| t.finish());
                    match last {
                        Some(out) if !out.is_empty() => {
                            this.sent(&out);
                            this.complete();
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        _ => {
                            this.complete();
                            return Poll::Ready(None);
                        }
                    }
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let message = format!(
                            "node {} sent nothing for {} s; response ended",
                            this.health.node.machine_name,
                            this.idle_timeout.as_secs()
                        );
                        return this.fail(message);
                    }
                    // Looked at only while the node makes us wait: an answer
                    // whose end is already here is never cut.
                    if let Some(cutoff) = &this.cutoff {
                        if cutoff.is_cut() {
                            return this.cut();
                        }
                        let wait = this
                            .cut_wait
                            .get_or_insert_with(|| Box::pin(cutoff.cancelled()));
                        if wait.as_mut().poll(cx).is_ready() {
                            return this.cut();
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        // An error chunk may follow a streamed answer, so only a complete
        // single document has a known length.
        match (self.failure, self.remaining) {
            (FailureReport::Abort, Some(n)) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// `e` and its sources, joined: HTTP clients' top-level messages alone are vague.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::RequestMeta;

    #[test]
    fn a_node_error_says_what_the_node_said() {
        assert_eq!(
            node_error(
                500,
                br#"{"error":{"message":"model must be created with embedding=True"}}"#
            ),
            "the node answered 500: model must be created with embedding=True"
        );
        assert_eq!(node_error(400, b""), "the node answered 400: (empty body)");
    }

    fn tap() -> Tap {
        let meta = RequestMeta {
            request_id: "r".into(),
            client_ip: None,
            api_key: None,
            method: axum::http::Method::POST,
            started: Instant::now(),
            started_at: chrono::Utc::now(),
        };
        let record = meta.record(ApiKind::Ollama, "/api/chat", None, Bytes::new(), Vec::new());
        let node = crate::balancer::testing::node("n");
        Tap::new(
            record,
            RequestSinks::default(),
            meta.started,
            0,
            node,
            "m".into(),
            false,
        )
    }

    #[test]
    fn streamed_text_chunks_are_counted_and_empty_or_role_only_ones_are_not() {
        let sse =
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(text_chunks(sse), 2);
        assert_eq!(text_chunks(b"{\"done\":true}"), 0);
    }

    #[test]
    fn the_usage_is_read_from_the_end_of_a_long_stream_of_small_chunks() {
        let mut tap = tap();
        for i in 0..2000 {
            tap.observe(
                format!("{{\"message\":{{\"content\":\"token {i}\"}},\"done\":false}}\n")
                    .as_bytes(),
            );
            assert!(tap.tail.len() <= 2 * TAIL_BYTES);
        }
        tap.observe(b"{\"done\":true,\"prompt_eval_count\":12,\"eval_count\":2000,\"eval_duration\":1000000000}\n");
        let usage = parse_tail(tap.tail_window());
        assert_eq!(usage.completion_tokens, Some(2000));
        assert_eq!(usage.prompt_tokens, Some(12));
    }
}
