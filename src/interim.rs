//! Interim (1xx) responses from the service: `103 Early Hints` are relayed
//! to HTTP/1.1 clients (RFC 8297). A service that sends more interim
//! responses than [`MAX_INTERIM`] before its final one gets a 502 instead of
//! holding the exchange forever; the service connection, which reads every
//! interim response, enforces it (`upstream::h1`).
//!
//! hyper's server has no way to send a 1xx, so the relay writes the bytes
//! itself, on the client connection's IO, at a moment when nothing of hyper's
//! can be interleaved: in `poll_flush`, which hyper calls only once its own
//! write buffer is empty, while the exchange still waits for its final
//! response. The service connection reads a 103 while hyper polls the
//! exchange, and hyper flushes right after that poll, so a queued 103 goes
//! out at once with no wake-up of its own. Bytes a full socket left
//! half-written go out before the next write of hyper's, which can only be
//! this exchange's final head.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{HeaderMap, StatusCode};
use tokio::io::AsyncWrite;

/// Interim responses one exchange may receive before it fails with 502.
pub(crate) const MAX_INTERIM: u32 = 10;

/// The interim-response relay of one client connection (exchanges on one
/// connection are sequential, so one relay serves them all in turn). Only
/// exchanges of HTTP/1.1 clients are given it (RFC 9110 §15.2 forbids 1xx
/// to 1.0); the lock guards the bytes of an actual 103.
#[derive(Debug, Default)]
pub(crate) struct InterimRelay {
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
    /// Called by the service connection for every interim response it
    /// reads while the exchange waits for its final one.
    pub(crate) fn received(&self, status: StatusCode, headers: &HeaderMap) {
        if status != StatusCode::EARLY_HINTS {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        write_head(&mut s.bytes, status, headers);
        self.pending.store(true, Ordering::Release);
    }

    /// Queues `100 Continue` (RFC 9110 §10.1.1): the exchange is about to
    /// read the body of a request that asked for it.
    pub(crate) fn continue_now(&self) {
        let Ok(mut s) = self.state.lock() else { return };
        s.bytes.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.pending.store(true, Ordering::Release);
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

    #[test]
    fn early_hints_are_relayed_with_end_to_end_fields_only() {
        let relay = InterimRelay::default();
        let mut h = HeaderMap::new();
        h.append("link", "</style.css>; rel=preload".parse().unwrap());
        h.append("connection", "x-hop".parse().unwrap());
        h.append("x-hop", "1".parse().unwrap());
        relay.received(StatusCode::CONTINUE, &HeaderMap::new());
        assert!(
            !relay.pending.load(Ordering::Relaxed),
            "only 103s are relayed"
        );
        relay.received(StatusCode::EARLY_HINTS, &h);
        let s = relay.state.lock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&s.bytes),
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        );
    }
}
