//! The response as an HTTP/1.1 client gets it: the head encoded, and the
//! body framed, by the rules of hyper's server (`proto::h1::role::Server`),
//! so that a client sees the same bytes whichever side serves it (checked
//! against hyper on the same responses: `h1::encode_tests`).
//!
//! The rules, briefly: a body whose length is known gets `content-length`
//! (the response's own if it has one), an unknown one is chunked; HEAD, 204,
//! 304, 1xx and a 2xx to `CONNECT` carry no body whatever their fields say
//! (and the last two end the connection's HTTP: a tunnel follows); a response without
//! `date` gets one; a connection that will not persist says
//! `connection: close`; an HTTP/1.0 client gets an HTTP/1.0 response, which
//! says `keep-alive` if the connection persists, and no chunks.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Version, response};

use super::date;
use super::head::{has_token, last_is_chunked};
use crate::upstream::Lines;

/// What of the request decides how its response is framed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    /// The request was a `HEAD`: no body follows the head.
    pub(crate) head: bool,
    /// The connection may carry another exchange (the request did not say
    /// `close`, and no drain or eviction ends it).
    pub(crate) keep_alive: bool,
    /// The request was HTTP/1.0: the response is too, and has no chunks.
    pub(crate) http10: bool,
    /// The request's `TE` lists `trailers`: a chunked response ends with
    /// the trailers its `Trailer` field names (hyper's rule).
    pub(crate) trailers: bool,
    /// The request was a `CONNECT`: a 2xx to it has no body and no framing
    /// fields, and ends the connection's HTTP (hyper's rule).
    pub(crate) connect: bool,
}

impl Asked {
    /// A 2xx to a `CONNECT`: the connection becomes a tunnel after it.
    fn tunnels(&self, status: StatusCode) -> bool {
        self.connect && status.is_success()
    }

    /// Whether a response with `status` may say its length (hyper's
    /// `can_have_content_length`).
    fn length_for(&self, status: StatusCode) -> bool {
        can_have_length(status) && !self.tunnels(status)
    }
}

/// What the response body says of its length before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    /// Exactly this many bytes.
    Known(u64),
    /// Not known until its end.
    Unknown,
}

/// Why a response cannot be sent (hyper's user errors): the connection
/// closes with nothing of it written, as under hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsendable {
    /// `Content-Length` that is not a number, differing values, or a framing
    /// field after the length was set.
    Framing,
    /// A 1xx as the final response: a 500 went out instead.
    Informational,
}

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsendable::Framing => "response framing fields contradict each other",
            Unsendable::Informational => "an informational (1xx) status as the final response",
        })
    }
}

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This many bytes still to send.
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Frames a response body; from [`encode_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoder {
    kind: Kind,
    /// The connection closes after this response.
    last: bool,
}

impl Encoder {
    /// Nothing (more) of the body is to be sent.
    pub(crate) fn is_eof(&self) -> bool {
        self.kind == Kind::Length(0)
    }

    /// The body is sent in chunks (it can end with trailers).
    pub(crate) fn is_chunked(&self) -> bool {
        self.kind == Kind::Chunked
    }

    /// The connection closes once this response is out.
    pub(crate) fn is_last(&self) -> bool {
        self.last || self.kind == Kind::Close
    }

    /// Frames `len` bytes of body data: what goes before them is appended to
    /// `pre`; returns how many of them to send (a length is never exceeded)
    /// and what follows them.
    pub(crate) fn data(&mut self, len: usize, pre: &mut Vec<u8>) -> (usize, &'static [u8]) {
        match &mut self.kind {
            Kind::Length(remaining) => {
                let take = (len as u64).min(*remaining);
                *remaining -= take;
                // `take` is at most `len`.
                (take as usize, b"")
            }
            Kind::Chunked => {
                pre.extend_from_slice(crate::chunked::SizeLine::new(len).as_bytes());
                (len, b"\r\n")
            }
            Kind::Close => (len, b""),
        }
    }

    /// The end of a chunked body with the `trailers` that may go: those
    /// named in `allowed` (the response's `Trailer` field) and not about
    /// framing, routing or the head (hyper's `encode_trailers`). False,
    /// with nothing written, when none may.
    pub(crate) fn trailers(
        &self,
        trailers: &HeaderMap,
        allowed: &[HeaderName],
        dst: &mut Vec<u8>,
    ) -> bool {
        if !self.is_chunked() {
            return false;
        }
        let start = dst.len();
        dst.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            if allowed.contains(name) && may_trail(name) {
                dst.extend_from_slice(name.as_str().as_bytes());
                dst.extend_from_slice(b": ");
                dst.extend_from_slice(value.as_bytes());
                dst.extend_from_slice(b"\r\n");
            }
        }
        if dst.len() == start + 3 {
            dst.truncate(start);
            return false;
        }
        dst.extend_from_slice(b"\r\n");
        true
    }

    /// The end of the body: its last bytes, or `Err` when a length was
    /// promised and not met (the connection must close).
    pub(crate) fn end(&self) -> Result<&'static [u8], u64> {
        match self.kind {
            Kind::Length(0) | Kind::Close => Ok(b""),
            Kind::Chunked => Ok(b"0\r\n\r\n"),
            Kind::Length(missing) => Err(missing),
        }
    }
}

/// The names a response's `Trailer` fields list (hyper's reading: each
/// value split at commas, what is not a name skipped).
pub(crate) fn trailer_names(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// A field that may be a trailer (hyper's `is_valid_trailer_field`).
fn may_trail(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

fn can_chunk(asked: Asked, status: StatusCode) -> bool {
    !asked.head && asked.length_for(status)
}

fn can_have_length(status: StatusCode) -> bool {
    !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Encodes `head` into `dst` (status line, fields, `date`, framing fields
/// as `body` needs them) and returns the body's encoder. `None` for `body`:
/// the body is known to be empty before it is read. On `Err`, `dst` holds
/// what is to be sent instead (nothing, or hyper's 500 for a 1xx).
pub(crate) fn encode_head(
    head: &mut response::Parts,
    asked: Asked,
    body: Option<BodyLength>,
    dst: &mut Vec<u8>,
) -> Result<Encoder, Unsendable> {
    let mut asked = asked;
    if asked.http10 {
        asked.keep_alive = down_to_http10(head, asked.keep_alive);
    } else if !asked.keep_alive {
        close_connection(head);
    }
    let status = head.status;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // hyper's answer to a 1xx that is not an interim response.
        let mut error = http::Response::new(()).into_parts().0;
        error.status = StatusCode::INTERNAL_SERVER_ERROR;
        let framed = Framed {
            asked,
            body: None,
            is_last: true,
        };
        framed.encode(&error, dst)?;
        return Err(Unsendable::Informational);
    }
    let framed = Framed {
        asked,
        body,
        is_last: status == StatusCode::SWITCHING_PROTOCOLS
            || asked.tunnels(status)
            || !asked.keep_alive,
    };
    let start = dst.len();
    framed
        .encode(head, dst)
        .inspect_err(|_| dst.truncate(start))
}

/// Encodes a head whose fields came as the client's lines (`lines`; the
/// map in `head` is empty) into `dst`, when its encoding is plain: an
/// HTTP/1.1 client, not a `HEAD`, a status that has a body, and a body
/// framed by the length the lines hold or (unknown) by chunks. Writes the
/// bytes [`encode_head`] writes for the same fields in a map (the map's
/// order aside: lines keep the service's). `None` (nothing written) for
/// any other head, which goes through the map.
pub(crate) fn encode_lines(
    head: &response::Parts,
    lines: &Lines,
    asked: Asked,
    body: Option<BodyLength>,
    dst: &mut Vec<u8>,
) -> Option<Encoder> {
    // A request that takes trailers: its response's `Trailer` field is read
    // from the map.
    if asked.http10
        || asked.head
        || asked.trailers
        || !head.headers.is_empty()
        || !asked.length_for(head.status)
    {
        return None;
    }
    let kind = match (body?, lines.length()) {
        (BodyLength::Known(n), Some(length)) if n == length && n > 0 => Kind::Length(n),
        (BodyLength::Unknown, None) => Kind::Chunked,
        _ => return None,
    };
    status_line(head, dst);
    dst.extend_from_slice(lines.lines());
    if !asked.keep_alive {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if kind == Kind::Chunked {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    end_head(lines.has_date(), dst);
    Some(Encoder {
        kind,
        last: !asked.keep_alive,
    })
}

/// The response to an HTTP/1.0 request is HTTP/1.0 (hyper's
/// `enforce_version`): a persisting connection says `keep-alive`, unless the
/// response is HTTP/1.0 without it (then the connection does not persist).
/// Returns whether it persists.
fn down_to_http10(head: &mut response::Parts, keep_alive: bool) -> bool {
    let mut keep_alive = keep_alive;
    let says_keep_alive = head
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "keep-alive"));
    if !says_keep_alive {
        if head.version == Version::HTTP_10 {
            keep_alive = false;
        } else if head.version == Version::HTTP_11 && keep_alive {
            let value = HeaderValue::from_static("keep-alive");
            head.headers.append(header::CONNECTION, value);
        }
    }
    head.version = Version::HTTP_10;
    keep_alive
}

/// A connection that will not persist says so (hyper's `enforce_version`).
fn close_connection(head: &mut response::Parts) {
    match head.headers.entry(header::CONNECTION) {
        header::Entry::Occupied(mut entry) => {
            if !entry.iter().any(|v| has_token(v, "close")) {
                entry.append(HeaderValue::from_static("close"));
            }
        }
        header::Entry::Vacant(entry) => {
            entry.insert(HeaderValue::from_static("close"));
        }
    }
}

/// One head's encoding.
struct Framed {
    asked: Asked,
    body: Option<BodyLength>,
    is_last: bool,
}

/// The state of the field loop.
struct Fields {
    kind: Kind,
    wrote_len: bool,
    wrote_date: bool,
    is_last: bool,
    /// A `transfer-encoding` whose last coding is not chunked: hyper adds
    /// `, chunked` to the end of the line open when a name ends (which may
    /// be another name's, a quirk kept for the same bytes).
    must_chunk: bool,
    prev_len: Option<u64>,
}

impl Fields {
    /// Ends the line of a name whose values were joined on one.
    fn end_line(&self, open: &mut bool, dst: &mut Vec<u8>) {
        if std::mem::take(open) {
            let end: &[u8] = if self.must_chunk {
                b", chunked\r\n"
            } else {
                b"\r\n"
            };
            dst.extend_from_slice(end);
        }
    }
}

impl Framed {
    fn encode(&self, head: &response::Parts, dst: &mut Vec<u8>) -> Result<Encoder, Unsendable> {
        status_line(head, dst);
        let mut f = Fields {
            kind: Kind::Length(0),
            // A tunnel's head may not frame a body: a framing field in it
            // is an error, as if one had been written (hyper's rule).
            wrote_len: self.asked.tunnels(head.status),
            wrote_date: false,
            is_last: self.is_last,
            must_chunk: false,
            prev_len: None,
        };
        let http10 = head.version == Version::HTTP_10;
        let chunkable = !http10 && can_chunk(self.asked, head.status);
        // The values of one name come one after the other, all with the
        // same key (one entry of the map): a new key is a new name.
        let mut current: Option<&header::HeaderName> = None;
        let mut open = false;
        for (name, value) in &head.headers {
            if !current.is_some_and(|c| std::ptr::eq(c, name)) {
                f.end_line(&mut open, dst);
                current = Some(name);
            }
            self.field(&mut f, (name, value), chunkable, &mut open, dst)?;
        }
        f.end_line(&mut open, dst);
        if !f.wrote_len {
            f.kind = self.implied(head.status, chunkable, dst);
        }
        if !can_chunk(self.asked, head.status) {
            f.kind = Kind::Length(0);
        }
        end_head(f.wrote_date, dst);
        Ok(Encoder {
            kind: f.kind,
            last: f.is_last,
        })
    }

    /// One value of a field; `open`: this name's line is begun and not ended.
    fn field(
        &self,
        f: &mut Fields,
        (name, value): (&header::HeaderName, &HeaderValue),
        chunkable: bool,
        open: &mut bool,
        dst: &mut Vec<u8>,
    ) -> Result<(), Unsendable> {
        let joined = |open: &mut bool, dst: &mut Vec<u8>| {
            if *open {
                dst.extend_from_slice(b", ");
            } else {
                *open = true;
                dst.extend_from_slice(name.as_str().as_bytes());
                dst.extend_from_slice(b": ");
            }
            dst.extend_from_slice(value.as_bytes());
        };
        match *name {
            header::CONTENT_LENGTH => {
                if f.wrote_len && !*open {
                    return Err(Unsendable::Framing);
                }
                match self.body {
                    Some(BodyLength::Known(len)) => {
                        if !*open {
                            f.kind = Kind::Length(len);
                            f.wrote_len = true;
                            joined(open, dst);
                        }
                        return Ok(());
                    }
                    Some(BodyLength::Unknown) => {
                        let len =
                            super::head::digits(value.as_bytes()).ok_or(Unsendable::Framing)?;
                        match f.prev_len {
                            Some(prev) if prev != len => return Err(Unsendable::Framing),
                            Some(_) => {}
                            None => {
                                f.kind = Kind::Length(len);
                                f.wrote_len = true;
                                f.prev_len = Some(len);
                                joined(open, dst);
                            }
                        }
                        return Ok(());
                    }
                    // A HEAD's length is kept as it is; an empty body's
                    // stated length is dropped (`0` is implied below).
                    None if self.asked.head => f.wrote_len = true,
                    None => return Ok(()),
                }
            }
            header::TRANSFER_ENCODING => {
                if f.wrote_len && !*open {
                    return Err(Unsendable::Framing);
                }
                if !chunkable {
                    return Ok(());
                }
                f.wrote_len = true;
                f.must_chunk = !last_is_chunked(value);
                if !*open {
                    f.kind = Kind::Chunked;
                }
                joined(open, dst);
                return Ok(());
            }
            header::CONNECTION => {
                if !f.is_last && has_token(value, "close") {
                    f.is_last = true;
                }
                joined(open, dst);
                return Ok(());
            }
            header::TRAILER => {
                if chunkable {
                    joined(open, dst);
                }
                return Ok(());
            }
            header::DATE => f.wrote_date = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The framing when no field set it, with the field that says so.
    fn implied(&self, status: StatusCode, chunkable: bool, dst: &mut Vec<u8>) -> Kind {
        match self.body {
            Some(BodyLength::Unknown) if chunkable => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Kind::Chunked
            }
            Some(BodyLength::Unknown) => Kind::Close,
            None | Some(BodyLength::Known(0)) => {
                if self.asked.length_for(status) && !self.asked.head {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Kind::Length(0)
            }
            Some(BodyLength::Known(len)) if self.asked.length_for(status) => {
                dst.extend_from_slice(b"content-length: ");
                dst.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                dst.extend_from_slice(b"\r\n");
                Kind::Length(len)
            }
            Some(BodyLength::Known(_)) => Kind::Length(0),
        }
    }
}

/// The end of a head: a `date` if the fields had none (hyper adds one),
/// and the empty line.
fn end_head(has_date: bool, dst: &mut Vec<u8>) {
    if !has_date {
        dst.extend_from_slice(b"date: ");
        date::extend(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

fn status_line(head: &response::Parts, dst: &mut Vec<u8>) {
    let reason = head.extensions.get::<hyper::ext::ReasonPhrase>();
    if head.version == Version::HTTP_11 && head.status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(if head.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    dst.extend_from_slice(head.status.as_str().as_bytes());
    dst.push(b' ');
    match reason {
        Some(reason) => dst.extend_from_slice(reason.as_bytes()),
        None => {
            let canonical = head.status.canonical_reason().unwrap_or("<none>");
            dst.extend_from_slice(canonical.as_bytes());
        }
    }
    dst.extend_from_slice(b"\r\n");
}
