//! Body wrappers on both legs: the request body streamed to the service (counted),
//! and the service's response body (which hands its connection back to the pool
//! the moment its last byte is read).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::PoolHome;
use crate::error::BoxError;
use crate::filter::{Filters, Step};
use crate::io::ConnPhase;

/// What the exchange learns about the request body while it streams.
#[derive(Debug, Default)]
pub(crate) struct RequestBodyState {
    bytes: AtomicU64,
    malformed: AtomicBool,
}

impl RequestBodyState {
    /// Bytes read from the client so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True when the client's body could not be read to its end (a bad chunk
    /// size, a short body, a reset): a failure of the client, not the service.
    pub(crate) fn malformed(&self) -> bool {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// Where a request body comes from: the client connection, or (in
/// `Decorators::simulate`) a body made in memory.
pub(crate) enum Source {
    /// No body: the head said so (sitio's own HTTP/1 server side).
    Empty,
    /// A body (of known length, or chunked) that sitio's own HTTP/1 server
    /// side reads.
    Client(crate::client_body::ClientBody),
    Wire(Incoming),
    Made(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl Source {
    fn is_end_stream(&self) -> bool {
        match self {
            Source::Empty => true,
            Source::Client(b) => b.is_end_stream(),
            Source::Wire(b) => b.is_end_stream(),
            Source::Made(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Empty => SizeHint::with_exact(0),
            Source::Client(b) => b.size_hint(),
            Source::Wire(b) => b.size_hint(),
            Source::Made(b) => b.size_hint(),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Source::Empty => Poll::Ready(None),
            Source::Client(b) => Pin::new(b).poll_frame(cx),
            Source::Wire(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Source::Made(b) => Pin::new(b).poll_frame(cx),
        }
    }
}

/// The client's request body on its way to the service, counting its bytes
/// and running the request body filters decorators installed.
pub(crate) struct RequestBody {
    inner: Source,
    state: Option<Arc<RequestBodyState>>,
    /// Told when the body is over, so the body timeout stops applying.
    phase: Option<Arc<ConnPhase>>,
    filters: Filters,
}

impl RequestBody {
    /// Wraps `inner`; the returned state (only for requests that have a body,
    /// so body-less requests allocate nothing) is shared with the exchange.
    /// Filters apply only to requests that have a body.
    pub(crate) fn new(
        inner: Source,
        phase: Option<&Arc<ConnPhase>>,
        filters: Filters,
    ) -> (Self, Option<Arc<RequestBodyState>>) {
        let has_body = !inner.is_end_stream();
        let state = has_body.then(Arc::default);
        let phase = phase.filter(|_| has_body).map(|phase| {
            phase.body_pending(true);
            phase.clone()
        });
        let filters = if has_body {
            filters
        } else {
            Filters::default()
        };
        (
            RequestBody {
                inner,
                state: state.clone(),
                phase,
                filters,
            },
            state,
        )
    }

    fn body_over(&mut self) {
        if let Some(phase) = self.phase.take() {
            phase.body_pending(false);
        }
    }

    /// Counts what the client sent and notes how the body ended.
    fn observe(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BoxError>>>) {
        let over = match polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if over {
            if let Some(phase) = &self.phase {
                phase.body_read();
            }
            self.body_over();
        }
        let Some(state) = &self.state else { return };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            // A bad chunk size, a short body, a reset: all the client's doing.
            Poll::Ready(Some(Err(_))) => state.malformed.store(true, Ordering::Relaxed),
            Poll::Ready(None) | Poll::Pending => {}
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(step) = this.filters.waiting() {
            return Poll::Ready(step_frame(step));
        }
        loop {
            let polled = this.inner.poll_frame(cx);
            this.observe(&polled);
            let frame = match polled {
                Poll::Ready(Some(Ok(frame))) => Some(frame),
                Poll::Ready(None) => None,
                other => return other, // pending, or the client's error
            };
            let last = this.inner.is_end_stream();
            match this.filters.step(frame, last) {
                Step::Held => continue,
                step => return Poll::Ready(step_frame(step)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.filters.drained()
    }

    fn size_hint(&self) -> SizeHint {
        if self.filters.change_length() {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

fn step_frame(step: Step) -> Option<Result<Frame<Bytes>, BoxError>> {
    match step {
        Step::Frame(frame) => Some(Ok(frame)),
        Step::Held | Step::Over => None,
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.body_over();
    }
}

/// The service's response as it comes off the wire.
pub(crate) enum Wire {
    /// sitio's own HTTP/1 client (`h1`).
    H1(super::h1::ResponseBody),
    /// hyper's HTTP/2 client.
    H2(Incoming),
}

impl Wire {
    fn is_end_stream(&self) -> bool {
        match self {
            Wire::H1(b) => b.is_end_stream(),
            Wire::H2(b) => b.is_end_stream(),
        }
    }

    /// For the body of a `101` (the caller checks the status): the service's
    /// socket and the bytes already read past the head (HTTP/1 only; the
    /// body is empty afterwards).
    pub(crate) fn take_upgraded(&mut self) -> Option<(tokio::net::TcpStream, Bytes)> {
        match self {
            Wire::H1(b) => b.take_upgraded(),
            Wire::H2(_) => None,
        }
    }
}

/// Where a finished HTTP/1 service connection goes back to: the exchange's
/// per-connection context (so holding it bumps that connection's reference
/// count, not one every core's requests would share) and the upstream's index.
pub(crate) type Home = (Arc<dyn PoolHome>, usize);

/// The service's response body.
pub(crate) struct UpstreamBody {
    inner: Wire,
    /// Where the connection goes back to once the body ends (`None` once
    /// it did, or cannot).
    home: Option<Home>,
}

/// How much of a discarded body is read to save its connection before giving up.
const DRAIN_LIMIT_BYTES: u64 = 1 << 20;
const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(5);

impl UpstreamBody {
    pub(crate) fn new(inner: Wire, home: Home) -> Self {
        let mut body = UpstreamBody {
            inner,
            home: Some(home),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The response is over: the connection goes back to the pool if it may
    /// serve another exchange (see `h1::ResponseBody::take_reusable`).
    fn release(&mut self) {
        let Some((home, upstream)) = self.home.take() else {
            return;
        };
        if let Wire::H1(body) = &mut self.inner
            && let Some(conn) = body.take_reusable()
        {
            home.upstream(upstream).checkin(conn);
        }
    }

    /// The response head's fields, if they were kept as the client's lines
    /// (its map is empty then); once.
    pub(crate) fn take_lines(&mut self) -> Option<Box<super::h1::Lines>> {
        match &mut self.inner {
            Wire::H1(b) => b.take_lines(),
            Wire::H2(_) => None,
        }
    }

    /// Reads and drops the rest of the body off the request path, so that the
    /// connection returns to the pool; gives up (closing it) on large or slow bodies.
    pub(crate) fn drain_in_background(mut self) {
        if self.home.is_none() {
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
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Wire::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Wire::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        };
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Wire::H1(b) => b.size_hint(),
            Wire::H2(b) => b.size_hint(),
        }
    }
}
