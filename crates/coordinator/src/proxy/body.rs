//! The response body sent back to the client: the node's bytes as they
//! arrive, with the request's in-flight guard inside, an idle timeout, and a
//! terminal error chunk when the node fails mid-stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::error::{ApiFlavor, stream_error_chunk};
use crate::registry::InFlightGuard;

type UpstreamStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How a failure after the first byte is reported.
#[derive(Debug, Clone, Copy)]
pub enum FailureReport {
    /// A streamed answer (NDJSON or SSE): end with an error chunk in this format.
    ErrorChunk(ApiFlavor),
    /// A single JSON document: appending text would corrupt it, so abort the
    /// connection and let the client see an incomplete body.
    Abort,
}

/// Stream of body chunks from a node to the client.
pub struct ProxiedBody {
    upstream: UpstreamStream,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    failure: FailureReport,
    node: String,
    /// Whether the last chunk ended a line, so an error chunk starts on a new one.
    at_line_start: bool,
    finished: bool,
    /// Dropped when the body ends or the client goes away: the node's
    /// in-flight count covers the whole response.
    guard: Option<InFlightGuard>,
}

impl ProxiedBody {
    pub fn new(
        upstream: UpstreamStream,
        idle_timeout: Duration,
        failure: FailureReport,
        node: String,
        guard: InFlightGuard,
    ) -> Self {
        Self {
            upstream,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            failure,
            node,
            at_line_start: true,
            finished: false,
            guard: Some(guard),
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.finished = true;
        self.guard = None;
        tracing::warn!(node = %self.node, error = %message, "response from node broke off");
        match self.failure {
            FailureReport::ErrorChunk(flavor) => {
                let chunk = stream_error_chunk(flavor, &message);
                let chunk = if self.at_line_start {
                    chunk
                } else {
                    let mut joined = Vec::with_capacity(chunk.len() + 1);
                    joined.push(b'\n');
                    joined.extend_from_slice(&chunk);
                    Bytes::from(joined)
                };
                Poll::Ready(Some(Ok(chunk)))
            }
            FailureReport::Abort => Poll::Ready(Some(Err(std::io::Error::other(message)))),
        }
    }
}

impl Stream for ProxiedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        match this.upstream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(&last) = chunk.last() {
                    this.at_line_start = last == b'\n';
                }
                let deadline = Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!(
                    "node {} failed mid-response: {}",
                    this.node,
                    error_chain(&e)
                );
                this.fail(message)
            }
            Poll::Ready(None) => {
                this.finished = true;
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let message = format!(
                        "node {} sent nothing for {} s; response ended",
                        this.node,
                        this.idle_timeout.as_secs()
                    );
                    this.fail(message)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// `e` and its sources, joined: reqwest's top-level messages alone are vague.
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
