//! Flow control between a response body and its client's socket: at most
//! [`WINDOW`] bytes of body are handed to the client connection beyond what
//! the socket has taken. Without it, hyper queues up to its buffer limit
//! (64 KiB) plus whatever the chunks it holds pin, and 1,000 clients that do
//! not read held 227 MiB (docs/reliability.md).
//!
//! With it, an exchange whose client does not read holds at most the window,
//! one chunk hyper has queued past it, one chunk on its way from the service
//! and the service connection's read buffer (16 KiB each, see
//! `upstream::UPSTREAM_BUFFER`): about 64 KiB in all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Body bytes handed on beyond what the client's socket took.
pub(crate) const WINDOW: u64 = 16 * 1024;

/// The bytes one client connection's socket has taken, and the body waiting
/// for room. Per connection, so never contended.
#[derive(Debug, Default)]
pub(crate) struct SendWindow {
    written: AtomicU64,
    waiting: AtomicBool,
    waker: AtomicWaker,
}

impl SendWindow {
    /// The socket took `n` more bytes.
    pub(crate) fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Bytes the socket has taken so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Ready when `handed` bytes (counted from `since`, a [`written`] reading
    /// taken before the first of them) leave room for more.
    ///
    /// [`written`]: SendWindow::written
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>, since: u64, handed: u64) -> Poll<()> {
        let has_room = |w: &Self| handed <= w.written().saturating_sub(since) + WINDOW;
        if has_room(self) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        self.waiting.store(true, Ordering::Release);
        // A write between the check and the registration must not be missed.
        if has_room(self) {
            self.waiting.store(false, Ordering::Relaxed);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_body_waits_for_the_socket_and_is_woken_by_its_writes() {
        let w = SendWindow::default();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = flag.clone().into();
        let mut cx = Context::from_waker(&waker);
        let since = w.written();
        assert!(w.poll_room(&mut cx, since, WINDOW).is_ready());
        assert!(w.poll_room(&mut cx, since, WINDOW + 1).is_pending());
        w.wrote(1);
        assert!(flag.0.load(Ordering::SeqCst), "woken by the write");
        assert!(w.poll_room(&mut cx, since, WINDOW + 1).is_ready());
    }
}
