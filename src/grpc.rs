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

// The codes sitio answers with itself (see `rescue`).
pub(crate) const INVALID_ARGUMENT: u16 = 3;
pub(crate) const DEADLINE_EXCEEDED: u16 = 4;
pub(crate) const PERMISSION_DENIED: u16 = 7;
pub(crate) const RESOURCE_EXHAUSTED: u16 = 8;
pub(crate) const UNIMPLEMENTED: u16 = 12;
pub(crate) const INTERNAL: u16 = 13;
pub(crate) const UNAVAILABLE: u16 = 14;
pub(crate) const UNAUTHENTICATED: u16 = 16;

/// Every code gRPC defines, by code (google.rpc.Code): its name, the HTTP
/// status it stands for (CANCELLED is nginx's 499, "client closed
/// request"), and its crash-notification kind.
const CODES: [(&str, u16, &str); 17] = [
    ("OK", 200, "grpc-ok"),
    ("CANCELLED", 499, "grpc-cancelled"),
    ("UNKNOWN", 500, "grpc-unknown"),
    ("INVALID_ARGUMENT", 400, "grpc-invalid-argument"),
    ("DEADLINE_EXCEEDED", 504, "grpc-deadline-exceeded"),
    ("NOT_FOUND", 404, "grpc-not-found"),
    ("ALREADY_EXISTS", 409, "grpc-already-exists"),
    ("PERMISSION_DENIED", 403, "grpc-permission-denied"),
    ("RESOURCE_EXHAUSTED", 429, "grpc-resource-exhausted"),
    ("FAILED_PRECONDITION", 400, "grpc-failed-precondition"),
    ("ABORTED", 409, "grpc-aborted"),
    ("OUT_OF_RANGE", 400, "grpc-out-of-range"),
    ("UNIMPLEMENTED", 501, "grpc-unimplemented"),
    ("INTERNAL", 500, "grpc-internal"),
    ("UNAVAILABLE", 503, "grpc-unavailable"),
    ("DATA_LOSS", 500, "grpc-data-loss"),
    ("UNAUTHENTICATED", 401, "grpc-unauthenticated"),
];

/// Codes gRPC does not define read as UNKNOWN, as its spec tells clients.
fn entry(code: u16) -> (&'static str, u16, &'static str) {
    CODES.get(usize::from(code)).copied().unwrap_or(CODES[2])
}

/// The name of gRPC status `code` (`OK`, `UNAVAILABLE`…); codes gRPC does not
/// define are `UNKNOWN`.
pub fn code_name(code: u16) -> &'static str {
    entry(code).0
}

/// True when gRPC status `code` is the server's failure: its HTTP equivalent
/// is a 5xx (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS, and codes gRPC does not define).
pub fn is_server_error(code: u16) -> bool {
    entry(code).1 >= 500
}

/// The kind of a crash notification for a call that ended with `code`
/// (`grpc-unavailable`…).
pub(crate) fn event_kind(code: u16) -> &'static str {
    entry(code).2
}

/// gRPC's percent-encoding of grpc-message: everything outside printable
/// ASCII, and `%` itself.
const MESSAGE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// A status sitio gives itself, as the fields that carry it (in a
/// trailers-only head or in trailers): `grpc-status`, `grpc-message`
/// percent-encoded as the spec asks, and `sitio-error` naming the cause.
pub(crate) fn status_fields(
    headers: &mut HeaderMap,
    code: u16,
    message: &str,
    cause: &'static str,
) {
    headers.insert("grpc-status", HeaderValue::from(code));
    let encoded = percent_encoding::utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    if let Ok(message) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", message);
    }
    headers.insert(
        http::HeaderName::from_static("sitio-error"),
        HeaderValue::from_static(cause),
    );
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
            .filter(|code| usize::from(*code) < CODES.len())
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

/// A call's deadline: when it ends, and the `grpc-timeout` it came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: tokio::time::Instant,
    pub(crate) timeout: Duration,
}

impl Deadline {
    /// The deadline the client set on a call whose head arrived now; `None`
    /// without a valid `grpc-timeout`.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Self> {
        timeout_of(headers).map(|timeout| Deadline {
            at: tokio::time::Instant::now() + timeout,
            timeout,
        })
    }

    /// What is left of it now.
    pub(crate) fn remaining(&self) -> Duration {
        self.at
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Hands the service what is left of the call's time (gRPC's deadline
    /// propagation): a `grpc-timeout` sent on unchanged would give the
    /// service the time sitio's hooks already spent a second time. Only
    /// where the field is still there: a decorator may have taken it off.
    pub(crate) fn propagate(&self, headers: &mut HeaderMap) {
        if !headers.contains_key("grpc-timeout") {
            return;
        }
        // Microseconds fit 8 digits up to 99 s; milliseconds up to 27 hours.
        let left = self.remaining();
        let value = match left.as_micros() {
            micros if micros < 100_000_000 => format!("{}u", micros.max(1)),
            _ => format!("{}m", left.as_millis().min(99_999_999)),
        };
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert("grpc-timeout", value);
        }
    }
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
        let message = format!(
            "deadline exceeded: the call's grpc-timeout ({:?}) passed",
            self.timeout
        );
        status_fields(
            &mut trailers,
            DEADLINE_EXCEEDED,
            &message,
            "upstream-timeout",
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

    /// What goes on to the service is what is left, in a form gRPC reads
    /// back (8 digits at most), and only where the field still is.
    #[tokio::test(start_paused = true)]
    async fn the_time_left_goes_on_in_a_valid_grpc_timeout() {
        for (value, spent, left) in [
            (
                "2S",
                Duration::from_millis(300),
                Duration::from_millis(1_700),
            ),
            ("1H", Duration::from_secs(1), Duration::from_secs(3_599)),
            ("100m", Duration::from_millis(150), Duration::from_micros(1)),
        ] {
            let deadline = Deadline::of(&headers("grpc-timeout", value)).unwrap();
            tokio::time::advance(spent).await;
            let mut h = headers("grpc-timeout", value);
            deadline.propagate(&mut h);
            assert_eq!(timeout_of(&h), Some(left), "{value} after {spent:?}: {h:?}");
        }
        let deadline = Deadline::of(&headers("grpc-timeout", "1S")).unwrap();
        let mut taken_off = HeaderMap::new();
        deadline.propagate(&mut taken_off);
        assert!(taken_off.is_empty(), "a field a hook took off stays off");
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
