//! A response head's hop-by-hop fields, read as its map is built, and the
//! body's framing they give (RFC 9112 §6.3).
//!
//! A final response on its way to the client usually carries only
//! `Connection: keep-alive` and one plain `Content-Length` (or a transfer
//! coding). [`Hops`] reads those as the field map is built and keeps the
//! hop-by-hop ones out of it, so neither the framing nor the client's copy
//! of the head looks anything up in the map afterwards (no
//! `headers::to_client`): about 1.3k instructions a request, measured with
//! callgrind. Anything unusual gives up ([`GiveUp`]): the head is read again
//! whole, and `to_client` does what it always did
//! (`decode::Head::make_for_client`).

use http::{HeaderMap, HeaderName, StatusCode, Version, header};

use super::decode::{Framing, Malformed};
use crate::headers::{connection_has, content_length, is_hop_by_hop, plain_length, tokens};

/// The head needs `headers::to_client` after all: a field `Connection`
/// names, a field named `close`, two lengths, a length that is not in its
/// canonical form, or a length next to a transfer coding.
pub(super) struct GiveUp;

/// The framing facts of a head: read from the fields as they pass
/// ([`Hops::note`]) or looked up in a whole map ([`Hops::of`]).
#[derive(Default)]
pub(super) struct Hops {
    /// `Connection` lists `close`.
    close: bool,
    /// `Connection` lists `keep-alive`.
    keep_alive: bool,
    /// A `Transfer-Encoding` field is there.
    coded: bool,
    /// The last coding of the last `Transfer-Encoding` field is `chunked`.
    chunked: bool,
    /// A `Content-Length` field is there.
    has_length: bool,
    /// Its value, when read as the fields passed (plain, one field).
    length: Option<u64>,
}

impl Hops {
    /// Notes one field of a head bound for the client: `Ok(true)` for a
    /// hop-by-hop field, which stays out of the client's head.
    pub(super) fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<bool, GiveUp> {
        if *name == header::CONTENT_LENGTH {
            if self.has_length || self.coded {
                return Err(GiveUp);
            }
            self.length = Some(plain_length(value).ok_or(GiveUp)?);
            self.has_length = true;
            return Ok(false);
        }
        if !is_hop_by_hop(name) {
            // `Connection: close` names this field: `to_client` removes it.
            return if name.as_str() == "close" {
                Err(GiveUp)
            } else {
                Ok(false)
            };
        }
        if *name == header::CONNECTION {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"upgrade") {
                    // Names a field that must go too.
                    return Err(GiveUp);
                }
            }
        } else if *name == header::TRANSFER_ENCODING {
            if self.has_length {
                return Err(GiveUp);
            }
            self.coded = true;
            self.chunked = last_is_chunked(value);
        }
        Ok(true)
    }

    /// The `Content-Length` noted as the fields passed.
    pub(super) fn length(&self) -> Option<u64> {
        self.length
    }

    /// The facts of a whole map, by lookups (interim responses, the heads
    /// [`Hops::note`] gave up on, and the differential harnesses).
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back();
        Hops {
            close: connection_has(headers, "close"),
            keep_alive: connection_has(headers, "keep-alive"),
            coded: last.is_some(),
            chunked: last.is_some_and(|v| last_is_chunked(v.as_bytes())),
            has_length: headers.contains_key(header::CONTENT_LENGTH),
            length: None,
        }
    }

    /// The body's framing and whether the connection stays open; `headers`
    /// gives the length when it was not read as the fields passed.
    pub(super) fn framing(
        &self,
        headers: &HeaderMap,
        status: StatusCode,
        version: Version,
        head_request: bool,
    ) -> Result<(Framing, bool), Malformed> {
        let mut keep_alive = !self.close && (version == Version::HTTP_11 || self.keep_alive);
        let no_body = head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if no_body {
            return Ok((Framing::Empty, keep_alive));
        }
        if self.coded {
            // A length next to a transfer coding is a desync risk (RFC 9112
            // §6.1): the coding wins and the connection is not reused.
            keep_alive &= !self.has_length;
            return Ok(if self.chunked && version == Version::HTTP_11 {
                (Framing::Chunked, keep_alive)
            } else {
                (Framing::Close, false)
            });
        }
        let length = match self.length {
            Some(n) => Some(n),
            None => content_length(headers).map_err(|()| Malformed::ContentLength)?,
        };
        match length {
            Some(0) => Ok((Framing::Empty, keep_alive)),
            Some(n) => Ok((Framing::Length(n), keep_alive)),
            None => Ok((Framing::Close, false)),
        }
    }
}

/// Whether the last coding a `Transfer-Encoding` value lists is `chunked`.
fn last_is_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// What the client is sent of a head: status, version, each name's values in
/// order, the framing and whether the connection stays open.
#[cfg(any(test, feature = "fuzzing"))]
type Sent = (
    u16,
    Version,
    std::collections::BTreeMap<String, Vec<Vec<u8>>>,
    Framing,
    bool,
);

/// How a head is read for [`sent`].
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Clone, Copy, Debug)]
enum Reading {
    /// The whole map, then `to_client`.
    Whole,
    /// Hop-by-hop fields noted as the map is built.
    Fast,
    /// Kept as the client's lines (`lines`), then put in a map.
    Lines,
}

/// `input`'s head as the client gets it, read the `reading` way; with
/// whether that way kept it (did not give up).
#[cfg(any(test, feature = "fuzzing"))]
fn sent(input: &[u8], head_request: bool, reading: Reading) -> Result<(Sent, bool), String> {
    let mut buf = bytes::BytesMut::from(input);
    // A spare map with a field of its own: it must not show.
    let mut spare = Some(HeaderMap::from_iter([(
        header::VIA,
        http::HeaderValue::from_static("left over"),
    )]));
    let for_client = match reading {
        Reading::Whole => None,
        Reading::Fast | Reading::Lines => Some(super::decode::ForClient {
            spare: &mut spare,
            as_lines: matches!(reading, Reading::Lines),
        }),
    };
    let parsed = super::decode::parse_head(&mut buf, head_request, 1 << 16, for_client);
    let mut head = match parsed {
        Ok(Some(head)) => head,
        Ok(None) => return Err("incomplete".into()),
        Err(e) => return Err(e.to_string()),
    };
    head.make_for_client();
    let kept = match reading {
        Reading::Lines => head.lines.is_some(),
        _ => head.normalised,
    };
    if let Some(lines) = head.lines.take() {
        if !head.parts.headers.is_empty() {
            return Err("a map beside the lines".into());
        }
        lines.into_map(&mut head.parts.headers);
    }
    let mut fields = std::collections::BTreeMap::<String, Vec<Vec<u8>>>::new();
    for (name, value) in &head.parts.headers {
        fields
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.as_bytes().to_vec());
    }
    let sent = (
        head.parts.status.as_u16(),
        head.parts.version,
        fields,
        head.framing,
        head.keep_alive,
    );
    Ok((sent, kept))
}

/// Whether the fast reading of `input`'s head, and the reading into the
/// client's lines, send the client what building the whole map and
/// `to_client` send (`Err` says how not): `Some((fast kept, lines kept))`
/// for a head all read, `None` for one all refused or found incomplete.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn alike(input: &[u8], head_request: bool) -> Result<Option<(bool, bool)>, String> {
    let whole = sent(input, head_request, Reading::Whole);
    let fast = sent(input, head_request, Reading::Fast);
    let lines = sent(input, head_request, Reading::Lines);
    let same = |other: &Result<(Sent, bool), String>| {
        other.as_ref().map(|(s, _)| s) == whole.as_ref().map(|(s, _)| s)
    };
    if !same(&fast) || !same(&lines) {
        return Err(format!(
            "{:?} (HEAD: {head_request}): fast {fast:?}, lines {lines:?}, whole {whole:?}",
            String::from_utf8_lossy(input)
        ));
    }
    Ok(match (fast, lines) {
        (Ok((_, fast)), Ok((_, lines))) => Some((fast, lines)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::{Reading, alike, sent};

    /// Heads with every mix of the fields the fast reading notes.
    fn heads() -> Vec<Vec<u8>> {
        let connection = [
            None,
            Some("keep-alive"),
            Some("close"),
            Some("Keep-Alive, Upgrade"),
            Some("x-secret"),
            Some("close, x-secret"),
            Some(" , keep-alive,"),
            Some("Content-Length"),
        ];
        let length: [&[&str]; 7] = [&[], &["5"], &["05"], &["5, 5"], &["5", "5"], &["0"], &["x"]];
        let coding = [
            None,
            Some("chunked"),
            Some("gzip, chunked"),
            Some("chunked, gzip"),
        ];
        let extras = [
            "",
            "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n",
            "X-Secret: 1\r\n",
            "close: 1\r\n",
            "Upgrade: h2c\r\nTE: trailers\r\n",
            "Server: s\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n",
        ];
        let mut out = Vec::new();
        for status in [
            "200 OK",
            "204 No Content",
            "304 Not Modified",
            "101 Switching Protocols",
            "103 Early Hints",
        ] {
            for version in ["1.0", "1.1"] {
                for c in connection {
                    for l in length {
                        for t in coding {
                            for x in extras {
                                let c = c
                                    .map(|c| format!("Connection: {c}\r\n"))
                                    .unwrap_or_default();
                                let l: String = l
                                    .iter()
                                    .map(|l| format!("Content-Length: {l}\r\n"))
                                    .collect();
                                let t = t
                                    .map(|t| format!("Transfer-Encoding: {t}\r\n"))
                                    .unwrap_or_default();
                                let start = format!("HTTP/{version} {status}\r\n{x}{c}");
                                out.push(format!("{start}{l}{t}\r\n").into_bytes());
                                out.push(format!("{start}{t}{l}\r\n").into_bytes());
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The fast reading and the reading into lines send the client what
    /// building the whole map and `to_client` send, for every mix of the
    /// fields they read, and for the codec's corpus of valid and broken
    /// responses (both as a GET's and as a HEAD's response); and they keep
    /// the usual heads.
    #[test]
    fn the_fast_readings_send_what_to_client_sends() {
        let (mut kept, mut given_up, mut as_lines) = (0, 0, 0);
        let inputs: Vec<Vec<u8>> = heads()
            .into_iter()
            .chain(super::super::tests::corpus())
            .collect();
        for input in &inputs {
            for head_request in [false, true] {
                match alike(input, head_request) {
                    Ok(Some((fast, lines))) => {
                        if fast {
                            kept += 1;
                        } else {
                            given_up += 1;
                        }
                        as_lines += usize::from(lines);
                    }
                    Ok(None) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // nginx's answer is the first head of the corpus.
        let nginx = &super::super::tests::corpus()[0];
        assert!(sent(nginx, false, Reading::Fast).is_ok_and(|(_, kept)| kept));
        assert!(sent(nginx, false, Reading::Lines).is_ok_and(|(_, kept)| kept));
        assert!(
            kept > 2000 && given_up > 2000 && as_lines > 2000,
            "{kept} kept, {given_up} given up, {as_lines} as lines"
        );
    }
}
