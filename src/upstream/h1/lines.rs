//! A final response head kept as the bytes the client gets, when nothing
//! in the chain reads response heads (no decorator declares
//! [`crate::Decorator::ON_RESPONSE`]): the service's end-to-end fields are
//! copied as lines, and no field map is built.
//!
//! Building the map took about 4.5k of sitio's 30k instructions per proxied
//! request in callgrind (a `HeaderName` and a `HeaderValue` per field, a
//! hashed insert each), and encoding it again for the client 1.2k more.
//! Lines are what the client gets: names lowercased (as hyper writes them,
//! so a response looks the same whichever way it went), values as they
//! came. A head whose encoding is not plain (see `h1::send`) is turned
//! into the map it would have been ([`Lines::into_map`]).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::hops::{GiveUp, Hops};

/// The end-to-end fields of a final response head, as lines.
#[derive(Debug)]
pub(crate) struct Lines {
    /// One `name: value\r\n` line each, in the service's order, names
    /// lowercased; hop-by-hop fields left out.
    lines: Vec<u8>,
    /// Its `Content-Length` (one plain, canonical value), if it has one.
    length: Option<u64>,
    /// It has a `Date`.
    has_date: bool,
}

impl Lines {
    /// Reads the fields `fields` yields (name, value) into lines, noting
    /// the hop-by-hop ones in `hops` and leaving them out. `GiveUp` for a
    /// head [`Hops`] gives up on, and for one with a `Trailer` field (the
    /// client's encoder treats it by the framing).
    pub(super) fn read<'b>(
        fields: impl Iterator<Item = (&'b [u8], &'b [u8])>,
        size: usize,
        hops: &mut Hops,
    ) -> Result<Self, GiveUp> {
        let mut lines = Vec::with_capacity(size);
        let mut has_date = false;
        for (raw, value) in fields {
            match crate::names::common(raw) {
                Some(name) => {
                    if hops.note(&name, value)? {
                        continue;
                    }
                    has_date |= name == header::DATE;
                    lines.extend_from_slice(name.as_str().as_bytes());
                }
                None => {
                    match uncommon(raw) {
                        Uncommon::HopByHop => continue,
                        Uncommon::GiveUp => return Err(GiveUp),
                        Uncommon::EndToEnd => {}
                    }
                    lines.extend(raw.iter().map(u8::to_ascii_lowercase));
                }
            }
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value);
            lines.extend_from_slice(b"\r\n");
        }
        Ok(Lines {
            lines,
            length: hops.length(),
            has_date,
        })
    }

    /// The lines, ready for the client.
    pub(crate) fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// Its `Content-Length`.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// Whether it has a `Date`.
    pub(crate) fn has_date(&self) -> bool {
        self.has_date
    }

    /// Appends the fields to `map`, as reading them into a map would have
    /// (same names, values and order).
    pub(crate) fn into_map(self, map: &mut HeaderMap) {
        let lines = Bytes::from(self.lines);
        let mut at = 0;
        while at < lines.len() {
            let line = &lines[at..];
            // Written by `read`: `name: value\r\n`, the name a token.
            let colon = line.iter().position(|b| *b == b':').unwrap_or(0);
            let end = line
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or(line.len());
            let name = crate::names::common(&line[..colon])
                .or_else(|| HeaderName::from_bytes(&line[..colon]).ok());
            let value = HeaderValue::from_maybe_shared(lines.slice(at + colon + 2..at + end));
            if let (Some(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
            at += end + 2;
        }
    }
}

/// What a name `names::common` does not know is, for the head's way to the
/// client.
enum Uncommon {
    HopByHop,
    /// `close` (a field `Connection: close` would name) or `Trailer`.
    GiveUp,
    EndToEnd,
}

/// The hop-by-hop names `names::common` leaves out, and those the lines
/// cannot carry; the lengths tell most names apart before any comparison.
fn uncommon(raw: &[u8]) -> Uncommon {
    let is = |name: &[u8]| raw.eq_ignore_ascii_case(name);
    match raw.len() {
        2 if is(b"te") => Uncommon::HopByHop,
        10 if is(b"keep-alive") => Uncommon::HopByHop,
        16 if is(b"proxy-connection") => Uncommon::HopByHop,
        5 if is(b"close") => Uncommon::GiveUp,
        7 if is(b"trailer") => Uncommon::GiveUp,
        _ => Uncommon::EndToEnd,
    }
}
