//! A client's request head: parsed by `httparse` (what hyper parses with) in
//! the connection's buffer, its header values slices of one `Bytes`, and
//! read by the same rules as hyper's server (RFC 9112 §6: the body's
//! framing, the connection's persistence), so that a request is taken or
//! refused with the status it gets today.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header, request};

use crate::guard::{RawFraming, Refusal};
use crate::splice::{Field, Plan, Splice};

/// hyper's limit on a request-target (longer: 414).
const MAX_URI_LEN: usize = u16::MAX as usize - 1;
/// The largest body length that can be framed (hyper's).
const MAX_BODY_LEN: u64 = u64::MAX - 2;

/// The limits a head is read within (`SITIO_MAX_HEADER_BYTES`,
/// `SITIO_MAX_HEADERS`), and what else is asked of the reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes buffered without a complete head before it is refused (431).
    pub(crate) max_head: usize,
    /// Header fields (more: 431).
    pub(crate) max_headers: usize,
    /// Plan how the head could go on as bytes ([`RequestHead::splice`]):
    /// the chain lets it (no request hooks) and the service speaks HTTP/1.
    pub(crate) splice: bool,
    /// A chunked body's trailer section (hyper's server: as many fields as
    /// a head, 16 KiB).
    pub(crate) chunked: crate::chunked::Limits,
}

impl Limits {
    /// The limits `config` sets.
    pub(crate) fn of(config: &crate::config::Config) -> Self {
        Limits {
            max_head: config.max_header_bytes,
            max_headers: config.max_headers,
            splice: false,
            chunked: crate::chunked::Limits {
                trailer_fields: u32::try_from(config.max_headers).unwrap_or(u32::MAX),
                ..crate::chunked::Limits::HYPER
            },
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3; a request is never
/// delimited by the close of the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body (no framing field, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Method, target, version and fields, as the driver and hooks see them
    /// (a `Content-Length` that `Transfer-Encoding` overrides is not kept,
    /// nor a repeated equal one).
    pub(crate) parts: request::Parts,
    /// How its body is delimited.
    pub(crate) body: BodyFraming,
    /// The framing fields as they arrived (the guard refuses both at once).
    pub(crate) raw: RawFraming,
    /// The connection may carry another request after this one.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`.
    pub(crate) expect_continue: bool,
    /// `Upgrade` (HTTP/1.1) or `CONNECT`.
    pub(crate) wants_upgrade: bool,
    /// A `TE` field lists `trailers`: the response may end with trailers
    /// (hyper's `te_is_trailers`).
    pub(crate) trailers: bool,
    /// The head's bytes as they arrived (the header values share them).
    pub(crate) wire: Bytes,
    /// How the head can go to the service as these bytes, if asked for and
    /// if it can (`splice`).
    pub(crate) splice: Option<Splice>,
}

/// Why a head was refused, with the status and the refusal counter it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) kind: Refusal,
    pub(crate) reason: &'static str,
}

const fn malformed(reason: &'static str) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        kind: Refusal::Malformed,
        reason,
    }
}

const fn too_large(reason: &'static str) -> Refused {
    Refused {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        kind: Refusal::HeadTooLarge,
        reason,
    }
}

/// Header fields kept on the stack while a head is parsed; a larger
/// `SITIO_MAX_HEADERS` spills to the heap (hyper's server does the same).
const INLINE_HEADERS: usize = 100;

/// Where one field's name and value are in the head (start, end of each;
/// heads are at most 1 MiB, `SITIO_MAX_HEADER_BYTES`).
#[derive(Clone, Copy, Default)]
struct Span([u32; 4]);

impl Span {
    fn name(self) -> std::ops::Range<usize> {
        self.0[0] as usize..self.0[1] as usize
    }

    fn value(self) -> std::ops::Range<usize> {
        self.0[2] as usize..self.0[3] as usize
    }
}

/// Parses the request head at the start of `buf` and takes its bytes out of
/// it: `Ok(None)` while it is incomplete (within `limits.max_head` bytes);
/// on `Err`, `buf` is as it was.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<RequestHead>, Refused> {
    parse_into(buf, limits, &mut None)
}

/// Header fields a request gains on its way (the forwarding fields, `host`):
/// room kept for them so that the map does not grow then.
const ROOM: usize = 6;

/// [`parse`], with the fields read into the map in `spare` (emptied first),
/// taken only once the head is complete: a map a previous exchange is done
/// with keeps its allocation for this one, however many reads the head takes.
pub(crate) fn parse_into(
    buf: &mut BytesMut,
    limits: Limits,
    spare: &mut Option<HeaderMap>,
) -> Result<Option<RequestHead>, Refused> {
    let mut inline = [Span::default(); INLINE_HEADERS];
    let mut heap = Vec::new();
    let spans = if limits.max_headers <= INLINE_HEADERS {
        &mut inline[..limits.max_headers]
    } else {
        heap.resize(limits.max_headers, Span::default());
        &mut heap[..]
    };
    let Some((line, count)) = parse_line(buf, limits, spans)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(line.len).freeze();
    let mut headers = spare.take().unwrap_or_default();
    headers.clear();
    headers.reserve(count + ROOM);
    match build(bytes.clone(), line, &spans[..count], headers, limits.splice) {
        Ok(head) => Ok(Some(head)),
        Err(refused) => {
            // Untouched on refusal: hyper, which answers refusals, reads
            // the same bytes again (`h1::serve`).
            let mut back = BytesMut::from(&bytes[..]);
            back.unsplit(std::mem::take(buf));
            *buf = back;
            Err(refused)
        }
    }
}

/// The head of a complete request line and fields (`bytes`, which the
/// values will share).
fn build(
    bytes: Bytes,
    line: Line,
    spans: &[Span],
    mut headers: HeaderMap,
    splice: bool,
) -> Result<RequestHead, Refused> {
    let uri = Uri::from_maybe_shared(bytes.slice(line.target.clone()))
        .map_err(|_| malformed("invalid request-target"))?;
    let mut fields = Fields::new(line.version, line.method == Method::CONNECT);
    let mut plan = splice.then(|| Plan::new(&line.method, &bytes[line.target.clone()]));
    // The empty line's CRLF ends the last field's line.
    let end = bytes.len().saturating_sub(2) as u32;
    for (i, span) in spans.iter().enumerate() {
        let raw = &bytes[span.name()];
        let (name, common) = match crate::names::common(raw) {
            Some(name) => (name, true),
            None => (
                HeaderName::from_bytes(raw).map_err(|_| malformed("invalid header name"))?,
                false,
            ),
        };
        let value = HeaderValue::from_maybe_shared(bytes.slice(span.value()))
            .map_err(|_| malformed("invalid header value"))?;
        let kept = fields.take(&name, &value, &mut headers)?;
        if let Some(plan) = &mut plan {
            let line_end = spans.get(i + 1).map_or(end, |next| next.0[0]);
            let field = Field {
                name: &name,
                common,
                line: (span.0[0], line_end),
                value: (span.0[2], span.0[3]),
            };
            plan.note(&bytes, &field, kept);
        }
        if kept {
            headers.append(name, value);
        }
    }
    let (body, keep_alive) = fields.framing()?;
    let fields_start = spans.first().map_or(end as usize, |s| s.0[0] as usize);
    let splice = plan.and_then(|plan| plan.finish(&bytes, fields_start));
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = line.method;
    parts.uri = uri;
    parts.version = line.version;
    parts.headers = headers;
    Ok(RequestHead {
        parts,
        body,
        raw: fields.raw,
        keep_alive,
        expect_continue: fields.expect_continue,
        wants_upgrade: fields.wants_upgrade,
        trailers: fields.trailers,
        wire: bytes,
        splice,
    })
}

/// The request line of a complete head, with where its fields are.
struct Line {
    /// The head's length, its empty line included.
    len: usize,
    method: Method,
    target: std::ops::Range<usize>,
    version: Version,
}

/// Runs `httparse` over `buf` (at most `spans.len()` fields); where its
/// fields are goes to `spans`, and how many there are comes back with the
/// request line.
fn parse_line(
    buf: &BytesMut,
    limits: Limits,
    spans: &mut [Span],
) -> Result<Option<(Line, usize)>, Refused> {
    let mut inline = [const { std::mem::MaybeUninit::uninit() }; INLINE_HEADERS];
    let mut heap = Vec::new();
    let fields = if spans.len() <= INLINE_HEADERS {
        &mut inline[..spans.len()]
    } else {
        heap.resize_with(spans.len(), std::mem::MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, fields);
    let len = match parsed {
        // hyper reads into a buffer of that size: a longer head fills it
        // before it completes, however it arrives.
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => {
            return Err(too_large("request head larger than SITIO_MAX_HEADER_BYTES"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => {
            return Err(too_large("request head larger than SITIO_MAX_HEADER_BYTES"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(too_large("more header fields than SITIO_MAX_HEADERS"));
        }
        Err(httparse::Error::Token) if req.method.is_none() => {
            return Err(malformed("invalid method"));
        }
        Err(httparse::Error::Token) => return Err(malformed("invalid request-target")),
        Err(httparse::Error::Version) => return Err(malformed("not HTTP/1.0 or HTTP/1.1")),
        Err(_) => return Err(malformed("malformed request head")),
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(malformed("malformed request line"));
    };
    if target.len() > MAX_URI_LEN {
        return Err(Refused {
            status: StatusCode::URI_TOO_LONG,
            kind: Refusal::Malformed,
            reason: "request-target too long",
        });
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
    // Within the head, so each offset fits `u32` (the head is at most
    // `max_head` bytes, 1 MiB at most).
    for (span, h) in spans.iter_mut().zip(req.headers.iter()) {
        let (name, value) = (at(h.name.as_bytes()), at(h.value));
        *span = Span([name.start, name.end, value.start, value.end].map(|n| n as u32));
    }
    let line = Line {
        len,
        method,
        target: at(target.as_bytes()),
        version: if version == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        },
    };
    Ok(Some((line, req.headers.len())))
}

/// What the fields say of the framing and the connection, read as hyper's
/// server reads them, field by field.
struct Fields {
    http11: bool,
    raw: RawFraming,
    chunked: bool,
    length: Option<u64>,
    keep_alive: bool,
    saw_close: bool,
    expect_continue: bool,
    wants_upgrade: bool,
    trailers: bool,
}

impl Fields {
    fn new(version: Version, connect: bool) -> Self {
        let http11 = version == Version::HTTP_11;
        Fields {
            http11,
            raw: RawFraming::default(),
            chunked: false,
            length: None,
            keep_alive: http11,
            saw_close: false,
            expect_continue: false,
            wants_upgrade: connect,
            trailers: false,
        }
    }

    /// Notes one field; false when it is not kept in the head (a length
    /// that a coding overrides, or a repeat of the same length).
    fn take(
        &mut self,
        name: &HeaderName,
        value: &HeaderValue,
        headers: &mut HeaderMap,
    ) -> Result<bool, Refused> {
        match *name {
            header::TRANSFER_ENCODING => {
                if !self.http11 {
                    return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
                }
                self.raw.transfer_encoding = true;
                if self.length.take().is_some() {
                    headers.remove(header::CONTENT_LENGTH);
                }
                // Chunked must be the last coding (of the last such field).
                self.chunked = last_is_chunked(value);
            }
            header::CONTENT_LENGTH => {
                self.raw.content_length = true;
                if self.raw.transfer_encoding {
                    return Ok(false);
                }
                let n = digits(value.as_bytes()).ok_or(malformed("invalid Content-Length"))?;
                match self.length {
                    Some(prev) if prev != n => {
                        return Err(malformed("Content-Length values differ"));
                    }
                    Some(_) => return Ok(false),
                    None if n > MAX_BODY_LEN => {
                        return Err(too_large("Content-Length too large"));
                    }
                    None => self.length = Some(n),
                }
            }
            header::CONNECTION => {
                if self.saw_close || has_token(value, "close") {
                    self.saw_close = true;
                    self.keep_alive = false;
                } else if !self.keep_alive {
                    self.keep_alive = has_token(value, "keep-alive");
                }
            }
            header::EXPECT => {
                self.expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
            }
            header::UPGRADE => self.wants_upgrade = self.http11,
            header::TE => self.trailers |= has_token(value, "trailers"),
            _ => {}
        }
        Ok(true)
    }

    /// The body's framing and whether the connection persists.
    fn framing(&self) -> Result<(BodyFraming, bool), Refused> {
        if self.raw.transfer_encoding && !self.chunked {
            return Err(malformed("Transfer-Encoding without chunked last"));
        }
        let both = self.raw.transfer_encoding && self.raw.content_length;
        let body = match (self.chunked, self.length) {
            (true, _) => BodyFraming::Chunked,
            (false, Some(0) | None) => BodyFraming::Empty,
            (false, Some(n)) => BodyFraming::Length(n),
        };
        Ok((body, self.keep_alive && !both))
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no list).
pub(super) fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Whether a comma-separated field value holds `token` (any case), read as
/// hyper reads one (a value that is not visible ASCII holds none; this is
/// why `headers::connection_has`, on bytes, is not used here).
pub(super) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The last coding of a `Transfer-Encoding` value is `chunked` (hyper's
/// reading, on both sides of the server).
pub(super) fn last_is_chunked(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}
