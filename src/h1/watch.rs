//! The client while its exchange runs, as hyper's dispatcher treats it: the
//! request body is read as the exchange asks for it, one read at a time;
//! once no body is left to read, the client's leaving (end of stream) ends
//! the exchange, and bytes it sends early (a pipelined request) are kept for
//! later, after which it is not read until the exchange is over.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::send::Watch;
use crate::client_body::{Feed, Took};
use crate::error::io_inner;
use crate::io::ConnPhase;
use crate::io::Stalled;

/// What a connection's read buffer starts with, and grows by.
const READ_BUF: usize = 8 * 1024;
/// Room below which the read buffer is grown (or reclaimed, once the bytes
/// read into it are dropped) before a read.
const READ_MIN: usize = 2 * 1024;

/// Reads what the client sent into `buf` (0: the client closed, or
/// `ClientIo` ended the wait to park).
pub(super) async fn fill<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, cx, buf)).await
}

fn poll_fill<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_MIN {
        // Reclaims the buffer in place once what shared it is gone.
        buf.reserve(READ_BUF);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Reads what the client sent into `buf`; `Err` once it left (`None`) or
/// its connection failed, noted in `gone` (reported once).
fn poll_read<S: AsyncRead + Unpin>(
    buf: &mut BytesMut,
    gone: &mut bool,
    io: &mut S,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Option<io::Error>>> {
    let left = match ready!(poll_fill(io, cx, buf)) {
        Ok(0) => None,
        Ok(_) => return Poll::Ready(Ok(())),
        Err(e) => Some(e),
    };
    *gone = true;
    Poll::Ready(Err(left))
}

/// One exchange's client.
pub(super) struct Client<'b> {
    buf: &'b mut BytesMut,
    /// The request body still to be read, if any.
    body: Option<Arc<Feed>>,
    /// `100 Continue` is owed before the body is first read (the request
    /// asked for it), unless the response has begun by then (hyper's rule).
    continue_owed: Option<&'b ConnPhase>,
    /// The client left or failed (reported once).
    gone: bool,
}

impl<'b> Client<'b> {
    /// The client of an exchange whose body (if any) `body` feeds; with
    /// `continue_on`, the body waits for `100 Continue`, sent on that
    /// connection's interim relay when the exchange first asks for it.
    pub(super) fn new(
        buf: &'b mut BytesMut,
        body: Option<Arc<Feed>>,
        continue_on: Option<&'b ConnPhase>,
    ) -> Self {
        Client {
            buf,
            body,
            continue_owed: continue_on,
            gone: false,
        }
    }

    /// The response begins: `100 Continue` is no longer sent.
    pub(super) fn responding(&mut self) {
        self.continue_owed = None;
    }

    /// Once the response is out: whether the request body was read to its
    /// end. When the exchange let go of it early, what of it was already
    /// read is dropped; if more is still to come, the connection must close
    /// (hyper does the same).
    pub(super) fn body_done(&mut self, phase: &ConnPhase) -> bool {
        let Some(feed) = self.body.take() else {
            return true;
        };
        if !feed.unfinished() {
            return true;
        }
        if !feed.skip(self.buf) {
            return false;
        }
        phase.body_read();
        true
    }

    /// Reads for the body when it asks: `Some` when the watch is over for
    /// now (pending, or the client left), `None` when there is no body to
    /// read any more.
    fn poll_body<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Option<io::Error>>> {
        let feed = self.body.as_ref()?;
        if !feed.wants() {
            // Not asking: no read (back-pressure). Let go of unread: hyper
            // stops reading too (the connection closes after the response).
            // A body that is not valid: what follows is not read either.
            return feed.unfinished().then_some(Poll::Pending);
        }
        if let Some(phase) = self.continue_owed.take() {
            phase.interim.continue_now();
            // Written now if the socket takes it, else before the response.
            if let Poll::Ready(Err(e)) = Pin::new(&mut *io).poll_flush(cx) {
                self.gone = true;
                return Some(Poll::Ready(Some(e)));
            }
        }
        // Wakes this task when it hands the body something: the exchange
        // takes it when polled again.
        while feed.take_from(self.buf) == Took::More {
            match poll_fill(io, cx, self.buf) {
                Poll::Ready(Ok(0)) => {
                    self.gone = true;
                    return Some(Poll::Ready(None));
                }
                Poll::Ready(Ok(_)) => {}
                // A body that stalled: the client is still there and gets
                // the exchange's answer (400), as from hyper's side; the
                // connection closes after it (the body is unfinished).
                Poll::Ready(Err(e)) if io_inner::<Stalled>(&e).is_some() => {
                    feed.fail(e);
                    return Some(Poll::Pending);
                }
                Poll::Ready(Err(e)) => {
                    self.gone = true;
                    return Some(Poll::Ready(Some(e)));
                }
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        Some(Poll::Pending)
    }
}

impl Watch for Client<'_> {
    fn poll_gone<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Error>> {
        if self.gone {
            return Poll::Pending;
        }
        if let Some(polled) = self.poll_body(io, cx) {
            return polled;
        }
        if !self.buf.is_empty() {
            return Poll::Pending;
        }
        match ready!(poll_read(self.buf, &mut self.gone, io, cx)) {
            Ok(()) => Poll::Pending,
            Err(gone) => Poll::Ready(gone),
        }
    }
}
