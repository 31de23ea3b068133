//! A request body that the client connection's loop (`h1::serve`) reads and
//! hands to its exchange. The loop reads only when the exchange asks for
//! more, one read at a time (hyper's "want" signal), so an upload is never
//! buffered beyond one read however slowly the service takes it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::BoxError;

/// The connection's side of one request body.
#[derive(Debug)]
pub(crate) struct Feed(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// Read and not yet taken by the body.
    ready: Option<Bytes>,
    /// Bytes of the body not yet read from the client.
    left: u64,
    /// The body asked for more, and nothing was handed since.
    wanted: bool,
    /// The exchange's task, to wake when data is handed.
    waker: Option<Waker>,
    /// The exchange let go of the body: nothing more is read for it.
    dropped: bool,
}

impl Feed {
    /// A body of `len` bytes still to be read: the connection keeps the
    /// feed, the exchange gets the body.
    pub(crate) fn new(len: u64) -> (Arc<Feed>, ClientBody) {
        let feed = Arc::new(Feed(Mutex::new(State {
            left: len,
            ..State::default()
        })));
        (feed.clone(), ClientBody { feed })
    }

    /// The lock is this connection's alone (the exchange runs in the
    /// connection's task), never contended; a poisoned one is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many bytes the body may take now: `None` while it is not asking
    /// (it has data, was dropped, or is complete).
    pub(crate) fn wants(&self) -> Option<u64> {
        let s = self.state();
        (s.wanted && s.ready.is_none() && !s.dropped && s.left > 0).then_some(s.left)
    }

    /// Hands `data` (at most what [`Feed::wants`] allowed) to the body.
    pub(crate) fn give(&self, data: Bytes) {
        let mut s = self.state();
        s.left = s.left.saturating_sub(data.len() as u64);
        s.ready = Some(data);
        s.wanted = false;
        if let Some(waker) = s.waker.take() {
            waker.wake();
        }
    }

    /// Bytes of the body still on the connection, unread.
    pub(crate) fn left(&self) -> u64 {
        self.state().left
    }

    /// Notes `n` bytes of the body read and dropped by the connection (the
    /// exchange let go of the body, and its rest was already buffered).
    pub(crate) fn skipped(&self, n: u64) {
        let mut s = self.state();
        s.left = s.left.saturating_sub(n);
    }

    /// The exchange let go of the body.
    #[cfg(test)]
    pub(crate) fn is_dropped(&self) -> bool {
        self.state().dropped
    }
}

/// The exchange's side: the body as the driver and decorators read it.
#[derive(Debug)]
pub(crate) struct ClientBody {
    feed: Arc<Feed>,
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = self.feed.state();
        if let Some(data) = s.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if s.left == 0 {
            return Poll::Ready(None);
        }
        s.wanted = true;
        match &mut s.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.feed.state();
        s.ready.is_none() && s.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.feed.state();
        let ready = s.ready.as_ref().map_or(0, |d| d.len() as u64);
        SizeHint::with_exact(s.left + ready)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let mut s = self.feed.state();
        s.dropped = true;
        s.ready = None;
        s.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::Feed;
    use bytes::Bytes;
    use hyper::body::Body as _;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn the_body_takes_what_it_asked_for_and_ends_at_its_length() {
        let (feed, mut body) = Feed::new(5);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(feed.wants(), None, "nothing asked yet");
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(feed.wants(), Some(5));
        feed.give(Bytes::from_static(b"hel"));
        assert_eq!(feed.wants(), None, "one read at a time");
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("data")
        };
        assert_eq!(frame.into_data().unwrap(), "hel");
        assert!(!body.is_end_stream());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        feed.give(Bytes::from_static(b"lo"));
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        assert!(body.is_end_stream());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(!feed.is_dropped());
        drop(body);
        assert!(feed.is_dropped());
        assert_eq!(feed.left(), 0);
    }
}
