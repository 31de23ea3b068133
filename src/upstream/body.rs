//! Body wrappers on both legs: the request body streamed to the service (counted),
//! and the service's response body (which hands its connection back to the pool
//! the moment its last byte is read).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::PooledSender;

/// The client's request body on its way to the service, counting its bytes.
pub(crate) struct RequestBody {
    inner: Incoming,
    counter: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    /// Wraps `inner`; the returned counter (only for requests that have a body,
    /// so body-less requests allocate nothing) tracks bytes read so far.
    pub(crate) fn new(inner: Incoming) -> (Self, Option<Arc<AtomicU64>>) {
        let counter = (!inner.is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
        (
            RequestBody {
                inner,
                counter: counter.clone(),
            },
            counter,
        )
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, &self.counter) {
            if let Some(data) = frame.data_ref() {
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The service's response body.
pub(crate) struct UpstreamBody {
    inner: Incoming,
    sender: Option<PooledSender>,
}

/// How much of a discarded body is read to save its connection before giving up.
const DRAIN_LIMIT_BYTES: u64 = 1 << 20;
const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(5);

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, sender: Option<PooledSender>) -> Self {
        let mut body = UpstreamBody { inner, sender };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.checkin();
        }
    }

    /// Reads and drops the rest of the body off the request path, so that the
    /// connection returns to the pool; gives up (closing it) on large or slow bodies.
    pub(crate) fn drain_in_background(mut self) {
        if self.sender.is_none() {
            return; // Not reusable anyway: dropping closes it.
        }
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let drain = async {
                let mut seen = 0u64;
                while let Some(frame) = self.frame().await {
                    let Ok(frame) = frame else { return };
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > DRAIN_LIMIT_BYTES {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_LIMIT_TIME, drain).await;
        });
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.sender = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
