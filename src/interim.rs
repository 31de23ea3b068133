//! Interim (1xx) responses from the service: `103 Early Hints` are relayed
//! to HTTP/1.1 clients (RFC 8297), and a service that sends more interim
//! responses than [`MAX_INTERIM`] before its final one gets a 502 instead of
//! holding the exchange forever.
//!
//! hyper's server has no way to send a 1xx, so the relay writes the bytes
//! itself, on the client connection's IO, at a moment when nothing of hyper's
//! can be interleaved: in `poll_flush`, which hyper calls only once its own
//! write buffer is empty, while the exchange still waits for its final
//! response. Bytes a full socket left half-written go out before the next
//! write of hyper's, which can only be this exchange's final head.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use http::{HeaderMap, StatusCode};
use tokio::io::AsyncWrite;

/// Interim responses one exchange may receive before it fails with 502.
pub(crate) const MAX_INTERIM: u32 = 10;

/// The interim-response relay of one client connection (exchanges on one
/// connection are sequential, so one relay serves them all in turn).
///
/// Every exchange calls [`InterimRelay::begin`] and [`InterimRelay::end`]:
/// atomics only, no lock; the lock guards the bytes of an actual 103.
#[derive(Debug, Default)]
pub(crate) struct InterimRelay {
    /// An exchange is waiting for its final response.
    open: AtomicBool,
    /// Relay 103s (HTTP/1.1 clients only: RFC 9110 §15.2 forbids 1xx to 1.0).
    relay: AtomicBool,
    /// Interim responses the waiting exchange has received.
    received: AtomicU32,
    /// The waiting exchange, registered by [`InterimRelay::overflowed`]. It
    /// runs in the client connection's task, so waking it also has hyper
    /// flush the connection, which writes a queued 103: one waker serves both.
    waiter: AtomicWaker,
    /// Bytes wait in `state.bytes`.
    pending: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    bytes: Vec<u8>,
    written: usize,
}

impl InterimRelay {
    /// An exchange starts waiting for the service's response.
    pub(crate) fn begin(&self, relay_early_hints: bool) {
        self.relay.store(relay_early_hints, Ordering::Relaxed);
        self.received.store(0, Ordering::Relaxed);
        self.open.store(true, Ordering::Release);
    }

    /// The final response (or an error) arrived: later interim responses
    /// are ignored; bytes already queued still go out first.
    pub(crate) fn end(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// Resolves once the service has sent the waiting exchange more than
    /// [`MAX_INTERIM`] interim responses. (A count, not a stored signal: an
    /// overflow cannot leak into the connection's next exchange.)
    pub(crate) async fn overflowed(&self) {
        std::future::poll_fn(|cx| {
            if self.received.load(Ordering::Acquire) > MAX_INTERIM {
                return Poll::Ready(());
            }
            self.waiter.register(cx.waker());
            if self.received.load(Ordering::Acquire) > MAX_INTERIM {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Called by the service connection for every interim response.
    pub(crate) fn received(&self, status: StatusCode, headers: &HeaderMap) {
        if !self.open.load(Ordering::Acquire) {
            return;
        }
        if self.received.fetch_add(1, Ordering::AcqRel) + 1 > MAX_INTERIM {
            self.waiter.wake();
            return;
        }
        if status != StatusCode::EARLY_HINTS || !self.relay.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        write_head(&mut s.bytes, status, headers);
        self.pending.store(true, Ordering::Release);
        drop(s);
        self.waiter.wake();
    }

    /// Writes queued bytes: from the IO's `poll_flush` while an exchange
    /// waits, and before any write of hyper's.
    pub(crate) fn poll_write_pending<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pending.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let Ok(mut s) = self.state.lock() else {
            return Poll::Ready(Ok(()));
        };
        while s.written < s.bytes.len() {
            let n = match Pin::new(&mut *stream).poll_write(cx, &s.bytes[s.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            s.written += n;
        }
        s.bytes = Vec::new();
        s.written = 0;
        self.pending.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }
}

/// Serialises an interim head as sent to the client: the status line and the
/// end-to-end fields (a 1xx carries no content; hop-by-hop fields stop here).
fn write_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    let mut clean = headers.clone();
    crate::headers::strip_hop_by_hop(&mut clean);
    clean.remove(http::header::CONTENT_LENGTH);
    crate::headers::write_head(out, status, &clean);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn early_hints_are_relayed_with_end_to_end_fields_only() {
        let relay = InterimRelay::default();
        let mut h = HeaderMap::new();
        h.append("link", "</style.css>; rel=preload".parse().unwrap());
        h.append("connection", "x-hop".parse().unwrap());
        h.append("x-hop", "1".parse().unwrap());
        relay.received(StatusCode::EARLY_HINTS, &h);
        assert!(!relay.pending.load(Ordering::Relaxed), "no exchange waits");
        relay.begin(true);
        relay.received(StatusCode::CONTINUE, &HeaderMap::new());
        relay.received(StatusCode::EARLY_HINTS, &h);
        let s = relay.state.lock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&s.bytes),
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        );
    }

    #[test]
    fn an_overflow_fails_its_own_exchange_and_not_the_next() {
        let relay = InterimRelay::default();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut overflowed = |relay: &InterimRelay| {
            let fut = std::pin::pin!(relay.overflowed());
            fut.poll(&mut cx).is_ready()
        };
        relay.begin(true);
        for _ in 0..MAX_INTERIM {
            relay.received(StatusCode::CONTINUE, &HeaderMap::new());
        }
        assert!(!overflowed(&relay), "up to the cap is fine");
        relay.received(StatusCode::CONTINUE, &HeaderMap::new());
        assert!(overflowed(&relay));
        relay.end();
        relay.begin(true);
        assert!(!overflowed(&relay), "the next exchange starts afresh");
    }

    #[test]
    fn http_1_0_clients_get_no_interim_responses() {
        let relay = InterimRelay::default();
        relay.begin(false);
        relay.received(StatusCode::EARLY_HINTS, &HeaderMap::new());
        assert!(!relay.pending.load(Ordering::Relaxed));
    }
}
