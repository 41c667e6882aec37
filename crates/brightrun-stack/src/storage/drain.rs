//! Reading the rest of a request body that a handler refused without reading.
//!
//! storage-api runs on Node, whose HTTP server discards an unread request body after the
//! response, so a client still sending its chunk reads the refusal (413, 415, 403, 409, …).
//! hyper instead closes the connection, and the client sees a broken pipe instead of the reason;
//! tus-js-client then retries for half a minute and reports `EPIPE`. [`drain_unread`] wraps every
//! storage request body so that, if it is dropped before its end, the rest is read and discarded
//! in the background — bounded in bytes and in idle time, so a client cannot hold a task forever.
//! The response to such a request says `Connection: close` (nginx's "lingering close"): the
//! connection ends once the rest is drained, instead of idling in keep-alive with a client that
//! may never reuse it (Node keeps such a socket referenced, and its process alive).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use http_body::{Frame, SizeHint};

/// More than any object we accept plus a TUS chunk; past this the connection is cut after all.
const DRAIN_LIMIT: u64 = 6 * 1024 * 1024 * 1024;
/// A client that stops sending for this long is not waiting for an answer any more.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

pub async fn drain_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let refused = Arc::new(AtomicBool::new(false));
    let body = Body::new(DrainOnDrop {
        inner: Some(body),
        finished: false,
        refused: refused.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if refused.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

struct DrainOnDrop {
    inner: Option<Body>,
    finished: bool,
    /// Set when the body is dropped before its end (the handler refused it).
    refused: Arc<AtomicBool>,
}

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished
            || self
                .inner
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(http_body::Body::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.finished || http_body::Body::is_end_stream(&inner) {
            return;
        }
        self.refused.store(true, Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut stream = inner.into_data_stream();
            let mut read = 0u64;
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(IDLE_LIMIT, stream.next()).await {
                read += chunk.len() as u64;
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        });
    }
}
