//! What sitio knows of gRPC: status codes (names, and the HTTP status each
//! stands for, so a failing gRPC service trips the breaker and notifies like
//! a 5xx), the `grpc-status` of an answer, and the call deadline a client
//! sets with `grpc-timeout`, held for the whole call.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// `DEADLINE_EXCEEDED`: the call ran past its `grpc-timeout`.
pub(crate) const DEADLINE_EXCEEDED: u16 = 4;

/// The names of gRPC's status codes, by code (google.rpc.Code).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The HTTP status each code stands for, as google.rpc.Code documents them
/// (CANCELLED is nginx's 499, "client closed request").
const HTTP: [u16; 17] = [
    200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
];

/// The name of gRPC status `code` (`OK`, `UNAVAILABLE`…); codes gRPC does not
/// define are `UNKNOWN`, as its spec tells clients to read them.
pub fn code_name(code: u16) -> &'static str {
    NAMES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// True when gRPC status `code` is the server's failure: its HTTP equivalent
/// is a 5xx (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS, and codes gRPC does not define).
pub fn is_server_error(code: u16) -> bool {
    HTTP.get(usize::from(code)).copied().unwrap_or(500) >= 500
}

/// The `grpc-status` in `headers` (the trailers, or the head of a
/// trailers-only answer); `None` when absent, UNKNOWN (2) when unreadable or
/// not one gRPC defines (as its spec tells clients to read it).
pub(crate) fn status_of(headers: &HeaderMap) -> Option<u16> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|code| usize::from(*code) < NAMES.len())
            .unwrap_or(2),
    )
}

/// The deadline a client set with `grpc-timeout` (at most 8 digits and a unit:
/// H, M, S, m, u or n); `None` when absent or malformed (gRPC servers then
/// run without one, and so does sitio).
pub(crate) fn timeout_of(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A gRPC response body held to its call's deadline: past it, the service's
/// stream is dropped (hyper resets it, so the service stops working on a
/// call nobody waits for) and the client's stream ends with trailers
/// `grpc-status: 4` (DEADLINE_EXCEEDED), as a gRPC server would end it.
pub(crate) struct CallDeadline {
    inner: Option<Body>,
    expiry: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl CallDeadline {
    /// `body`, to be over by `at` (its call's `grpc-timeout`, `timeout`, after it began).
    pub(crate) fn wrap(body: Body, at: tokio::time::Instant, timeout: Duration) -> Body {
        Body::stream(CallDeadline {
            inner: Some(body),
            expiry: Box::pin(tokio::time::sleep_until(at)),
            timeout,
        })
    }

    fn expired_trailers(&self) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(DEADLINE_EXCEEDED));
        let message = format!(
            "deadline exceeded: the call's grpc-timeout ({:?}) passed",
            self.timeout
        );
        // Printable ASCII: a valid grpc-message as it stands.
        if let Ok(v) = HeaderValue::from_str(&message) {
            trailers.insert("grpc-message", v);
        }
        trailers.insert(
            http::HeaderName::from_static("sitio-error"),
            HeaderValue::from_static("upstream-timeout"),
        );
        trailers
    }
}

impl HttpBody for CallDeadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.expiry.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::debug!(timeout = ?this.timeout, "gRPC call past its deadline; service stream reset");
        this.inner = None;
        Poll::Ready(Some(Ok(Frame::trailers(this.expired_trailers()))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_spec_writes_them() {
        let t = |v| timeout_of(&headers("grpc-timeout", v));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        // Nine digits, no digits, a sign, an unknown unit: no deadline.
        for bad in ["123456789m", "m", "-1S", "10x", "1.5S", ""] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(timeout_of(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_are_named_and_judged_as_their_http_equivalents() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(42), "UNKNOWN");
        let failures: Vec<u16> = (0..=17).filter(|c| is_server_error(*c)).collect();
        assert_eq!(failures, [2, 4, 12, 13, 14, 15, 17]);
        assert_eq!(status_of(&headers("grpc-status", "14")), Some(14));
        assert_eq!(status_of(&headers("grpc-status", "x")), Some(2));
        assert_eq!(status_of(&headers("grpc-status", "42")), Some(2));
        assert_eq!(status_of(&HeaderMap::new()), None);
    }
}
