//! sitio's own HTTP/1 client for the service connection, driven inline in
//! the exchange's task.
//!
//! hyper's client connection runs in a task of its own and talks to the
//! exchange through a channel; in callgrind it was 37% of sitio's user-space
//! instructions per proxied request. Here the exchange writes the request
//! head it encoded (one buffer), parses the response head with `httparse`
//! into one buffer shared by the header values, and its response body reads
//! the socket directly: no task, no channel, no copy of the head. A pooled
//! connection is the socket and its (usually empty) read buffer; whether the
//! service closed it meanwhile is a non-blocking read at checkout, not a task
//! watching it.

mod body;
mod decode;
mod encode;
pub(crate) mod hops;
mod lines;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod replay;
#[cfg(test)]
mod tests;

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::Response;
use tokio::net::TcpStream;

pub(crate) use body::ResponseBody;
pub(crate) use encode::Message;
pub(crate) use lines::Lines;

use crate::error::{ErrorKind, ProxyError};
use crate::interim::{InterimRelay, MAX_INTERIM};
use decode::{ForClient, Head};
use encode::{WriteError, Writer};

/// One HTTP/1 connection to the service.
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used; empty between exchanges.
    buf: BytesMut,
}

/// The most read from the service at once: the largest response head, and
/// the largest body chunk an exchange holds for a client that does not read.
const READ_SIZE: usize = crate::upstream::UPSTREAM_BUFFER;

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Its read buffer, for tests that look at what an idle one keeps.
    #[cfg(test)]
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Frees the read buffer of an idle connection (nothing in it).
    pub(crate) fn release_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Whether an idle connection can carry a request: the service has not
    /// closed it and sent nothing unasked. One `recv(2)` at most, none when
    /// the reactor saw no event on the socket since the last read.
    pub(crate) fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more of the service's bytes into the buffer; `Ready(Ok(0))` at
    /// the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// How sending failed.
pub(crate) struct Failed {
    pub(crate) error: ProxyError,
    /// Nothing of the response arrived before the connection closed or
    /// reset: a pooled connection the service had dropped.
    pub(crate) closed_before_response: bool,
}

impl Failed {
    fn new(kind: ErrorKind, message: impl std::fmt::Display) -> Self {
        Failed {
            error: ProxyError::new(kind, format!("upstream: {message}")),
            closed_before_response: false,
        }
    }
}

/// Sends `msg` over `conn` and reads the response head (made for the
/// client: hop-by-hop fields out, a canonical length), relaying interim
/// responses to `interim` (and failing past [`MAX_INTERIM`] of them). The
/// request body streams while the head is awaited (a service may answer
/// before it has read it all) and after, as the response body is read.
/// `keep`: the connection may be pooled after this exchange. When sending
/// fails before a response head, `msg` keeps its head (it may go again).
pub(crate) async fn send(
    mut conn: Conn,
    msg: &mut Message,
    interim: Option<&InterimRelay>,
    keep: bool,
) -> Result<Response<ResponseBody>, Failed> {
    // Moved, not cloned (a clone of the head's `Bytes` allocates its shared
    // count); the writer gives it back if the request must go again.
    let mut writer = Writer::new(std::mem::take(&mut msg.head), msg.body.take(), msg.out);
    let mut write_failed = None;
    let mut interims = 0u32;
    let head = std::future::poll_fn(|cx| {
        loop {
            if write_failed.is_none() && !writer.is_finished() {
                match writer.poll_write(&mut conn.io, cx) {
                    Poll::Ready(Err(WriteError::Io(e))) => write_failed = Some(e),
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(Failed::new(ErrorKind::UpstreamClosed, e)));
                    }
                    _ => {}
                }
            }
            let for_client = ForClient {
                spare: &mut msg.spare,
                as_lines: msg.as_lines,
            };
            let head = match read_head(&mut conn, cx, msg.head_request, for_client) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(mut failed)) => {
                    if let Some(e) = write_failed.take() {
                        failed.error = ProxyError::new(
                            ErrorKind::UpstreamClosed,
                            format!("upstream: writing the request: {e}"),
                        );
                    }
                    return Poll::Ready(Err(failed));
                }
                Poll::Ready(Ok(head)) => head,
            };
            if !head.is_interim() {
                return Poll::Ready(Ok(head));
            }
            let status = head.parts.status;
            // The one bound on interim responses, for every leg.
            interims += 1;
            if interims > MAX_INTERIM {
                return Poll::Ready(Err(Failed::new(
                    ErrorKind::UpstreamProtocol,
                    format!("more than {MAX_INTERIM} interim (1xx) responses"),
                )));
            }
            if let Some(relay) = interim {
                relay.received(status, &head.parts.headers);
            }
        }
    })
    .await;
    let mut head = match head {
        Ok(head) => head,
        Err(failed) => {
            msg.head = writer.into_head();
            return Err(failed);
        }
    };
    head.make_for_client();
    let Head {
        parts,
        framing,
        keep_alive,
        lines,
        ..
    } = head;
    let writer = (write_failed.is_none() && !writer.is_finished()).then(|| Box::new(writer));
    let keep = keep && keep_alive && write_failed.is_none();
    let body = ResponseBody::new(conn, framing, writer, keep, lines);
    Ok(Response::from_parts(parts, body))
}

/// Reads until a whole response head is in.
fn read_head(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    head_request: bool,
    for_client: ForClient<'_>,
) -> Poll<Result<Head, Failed>> {
    let ForClient { spare, as_lines } = for_client;
    loop {
        if !conn.buf.is_empty() {
            let for_client = ForClient { spare, as_lines };
            match decode::parse_head(&mut conn.buf, head_request, READ_SIZE, Some(for_client)) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(Failed::new(ErrorKind::UpstreamProtocol, e))),
            }
        }
        let nothing_yet = conn.buf.is_empty();
        match std::task::ready!(conn.poll_fill(cx)) {
            Ok(0) => {
                return Poll::Ready(Err(Failed {
                    error: ProxyError::new(
                        ErrorKind::UpstreamClosed,
                        if nothing_yet {
                            "upstream: connection closed before a response"
                        } else {
                            "upstream: connection closed in the middle of the response head"
                        },
                    ),
                    closed_before_response: nothing_yet,
                }));
            }
            Ok(_) => {}
            Err(e) => {
                let reset = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionAborted
                );
                return Poll::Ready(Err(Failed {
                    closed_before_response: reset && nothing_yet,
                    ..Failed::new(ErrorKind::UpstreamClosed, e)
                }));
            }
        }
    }
}

/// `input`'s response head read for the client as [`send`] hands it over
/// (`as_lines`: its fields kept as lines where they can be): the head, the
/// body as the client's encoder sees it (`None`: known to be empty;
/// `Some(None)`: of unknown length), and the lines. `None` when the head
/// is refused or incomplete.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn head_for_client(
    input: &[u8],
    head_request: bool,
    as_lines: bool,
) -> Option<(http::response::Parts, Option<Option<u64>>, Option<Lines>)> {
    let mut buf = BytesMut::from(input);
    let mut spare = None;
    let for_client = ForClient {
        spare: &mut spare,
        as_lines,
    };
    let mut head = decode::parse_head(&mut buf, head_request, READ_SIZE, Some(for_client))
        .ok()
        .flatten()?;
    head.make_for_client();
    let body = match head.framing {
        decode::Framing::Empty => None,
        decode::Framing::Length(n) => Some(Some(n)),
        decode::Framing::Chunked | decode::Framing::Close => Some(None),
    };
    Some((head.parts, body, head.lines))
}
