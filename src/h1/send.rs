//! One response on the client connection, as hyper's server dispatcher
//! sends it: the head encoded (`response`), the body framed frame by frame,
//! the head and what of the body is ready written together, the client
//! watched while the body waits (its leaving ends the exchange).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};

use super::response::{Asked, BodyLength, Unsendable, encode_head, encode_lines, trailer_names};
use crate::body::BoxError;
use crate::upstream::Lines;

/// Body data up to this size is copied behind what is queued (one write
/// for head and body); larger data is written from where it is.
const COPY_MAX: usize = 4096;
/// Queued bytes are written once this many wait, body ready or not.
const QUEUE_MAX: usize = 64 * 1024;

/// Watches the client while the response waits for its body.
pub(crate) trait Watch {
    /// Ready when the client left (`None`) or its connection failed.
    fn poll_gone<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Error>>;
}

/// A client that is not watched (tests).
#[cfg(test)]
pub(crate) struct Unwatched;

#[cfg(test)]
impl Watch for Unwatched {
    fn poll_gone<S: AsyncRead + Unpin>(
        &mut self,
        _: &mut S,
        _: &mut Context<'_>,
    ) -> Poll<Option<io::Error>> {
        Poll::Pending
    }
}

/// Why a response did not go out whole: the connection closes.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Writing to (or reading from) the client failed.
    Io(io::Error),
    /// The client closed its side while the response waited.
    ClientGone,
    /// The head cannot be sent (see [`Unsendable`]).
    Unsendable(Unsendable),
    /// The body failed.
    Body(BoxError),
    /// The body ended this many bytes short of its length.
    Short(u64),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Io(e) => write!(f, "{e}"),
            Failed::ClientGone => f.write_str("the client closed the connection"),
            Failed::Unsendable(e) => write!(f, "{e}"),
            Failed::Body(e) => write!(f, "response body failed: {e}"),
            Failed::Short(n) => write!(f, "response body ended {n} bytes short of its length"),
        }
    }
}

/// Sends `res` to the client on `io`, with `out` as its write buffer; the
/// response's emptied field map is left in `spare` for the next request.
/// `lines`: the head's fields, when they came as the client's lines (the
/// map is empty then). `Ok(true)`: the connection may carry another
/// exchange.
pub(crate) async fn response<S, B>(
    io: &mut S,
    (res, lines): (Response<B>, Option<Box<Lines>>),
    asked: Asked,
    (out, spare): (&mut Vec<u8>, &mut Option<HeaderMap>),
    watch: &mut impl Watch,
) -> Result<bool, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    let (mut head, body) = res.into_parts();
    let length = if body.is_end_stream() {
        None
    } else {
        Some(match body.size_hint().exact() {
            Some(n) => BodyLength::Known(n),
            None => BodyLength::Unknown,
        })
    };
    out.clear();
    let plain = lines
        .as_deref()
        .and_then(|lines| encode_lines(&head, lines, asked, length, out));
    let encoded = match plain {
        Some(enc) => Ok(enc),
        None => {
            // Not plain: the lines go back into the map, encoded as ever.
            if let Some(lines) = lines {
                lines.into_map(&mut head.headers);
            }
            encode_head(&mut head, asked, length, out)
        }
    };
    let mut fields = std::mem::take(&mut head.headers);
    drop(head);
    // Read only when the request takes trailers (rare) and the body is
    // chunked: no other framing can carry them.
    let chunked = encoded.as_ref().is_ok_and(|enc| enc.is_chunked());
    let allowed = if asked.trailers && chunked {
        trailer_names(&fields)
    } else {
        Vec::new()
    };
    fields.clear();
    *spare = Some(fields);
    let mut enc = match encoded {
        Ok(enc) if length.is_some() && !enc.is_eof() => enc,
        Ok(enc) => {
            // No body to send: hyper drops it unread (it completes then),
            // and ends a framing that a field set (`0` of a chunked one).
            drop(body);
            out.extend_from_slice(enc.end().map_err(Failed::Short)?);
            write_all(io, &[out.as_slice()]).await.map_err(Failed::Io)?;
            return Ok(!enc.is_last());
        }
        Err(e) => {
            drop(body);
            write_all(io, &[out.as_slice()]).await.map_err(Failed::Io)?;
            return Err(Failed::Unsendable(e));
        }
    };
    let mut body = std::pin::pin!(body);
    let mut queued = Queue { out, sent: 0 };
    loop {
        let frame = std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                return Poll::Ready(Ok(frame));
            }
            // The body waits: what is framed goes out meanwhile.
            if let Poll::Ready(Err(e)) = queued.poll_send(io, cx) {
                return Poll::Ready(Err(Failed::Io(e)));
            }
            watch
                .poll_gone(io, cx)
                .map(|e| Err(e.map_or(Failed::ClientGone, Failed::Io)))
        })
        .await?;
        // Trailers end the body: sent if the request takes them and the
        // response named them (`Trailer`), else dropped, as by hyper.
        let data = match frame {
            Some(Err(e)) => return Err(Failed::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Some(data),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) if enc.trailers(&trailers, &allowed, queued.out) => break,
                    Ok(_) => None,
                    Err(_) => continue,
                },
            },
            None => None,
        };
        let Some(data) = data else {
            queued
                .out
                .extend_from_slice(enc.end().map_err(Failed::Short)?);
            break;
        };
        let last = body.is_end_stream();
        if !data.is_empty() {
            let (take, after) = enc.data(data.len(), queued.out);
            if take <= COPY_MAX {
                queued.out.extend_from_slice(&data[..take]);
                queued.out.extend_from_slice(after);
            } else {
                let pending = &queued.out[queued.sent..];
                write_all(io, &[pending, &data[..take], after])
                    .await
                    .map_err(Failed::Io)?;
                queued.clear();
            }
        }
        if last {
            match enc.end() {
                Ok(end) => queued.out.extend_from_slice(end),
                // A body that ends short of its length in its last frame
                // closes the connection (hyper's `write_body_and_end`).
                Err(_) => {
                    queued.flush(io).await.map_err(Failed::Io)?;
                    return Ok(false);
                }
            }
            break;
        }
        if enc.is_eof() {
            // The length is met: the rest of the body is not read.
            break;
        }
        if queued.out.len() - queued.sent >= QUEUE_MAX {
            queued.flush(io).await.map_err(Failed::Io)?;
        }
    }
    queued.flush(io).await.map_err(Failed::Io)?;
    Ok(!enc.is_last())
}

/// Bytes framed and not yet written (from `sent` on).
struct Queue<'o> {
    out: &'o mut Vec<u8>,
    sent: usize,
}

impl Queue<'_> {
    fn clear(&mut self) {
        self.out.clear();
        self.sent = 0;
    }

    /// Writes what it can without waiting.
    fn poll_send<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut *io).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.clear();
        Poll::Ready(Ok(()))
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send(io, cx)).await
    }
}

/// Writes every byte of `parts` (empty ones skipped), vectored.
async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); 3];
    let mut n = 0;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        slices[n] = IoSlice::new(part);
        n += 1;
    }
    let mut bufs = &mut slices[..n];
    while !bufs.is_empty() {
        let wrote =
            std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, bufs)).await?;
        if wrote == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, wrote);
    }
    Ok(())
}
