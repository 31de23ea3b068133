//! Reading the service's HTTP/1 response: the head (parsed by `httparse`, the
//! parser hyper and Pingora use, its header values kept as slices of the one
//! buffer the head arrived in) and the body's framing (RFC 9112 §6.3),
//! with the chunked decoder (`crate::chunked`, which reads request bodies too).

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, response};
use hyper::body::Frame;

use super::hops::{GiveUp, Hops};
use super::lines::Lines;
use crate::chunked::{self, Chunked, Decoded};

/// The most header fields a response head may have (hyper's limit too).
pub(crate) const MAX_HEADERS: usize = 100;

/// Why the service's bytes are not a valid HTTP/1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// `httparse` refused the head (its reason).
    Head(httparse::Error),
    /// The head is larger than the read limit.
    HeadTooLarge(usize),
    /// An HTTP version other than 1.0 or 1.1.
    Version,
    /// `Content-Length` values that are not one decimal number.
    ContentLength,
    /// A chunked body that is not valid, or beyond hyper's limits.
    Chunked(chunked::Malformed),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Head(e) => write!(f, "malformed response head: {e}"),
            Malformed::HeadTooLarge(n) => write!(f, "response head larger than {n} bytes"),
            Malformed::Version => f.write_str("response is not HTTP/1.0 or HTTP/1.1"),
            Malformed::ContentLength => f.write_str("invalid Content-Length in the response"),
            Malformed::Chunked(e) => write!(f, "{e} in the response"),
        }
    }
}

impl std::error::Error for Malformed {}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the service closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) parts: response::Parts,
    pub(crate) framing: Framing,
    /// The connection may carry another exchange after this one.
    pub(crate) keep_alive: bool,
    /// What `headers::to_client` does to a head is done (hop-by-hop fields
    /// out, a canonical length), but for the version: see [`super::hops`].
    pub(crate) normalised: bool,
    /// Its fields as the client's lines, when kept so ([`ForClient`]); the
    /// map in `parts` is empty then.
    pub(crate) lines: Option<Lines>,
}

impl Head {
    /// Makes the head the one the client gets: what the reading did not do
    /// as the fields passed ([`Head::normalised`]), `headers::to_client` does.
    pub(crate) fn make_for_client(&mut self) {
        if self.normalised {
            self.parts.version = Version::HTTP_11;
        } else {
            crate::headers::to_client(&mut self.parts);
        }
    }

    /// An interim (1xx) response before the final one; a `101` is final
    /// (the connection changes protocol after it).
    pub(crate) fn is_interim(&self) -> bool {
        self.parts.status.is_informational() && self.parts.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Where one header's name and value sit in the head's bytes. Offsets are
/// `u16` (heads are at most 64 KiB) so that the array of them, zeroed for
/// every head, stays small (800 bytes).
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u16, u16),
    value: (u16, u16),
}

impl Span {
    fn name(self) -> std::ops::Range<usize> {
        usize::from(self.name.0)..usize::from(self.name.1)
    }

    fn value(self) -> std::ops::Range<usize> {
        usize::from(self.value.0)..usize::from(self.value.1)
    }
}

/// A head read for the client: a final one is made ready for it as it is
/// read, where it can be ([`Head::normalised`]).
pub(crate) struct ForClient<'a> {
    /// The map its fields go into, if any (emptied first; taken only once a
    /// head is complete, also when its fields are kept as lines).
    pub(crate) spare: &'a mut Option<HeaderMap>,
    /// Keep a final head's fields as lines ([`Head::lines`]), not in a map,
    /// where they can be: nothing on the way reads the head.
    pub(crate) as_lines: bool,
}

/// Parses the response head at the start of `buf` and takes its bytes out
/// of it: `Ok(None)` while it is incomplete (up to `max_head` bytes).
/// `head_request`: the response to a HEAD, which has no body whatever its
/// headers say. `for_client`: the head goes to the client.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    max_head: usize,
    for_client: Option<ForClient<'_>>,
) -> Result<Option<Head>, Malformed> {
    let mut spans = [Span::default(); MAX_HEADERS];
    let (len, version, code, count, reason) = {
        let mut headers = [std::mem::MaybeUninit::uninit(); MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len > max_head.min(usize::from(u16::MAX)) => {
                return Err(Malformed::HeadTooLarge(max_head.min(usize::from(u16::MAX))));
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= max_head => {
                return Err(Malformed::HeadTooLarge(max_head));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Malformed::Head(e)),
        };
        let base = buf.as_ptr() as usize;
        // Every field lies within the head's `len` bytes, so each offset fits.
        let at = |p: *const u8, n: usize| {
            let start = p as usize - base;
            (start as u16, (start + n) as u16)
        };
        for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
            *span = Span {
                name: at(h.name.as_ptr(), h.name.len()),
                value: at(h.value.as_ptr(), h.value.len()),
            };
        }
        // hyper's server writes a reason phrase found in this extension,
        // so a service's own wording reaches the client as it did via hyper.
        let canonical = res
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .and_then(|s| s.canonical_reason());
        let reason = match res.reason {
            Some(r) if !r.is_empty() && Some(r) != canonical => {
                hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok()
            }
            _ => None,
        };
        (len, res.version, res.code, res.headers.len(), reason)
    };
    let version = match version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(Malformed::Version),
    };
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Malformed::Head(httparse::Error::Status))?;
    let spans = &spans[..count];
    // Only a final response goes to the client as it is read here (an
    // interim one is relayed whole, a `101` keeps its `Upgrade`).
    let for_client = for_client.filter(|_| !status.is_informational());
    let mut hops = Hops::default();
    let mut lines = None;
    if let Some(ForClient { as_lines: true, .. }) = for_client {
        let named = spans.iter().map(|s| (&buf[s.name()], &buf[s.value()]));
        match Lines::read(named, len, &mut hops) {
            Ok(read) => lines = Some(read),
            // Read again into a map, by the same rules.
            Err(GiveUp) => hops = Hops::default(),
        }
    }
    let (headers, normalised) = match (for_client, &lines) {
        (Some(for_client), Some(_)) => {
            buf.advance(len);
            // Empty, but with its room: it goes back to the client side,
            // which reads the next request into it.
            let mut map = for_client.spare.take().unwrap_or_default();
            map.clear();
            (map, true)
        }
        (for_client, _) => {
            let bytes = buf.split_to(len).freeze();
            let spare = for_client.and_then(|f| f.spare.take());
            let noting = spare.is_some().then_some(&mut hops);
            let read = fields(&bytes, spans, spare, noting)?;
            if !read.1 {
                hops = Hops::of(&read.0);
            }
            read
        }
    };
    let (framing, keep_alive) = hops.framing(&headers, status, version, head_request)?;
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    if let Some(reason) = reason {
        parts.extensions.insert(reason);
    }
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        normalised,
        lines,
    }))
}

/// The field map of a head (in `into` if given): every field, or with
/// `hops` the end-to-end ones only, the hop-by-hop ones noted in `hops`;
/// with whether they were (a head `hops` gives up on is read again whole,
/// into the same map).
fn fields(
    bytes: &Bytes,
    spans: &[Span],
    into: Option<HeaderMap>,
    mut hops: Option<&mut Hops>,
) -> Result<(HeaderMap, bool), Malformed> {
    let mut headers = into.unwrap_or_default();
    headers.clear();
    headers.reserve(spans.len());
    'read: loop {
        for span in spans {
            let raw = &bytes[span.name()];
            let name = match crate::names::common(raw) {
                Some(name) => name,
                None => HeaderName::from_bytes(raw)
                    .map_err(|_| Malformed::Head(httparse::Error::HeaderName))?,
            };
            if let Some(noted) = hops.as_deref_mut() {
                match noted.note(&name, &bytes[span.value()]) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(GiveUp) => {
                        hops = None;
                        headers.clear();
                        continue 'read;
                    }
                }
            }
            let value = HeaderValue::from_maybe_shared(bytes.slice(span.value()))
                .map_err(|_| Malformed::Head(httparse::Error::HeaderValue))?;
            headers.append(name, value);
        }
        return Ok((headers, hops.is_some()));
    }
}

/// Where a response body is: what is left of it by its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyDecoder {
    Length(u64),
    /// Boxed: responses move several times on their way to the client, and
    /// the decoder inline made every response body 24 bytes larger, which
    /// turned those moves into `memcpy` calls (+360 instructions per
    /// request, callgrind) to save one allocation per chunked response.
    Chunked(Box<Chunked>),
    /// Until the service closes.
    Close,
    Done,
}

impl BodyDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => BodyDecoder::Done,
            Framing::Length(n) => BodyDecoder::Length(n),
            // hyper's client's limits: 100 trailer fields, 16 KiB.
            Framing::Chunked => {
                BodyDecoder::Chunked(Box::new(Chunked::new(chunked::Limits::HYPER)))
            }
            Framing::Close => BodyDecoder::Close,
        }
    }

    /// The whole body was read.
    pub(crate) fn is_done(&self) -> bool {
        *self == BodyDecoder::Done
    }

    pub(crate) fn size_hint(&self) -> hyper::body::SizeHint {
        match *self {
            BodyDecoder::Done => hyper::body::SizeHint::with_exact(0),
            BodyDecoder::Length(n) => hyper::body::SizeHint::with_exact(n),
            _ => hyper::body::SizeHint::default(),
        }
    }

    /// The next frame `buf` holds, taken out of it: `Ok(None)` when more
    /// bytes are needed or the body is over ([`BodyDecoder::is_done`]).
    /// Data frames share `buf`'s memory: no copy.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Malformed> {
        match self {
            BodyDecoder::Done => Ok(None),
            BodyDecoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(Some(Frame::data(buf.split_to(n).freeze())))
            }
            BodyDecoder::Close => Ok((!buf.is_empty()).then(|| Frame::data(buf.split().freeze()))),
            BodyDecoder::Chunked(chunked) => {
                match chunked.decode(buf).map_err(Malformed::Chunked)? {
                    Decoded::Data(data) => Ok(Some(Frame::data(data))),
                    Decoded::Trailers(trailers) => Ok(Some(Frame::trailers(trailers))),
                    Decoded::End => {
                        *self = BodyDecoder::Done;
                        Ok(None)
                    }
                    Decoded::More => Ok(None),
                }
            }
        }
    }

    /// The service closed the connection: the end of a body delimited by
    /// the close, a cut-short body otherwise.
    pub(crate) fn at_eof(&mut self) -> std::io::Result<()> {
        match *self {
            BodyDecoder::Close | BodyDecoder::Done => {
                *self = BodyDecoder::Done;
                Ok(())
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the service closed the connection before the end of the response body",
            )),
        }
    }
}
