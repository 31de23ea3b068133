//! The service's response body, read straight from its connection, which it
//! owns until the last byte (then the pool may have it back).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::net::TcpStream;

use super::decode::{BodyDecoder, Framing};
use super::encode::Writer;
use super::{Conn, Lines};

/// A response body on an HTTP/1 service connection.
pub(crate) struct ResponseBody {
    /// `None` once handed back to the pool or taken by an upgrade.
    conn: Option<Conn>,
    decoder: BodyDecoder,
    /// The rest of a request body the service answered before reading
    /// (rare: boxed, so that every response body does not carry its size).
    writer: Option<Box<Writer>>,
    /// The connection may carry another exchange once both directions end
    /// (false from the start when the service answered before the request
    /// body was written to its end).
    keep: bool,
    /// A failure found, reported at the next poll (see [`ResponseBody::fail`]).
    failed: Option<io::Error>,
    /// The head's fields, when kept as the client's lines (its map is
    /// empty). Boxed: inline, it made every response 48 bytes larger, and
    /// responses move several times on their way to the client.
    lines: Option<Box<Lines>>,
}

impl ResponseBody {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        writer: Option<Box<Writer>>,
        keep: bool,
        lines: Option<Lines>,
    ) -> Self {
        // Never reused: see `take_reusable`.
        let answered_early = writer.is_some();
        if answered_early {
            tracing::debug!(
                "answered before its request body ended; service connection not reused"
            );
        }
        ResponseBody {
            conn: Some(conn),
            decoder: BodyDecoder::new(framing),
            writer,
            keep: keep && !answered_early,
            failed: None,
            lines: lines.map(Box::new),
        }
    }

    /// The head's fields, if they were kept as the client's lines (once).
    pub(crate) fn take_lines(&mut self) -> Option<Box<Lines>> {
        self.lines.take()
    }

    /// The connection, if it may serve another exchange: the response read
    /// to its end, the request written to its end before the response came,
    /// keep-alive on both sides, and no byte from the service beyond this
    /// response. A service may answer before it has read the request body
    /// (many do); pooled then, the connection would make the next request
    /// wait behind a body that may never come, or (when the rest came after
    /// the answer) go to a service that had given up on the body and was
    /// closing it: hyper's server closes when the body is not already there
    /// once it answered (found by the `server_side` fuzz target: a 502 for
    /// the next request on that connection).
    pub(crate) fn take_reusable(&mut self) -> Option<Conn> {
        let reusable = self.decoder.is_done()
            && self.keep
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if reusable { self.conn.take() } else { None }
    }

    /// For the body of a `101 Switching Protocols` (the caller checks the
    /// status): the service's socket and the bytes it sent after the head,
    /// which belong to the new protocol. The body is empty from then on.
    pub(crate) fn take_upgraded(&mut self) -> Option<(TcpStream, Bytes)> {
        self.decoder = BodyDecoder::new(Framing::Empty);
        self.writer = None;
        let conn = self.conn.take()?;
        Some((conn.io, conn.buf.freeze()))
    }

    /// The body cannot go on (the service closed early, or broke the
    /// framing). The error is held for one turn: hyper's server drops what
    /// it buffered for the client when a body fails, so the bytes read
    /// before the failure go out first (it flushes when the body is
    /// pending) and the client sees a cut-short response, not none.
    fn fail(
        &mut self,
        e: io::Error,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.keep = false;
        self.conn = None;
        self.writer = None;
        self.failed = Some(e);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Moves a request body the service answered early further along; a
    /// failure there only costs the connection's reuse.
    fn push_request(&mut self, cx: &mut Context<'_>) {
        let (Some(writer), Some(conn)) = (self.writer.as_mut(), self.conn.as_mut()) else {
            return;
        };
        match writer.poll_write(&mut conn.io, cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => self.writer = None,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "request body not sent to its end");
                self.writer = None;
                self.keep = false;
            }
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            this.decoder = BodyDecoder::new(Framing::Empty);
            return Poll::Ready(Some(Err(e)));
        }
        this.push_request(cx);
        loop {
            if this.decoder.is_done() {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.next(&mut conn.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.decoder.is_done() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return this.fail(io::Error::new(io::ErrorKind::InvalidData, e), cx),
            }
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) => match this.decoder.at_eof() {
                    Ok(()) => {
                        this.keep = false;
                        return Poll::Ready(None);
                    }
                    Err(cut) => return this.fail(cut, cx),
                },
                Ok(_) => {}
                Err(e) => return this.fail(e, cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }
}
