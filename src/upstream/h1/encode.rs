//! Writing the request to the service: the head as one buffer of bytes and
//! the body with the framing its headers promise (a length, or chunks).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Method, header, request};
use hyper::body::Body as _;
use tokio::io::AsyncWrite;

use crate::chunked::SizeLine;
use crate::error::BoxError;
use crate::upstream::RequestBody;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    /// No body.
    Empty,
    /// Exactly this many bytes to go.
    Length(u64),
    Chunked,
}

/// A request ready to go: its head as bytes, its body still to stream.
pub(crate) struct Message {
    pub(super) head: Bytes,
    pub(super) head_request: bool,
    /// A method without side effects and no body: safe to send again.
    pub(crate) resendable: bool,
    pub(super) body: Option<RequestBody>,
    pub(super) out: Out,
    /// The request's field map, done with once encoded: the response head
    /// is read into it (no map allocated or freed per exchange).
    pub(super) spare: Option<HeaderMap>,
    /// Keep the final response head's fields as the client's lines, not in
    /// a map (see `lines`): nothing on the way reads them.
    pub(crate) as_lines: bool,
}

impl Message {
    /// Encodes `head` (already edited for the service: origin-form target,
    /// hop-by-hop fields gone) with the framing `body` needs.
    pub(crate) fn new(mut head: request::Parts, body: RequestBody) -> Self {
        let out = framing(&mut head.headers, &body);
        let bytes = encode_head(&head);
        Self::of(bytes, head, body, out)
    }

    /// A request whose head is already bytes (`splice`), edited for the
    /// service as [`Message::new`] edits a map; `head` is the map it was
    /// read into, unedited, for its length.
    pub(crate) fn spliced(wire: Bytes, head: request::Parts, body: RequestBody) -> Self {
        // A splice is made only for a body of known length or a chunked
        // one (`h1::serve`): its head says which. Anything else would be
        // sent as no body, never with a framing the head does not declare.
        let chunked = head.headers.contains_key(header::TRANSFER_ENCODING);
        let out = if chunked {
            // Chunks, as declared, even if none come: then the last one.
            Out::Chunked
        } else if body.is_end_stream() {
            Out::Empty
        } else {
            match crate::headers::content_length(&head.headers) {
                Ok(Some(n)) => Out::Length(n),
                _ => {
                    debug_assert!(false, "a spliced head without a length");
                    Out::Empty
                }
            }
        };
        Self::of(wire, head, body, out)
    }

    fn of(bytes: Bytes, head: request::Parts, body: RequestBody, out: Out) -> Self {
        let resendable = out == Out::Empty
            && matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS);
        Message {
            head: bytes,
            head_request: head.method == Method::HEAD,
            resendable,
            body: (out != Out::Empty).then_some(body),
            out,
            spare: Some(head.headers),
            as_lines: false,
        }
    }
}

/// The framing of the body, made explicit in `headers`: a `Content-Length`
/// already there is kept (hyper's rule: the sender's length wins), a known
/// size becomes one, anything else is chunked.
fn framing(headers: &mut HeaderMap, body: &RequestBody) -> Out {
    if body.is_end_stream() {
        headers.remove(header::TRANSFER_ENCODING);
        return Out::Empty;
    }
    if let Ok(Some(n)) = crate::headers::content_length(headers) {
        headers.remove(header::TRANSFER_ENCODING);
        return Out::Length(n);
    }
    headers.remove(header::CONTENT_LENGTH);
    if let Some(n) = body.size_hint().exact() {
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return Out::Length(n);
    }
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Out::Chunked
}

/// `METHOD target HTTP/1.1`, the fields, the empty line, in a buffer of
/// exactly that length (so that it becomes `Bytes` without an allocation of
/// its own). The target is in origin form (`headers::to_upstream` made it
/// so); CONNECT's authority form and `*` are written as they are.
fn encode_head(head: &request::Parts) -> Bytes {
    let uri;
    let target = match head.uri.path_and_query() {
        Some(pq) if head.uri.authority().is_none() || head.method != Method::CONNECT => pq.as_str(),
        _ => {
            uri = head.uri.to_string();
            uri.as_str()
        }
    };
    let fields = crate::headers::fields_len(&head.headers);
    let len = head.method.as_str().len() + 1 + target.len() + 11 + fields + 2;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    crate::headers::write_fields(&mut out, &head.headers);
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(out.len(), len);
    Bytes::from(out)
}

/// Why the request could not be written.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The client's body failed (a bad chunk, a reset): the client's doing.
    Body(BoxError),
    /// The body did not match its `Content-Length`.
    Length,
    /// The service's socket failed.
    Io(io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Body(e) => write!(f, "request body: {e}"),
            WriteError::Length => f.write_str("request body does not match its Content-Length"),
            WriteError::Io(e) => write!(f, "writing the request: {e}"),
        }
    }
}

/// Buffers queued before they are written (a chunk is three).
const MAX_QUEUED: usize = 8;

/// One buffer of the queue: the request's bytes, or a chunk's size line
/// (inline: a `Bytes` of its own was an allocation per chunk).
enum Piece {
    Bytes(Bytes),
    Size(SizeLine),
}

impl Piece {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) => b,
            Piece::Size(line) => line.as_bytes(),
        }
    }

    /// `n` more of its bytes were written (fewer than are left).
    fn advance(&mut self, n: usize) {
        match self {
            Piece::Bytes(b) => b.advance(n),
            Piece::Size(line) => line.advance(n),
        }
    }
}

/// The request on its way out: queued bytes first, then the body's frames
/// as the client sends them.
pub(crate) struct Writer {
    /// The head (kept out of `queue`, which then allocates only for
    /// requests with a body), whole: a request that failed before any
    /// response byte may go again on a fresh connection ([`Writer::into_head`]).
    first: Bytes,
    /// How much of `first` is written.
    first_at: usize,
    queue: VecDeque<Piece>,
    /// `None` once the body's end (and its terminator) is queued.
    body: Option<RequestBody>,
    out: Out,
}

impl Writer {
    pub(crate) fn new(head: Bytes, body: Option<RequestBody>, out: Out) -> Self {
        Writer {
            first: head,
            first_at: 0,
            queue: VecDeque::new(),
            body,
            out,
        }
    }

    /// Whether the whole request was written.
    pub(crate) fn is_finished(&self) -> bool {
        self.body.is_none() && self.first_at == self.first.len() && self.queue.is_empty()
    }

    /// The request's head, whole, however much of it was written.
    pub(crate) fn into_head(self) -> Bytes {
        self.first
    }

    /// Writes what it can; `Ready(Ok)` once the whole request is out.
    /// Frames the body has ready go out with what is queued (the head, for
    /// a small body) in one `writev(2)`.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            let mut waiting = false;
            while self.queue.len() < MAX_QUEUED {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                    Poll::Ready(None) => self.end()?,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(WriteError::Body(e))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.data(data)?,
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.trailers(&trailers)?;
                            }
                        }
                    },
                }
            }
            ready!(self.poll_flush(io, cx)).map_err(WriteError::Io)?;
            if self.body.is_none() {
                return Poll::Ready(Ok(()));
            }
            if waiting {
                return Poll::Pending;
            }
        }
    }

    fn data(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.out {
            Out::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(WriteError::Length);
                }
                *left -= n;
                self.queue.push_back(Piece::Bytes(data));
            }
            Out::Chunked => {
                let size = SizeLine::new(data.len());
                self.queue.push_back(Piece::Size(size));
                self.queue.push_back(Piece::Bytes(data));
                self.queue
                    .push_back(Piece::Bytes(Bytes::from_static(b"\r\n")));
            }
            Out::Empty => return Err(WriteError::Length),
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), WriteError> {
        self.body = None;
        match self.out {
            Out::Length(0) | Out::Empty => Ok(()),
            Out::Length(_) => Err(WriteError::Length),
            Out::Chunked => {
                let last = Bytes::from_static(b"0\r\n\r\n");
                self.queue.push_back(Piece::Bytes(last));
                Ok(())
            }
        }
    }

    /// Trailers end a chunked body; other framings have no place for them.
    fn trailers(&mut self, trailers: &HeaderMap) -> Result<(), WriteError> {
        if self.out != Out::Chunked {
            return self.end();
        }
        let mut last = b"0\r\n".to_vec();
        crate::headers::write_fields(&mut last, trailers);
        last.extend_from_slice(b"\r\n");
        self.queue.push_back(Piece::Bytes(Bytes::from(last)));
        self.body = None;
        Ok(())
    }

    /// Writes the head and the queue out, several buffers per `writev(2)`
    /// when there are.
    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.first_at < self.first.len() || !self.queue.is_empty() {
            let first = &self.first[self.first_at..];
            let n = if self.queue.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, first))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_QUEUED + 3];
                let bufs = std::iter::once(first)
                    .filter(|b| !b.is_empty())
                    .chain(self.queue.iter().map(Piece::as_bytes));
                let mut count = 0;
                for (slice, buf) in slices.iter_mut().zip(bufs) {
                    *slice = IoSlice::new(buf);
                    count += 1;
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        let first = n.min(self.first.len() - self.first_at);
        self.first_at += first;
        n -= first;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            let len = front.as_bytes().len();
            if n < len {
                front.advance(n);
                return;
            }
            n -= len;
            self.queue.pop_front();
        }
    }
}
