//! The one body type that flows from the service (or a decorator) to the client.
//!
//! An enum rather than a boxed trait object so that the common cases, a streamed
//! upstream body or a small fixed page, cost no allocation and no dynamic dispatch.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::upstream::UpstreamBody;

pub use crate::error::BoxError;

/// A response body: empty, a fixed buffer, the service's streamed body, or any
/// other body a decorator supplies.
pub struct Body {
    kind: Kind,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// A body of exactly these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Body::empty();
        }
        Body {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// Any streaming body, e.g. one a decorator generates.
    pub fn stream<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body {
            kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()),
        }
    }

    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        Body {
            kind: Kind::Upstream(body),
        }
    }

    /// The bytes of an empty or fixed body; `None` for a streamed one.
    pub(crate) fn into_full(self) -> Option<Bytes> {
        match self.kind {
            Kind::Empty | Kind::Full(None) => Some(Bytes::new()),
            Kind::Full(Some(bytes)) => Some(bytes),
            Kind::Upstream(_) | Kind::Boxed(_) => None,
        }
    }

    /// True when this body streams from the service (as opposed to being made by sitio).
    pub fn is_from_upstream(&self) -> bool {
        matches!(self.kind, Kind::Upstream(_))
    }

    /// The fields of the head this body came with, if they were kept as the
    /// client's lines (`upstream::h1::Lines`); once.
    pub(crate) fn take_lines(&mut self) -> Option<Box<crate::upstream::Lines>> {
        match &mut self.kind {
            Kind::Upstream(body) => body.take_lines(),
            _ => None,
        }
    }

    /// Consumes the body in the background so that its upstream connection can be
    /// reused; used when a decorator replaces a response whose body is not sent.
    pub(crate) fn discard(self) {
        if let Kind::Upstream(body) = self.kind {
            body.drain_in_background();
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::full(b)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::full(Bytes::from(s))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::full(Bytes::from(v))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}
