//! The client's request head forwarded as the bytes it came in, when nothing
//! on the way may change it ([`crate::Decorator::ON_REQUEST`]): the request
//! line written again (origin form, `HTTP/1.1`), the field lines copied as
//! they arrived but for the hop-by-hop ones, and the forwarding fields
//! added. The field map is still read (the guard and the exchange read it),
//! but not edited and encoded again: about 2,000 of the 27,600 user-space
//! instructions sitio spent on a small proxied request (docs/benchmarks.md).
//!
//! The service gets what `headers::to_upstream` and the map's encoder would
//! send, field for field; only the order of fields of different names and
//! the case of names may differ (held to them by `h1::splice_alike`).
//! A head this plan does not cover (an upgrade, `TE`, a list of lengths,
//! a `Transfer-Encoding` other than one plain `chunked`, a `Connection`
//! option other than `keep-alive` or `close`, a line ending in a bare
//! LF...) takes the map's way as before.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, header};

/// Field lines a plan can leave out (the usual ones: `Connection`,
/// `Keep-Alive`, `Expect`, `X-Forwarded-For`); a head with more takes the
/// map's way.
const MAX_CUTS: usize = 4;

/// Offsets within a head (at most 1 MiB, `SITIO_MAX_HEADER_BYTES`).
pub(crate) type Span = (u32, u32);

fn range(span: Span) -> Range<usize> {
    span.0 as usize..span.1 as usize
}

/// One field line of a head, as [`Plan::note`] reads it.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) name: &'a HeaderName,
    /// `names::common` knew the name (none of them needs a note of its own
    /// but those `http` has constants for).
    pub(crate) common: bool,
    /// The whole line, its name to its CRLF.
    pub(crate) line: Span,
    pub(crate) value: Span,
}

/// Notes, field by field as a head is parsed, what forwarding it as bytes
/// needs; [`Plan::finish`] says whether it can.
#[derive(Debug)]
pub(crate) struct Plan {
    ok: bool,
    cuts: [Span; MAX_CUTS],
    ncuts: u8,
    host: bool,
    proto: bool,
    forwarded_for: Option<Span>,
    close_token: bool,
    close_field: bool,
    length: Option<u64>,
    chunked: bool,
}

impl Plan {
    /// A plan for a head whose request-target is `target`: only the origin
    /// form goes as bytes (an absolute form's authority becomes the `Host`).
    pub(crate) fn new(method: &Method, target: &[u8]) -> Self {
        Plan {
            ok: target.first() == Some(&b'/') && *method != Method::CONNECT,
            cuts: [(0, 0); MAX_CUTS],
            ncuts: 0,
            host: false,
            proto: false,
            forwarded_for: None,
            close_token: false,
            close_field: false,
            length: None,
            chunked: false,
        }
    }

    /// One field of `wire`. `kept`: the field map holds it (the parser
    /// drops a repeated equal length).
    pub(crate) fn note(&mut self, wire: &[u8], field: &Field<'_>, kept: bool) {
        let Field {
            name,
            common,
            line,
            value,
        } = *field;
        // Each line must end in CRLF (`httparse` takes a bare LF too): the
        // bytes before a line's name end the line before it.
        let start = line.0 as usize;
        if !self.ok || !kept || start < 2 || &wire[start - 2..start] != b"\r\n" {
            self.ok = false;
            return;
        }
        match *name {
            header::HOST => self.host = true,
            header::CONTENT_LENGTH => match crate::headers::plain_length(&wire[range(value)]) {
                Some(n) => self.length = Some(n),
                // `0100` goes on as the number, which the map's way writes.
                None => self.ok = false,
            },
            header::CONNECTION => {
                for token in crate::headers::tokens(&wire[range(value)]) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close_token = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        // It names a field to remove, or asks for an upgrade.
                        self.ok = false;
                    }
                }
                self.cut(line);
            }
            // sitio answers `100-continue` itself.
            header::EXPECT => self.cut(line),
            // One plain `chunked` goes on as it came: the map's way sends
            // `chunked` too (`headers::to_upstream`), the service the body
            // in chunks sitio writes again (`upstream::h1`).
            header::TRANSFER_ENCODING if !self.chunked && &wire[range(value)] == b"chunked" => {
                self.chunked = true;
            }
            header::TE | header::TRANSFER_ENCODING | header::UPGRADE => self.ok = false,
            // A common name (`names::common`) is none of the others.
            _ if common => {}
            _ => self.note_other(name.as_str(), line, value),
        }
    }

    /// Names outside `http`'s list of standard ones.
    fn note_other(&mut self, name: &str, line: Span, value: Span) {
        match name {
            "keep-alive" | "proxy-connection" => self.cut(line),
            "x-forwarded-proto" => self.proto = true,
            "x-forwarded-for" if self.forwarded_for.is_none() => {
                self.forwarded_for = Some(value);
                self.cut(line);
            }
            // Several are one list: the map's way.
            "x-forwarded-for" => self.ok = false,
            // `Connection: close` also names a field called `close`.
            "close" => self.close_field = true,
            _ => {}
        }
    }

    fn cut(&mut self, line: Span) {
        match self.cuts.get_mut(usize::from(self.ncuts)) {
            Some(slot) => {
                *slot = line;
                self.ncuts += 1;
            }
            None => self.ok = false,
        }
    }

    /// The splice of `wire` (the whole head, its empty line included; its
    /// fields from `fields_start`), if the head can go as bytes.
    pub(crate) fn finish(self, wire: &[u8], fields_start: usize) -> Option<Splice> {
        // Both framings: refused by the guard, never sent; not spliced.
        let ok = self.ok
            && !(self.close_token && self.close_field)
            && !(self.chunked && self.length.is_some())
            && wire.ends_with(b"\r\n\r\n")
            && fields_start >= 2
            && wire[..fields_start].ends_with(b"\r\n");
        ok.then(|| Splice {
            fields: (fields_start as u32, (wire.len() - 2) as u32),
            cuts: self.cuts,
            ncuts: self.ncuts,
            host: self.host,
            proto: self.proto,
            forwarded_for: self.forwarded_for,
            length: self.length,
            chunked: self.chunked,
        })
    }
}

/// How a request head (`RequestHead::wire`, which it was planned on) can go
/// to the service as the bytes it came in.
#[derive(Debug, Clone)]
pub(crate) struct Splice {
    /// The field lines, each ending in CRLF.
    fields: Span,
    /// Lines left out, in order.
    cuts: [Span; MAX_CUTS],
    ncuts: u8,
    host: bool,
    proto: bool,
    /// The value of the client's `X-Forwarded-For`, if it sent one.
    forwarded_for: Option<Span>,
    /// Its `Content-Length`.
    pub(crate) length: Option<u64>,
    /// Its body is chunked (`Transfer-Encoding: chunked`).
    pub(crate) chunked: bool,
}

/// What the forwarding edits add to a head (`headers::to_upstream`'s).
pub(crate) struct Added<'a> {
    /// The `Host` of an HTTP/1.0 request that came without one.
    pub(crate) service: &'a HeaderValue,
    pub(crate) client_ip: &'a HeaderValue,
}

impl Splice {
    /// The head the service gets for `wire`, the head this was planned on:
    /// `method target HTTP/1.1`, the client's field lines but the cut ones,
    /// the forwarding fields, the empty line.
    pub(crate) fn encode(
        &self,
        wire: &[u8],
        method: &Method,
        target: &str,
        added: &Added<'_>,
    ) -> Bytes {
        let cuts = &self.cuts[..usize::from(self.ncuts)];
        let prev = self
            .forwarded_for
            .map(|v| &wire[range(v)])
            .filter(|v| joinable(v));
        let ip = added.client_ip.as_bytes();
        let len = method.as_str().len()
            + target.len()
            + 12
            + (self.fields.1 - self.fields.0) as usize
            + 64
            + ip.len()
            + prev.map_or(0, <[u8]>::len)
            + added.service.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut at = self.fields.0;
        for cut in cuts {
            out.extend_from_slice(&wire[range((at, cut.0))]);
            at = cut.1;
        }
        out.extend_from_slice(&wire[range((at, self.fields.1))]);
        if !self.host {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(added.service.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = prev {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(ip);
        let end: &[u8] = if self.proto {
            b"\r\n\r\n"
        } else {
            b"\r\nx-forwarded-proto: http\r\n\r\n"
        };
        out.extend_from_slice(end);
        Bytes::from(out)
    }
}

/// A previous `X-Forwarded-For` the new address is appended to: the map's
/// way appends to a value that reads as visible ASCII and is not blank,
/// and replaces any other.
fn joinable(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) && !value.trim_ascii().is_empty()
}
