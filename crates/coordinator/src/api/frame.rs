//! What every request gets, in one layer: an id, a span, and the answer's
//! standing headers.
//!
//! - The id is the client's own `x-request-id`, or a new UUID (v4) when it sent
//!   none: inference servers validate the header they are forwarded, and a UUID is
//!   what they accept. It is on the request that handlers (and nodes) see and on
//!   the answer.
//! - A `request` span (method, path, id) covers the handler, so whatever it logs
//!   can be found by the request's id.
//! - Every answer, proxied ones included, says `X-Content-Type-Options: nosniff`:
//!   browsers take the content type as given and never guess a script.
//!
//! One hand-written layer rather than a stack of tower-http's: each layer the
//! router wraps is another boxed service to clone and another boxed future per
//! request, and together they cost more than the rest of the request path.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use tower::{Layer, Service};
use tracing::instrument::{Instrument, Instrumented};

use super::REQUEST_ID_HEADER;

const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// The [`Layer`] for [`RequestFrame`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFrameLayer;

impl<S> Layer<S> for RequestFrameLayer {
    type Service = RequestFrame<S>;

    fn layer(&self, inner: S) -> RequestFrame<S> {
        RequestFrame { inner }
    }
}

/// Gives each request its id and span, and each answer the id and `nosniff`.
#[derive(Debug, Clone)]
pub struct RequestFrame<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RequestFrame<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = FrameFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::info_span!(
            "request",
            method = request.method().as_str(),
            path = request.uri().path(),
            request_id = id.to_str().unwrap_or_default(),
        );
        FrameFuture {
            inner: self.inner.call(request).instrument(span),
            id: Some(id),
        }
    }
}

/// A new request id: a UUID v4 (from a thread-local generator, no system call).
pub fn new_request_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

pin_project_lite::pin_project! {
    /// [`RequestFrame`]'s future: the handler's, then the standing headers.
    pub struct FrameFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for FrameFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let headers = response.headers_mut();
        if let Some(id) = this.id.take() {
            headers.entry(REQUEST_ID).or_insert(id);
        }
        headers
            .entry(header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(NOSNIFF);
        Poll::Ready(Ok(response))
    }
}
