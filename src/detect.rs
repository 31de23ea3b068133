//! Telling HTTP/1 from anything else by a connection's first bytes.
//!
//! The decision never depends on how the bytes were split into reads: a
//! client must not be able to pick "opaque tunnel" (no guard, no decorators,
//! no statistics) by sending `GET\t` alone before the rest of a request. So:
//! - HTTP/1 is decided as soon as the bytes show an attempt at a request line
//!   (a token then a space, or ` HTTP/` in the first line); its validity is
//!   then the parser's job, which refuses a malformed line with 400;
//! - another protocol is decided only from what cannot be HTTP at all: a TLS
//!   record header, the whole HTTP/2 preface, or a complete first line (or
//!   [`LINE_LIMIT`] bytes of one) that shows no attempt at HTTP.
//!
//! Every answer is final: more bytes never change it (the `request_classify`
//! fuzz target checks this).

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Public through `fuzzing` only (the fuzz targets drive it).
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(unreachable_pub))]
pub enum Protocol {
    /// An HTTP/1.x request (or an attempt at one, which the parser judges).
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2PriorKnowledge,
    /// A TLS handshake record (a ClientHello).
    Tls,
    /// A first line that is no attempt at HTTP: another protocol.
    Opaque,
}

impl Protocol {
    /// The label used in logs, `/stats` and `/metrics`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2PriorKnowledge => "h2c",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A first line longer than this without an end is judged on these bytes.
pub(crate) const LINE_LIMIT: usize = 8192;

/// Classifies the first bytes of a connection; `None` means more bytes are
/// needed (the caller bounds the wait with the header timeout).
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(unreachable_pub))]
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let buf = &buf[start..];
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2PriorKnowledge);
    }
    if let Some(tls) = tls_record(buf) {
        return tls;
    }
    let line_end = memchr::memchr(b'\n', buf);
    let line = &buf[..line_end.unwrap_or(buf.len()).min(LINE_LIMIT)];
    if attempts_http(line) {
        return Some(Protocol::Http1);
    }
    let decided = line_end.is_some_and(|end| end < LINE_LIMIT) || buf.len() >= LINE_LIMIT;
    decided.then_some(Protocol::Opaque)
}

/// `Some(Some(Tls))` for a TLS handshake record header (content type 22,
/// protocol major version 3), `Some(None)` while its first bytes still fit
/// one, `None` when they are not TLS.
fn tls_record(buf: &[u8]) -> Option<Option<Protocol>> {
    match buf {
        [0x16] | [0x16, 0x03] => Some(None),
        [0x16, 0x03, minor, ..] if *minor <= 0x04 => Some(Some(Protocol::Tls)),
        _ => None,
    }
}

/// True when (the start of) a first line is an attempt at a request line: a
/// method token followed by a space, or an HTTP version anywhere in it.
fn attempts_http(line: &[u8]) -> bool {
    let method = line.iter().take_while(|&&b| is_tchar(b)).count();
    if method > 0 && line.get(method) == Some(&b' ') {
        return true;
    }
    memchr::memmem::find(line, b" HTTP/").is_some()
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_are_recognised_at_the_method_and_its_space() {
        let req = b"GET / HTTP/1.1\r\n";
        assert_eq!(classify(&req[..0]), None);
        assert_eq!(classify(&req[..3]), None);
        assert_eq!(classify(&req[..4]), Some(Protocol::Http1));
        assert_eq!(classify(b"\r\nPOST /x HTTP/1.0"), Some(Protocol::Http1));
        assert_eq!(classify(b"GET \x00/bad HTTP/1.1"), Some(Protocol::Http1));
    }

    #[test]
    fn broken_request_lines_are_http_for_the_parser_to_refuse() {
        for line in [
            &b"GET\t/tab HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\x00 / HTTP/1.1\r\n\r\n",
            b" GET / HTTP/1.1\r\n",
            b"bad_method\x01 /foo HTTP/1.1\r\n",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(line), Some(Protocol::Http1), "{line:?}");
        }
    }

    #[test]
    fn no_split_of_the_first_bytes_picks_another_answer() {
        let attacks: [&[u8]; 4] = [
            b"GET\t/tab HTTP/1.1\r\nHost: a\r\n\r\n",
            b" / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x00 / HTTP/1.1\r\n\r\n",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for attack in attacks {
            let whole = classify(attack);
            for cut in 0..attack.len() {
                if let Some(early) = classify(&attack[..cut]) {
                    assert_eq!(Some(early), whole, "{attack:?} cut at {cut}");
                }
            }
        }
        // The reported splits: nothing is decided before the line is whole.
        assert_eq!(classify(b"GET\t"), None);
        assert_eq!(classify(b" "), None);
        assert_eq!(classify(&[b'A'; 33]), None);
    }

    #[test]
    fn only_clearly_other_protocols_are_opaque() {
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2PriorKnowledge));
        assert_eq!(classify(b"PRI /x HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"\x16"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Tls));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.6\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(&[b'\x01'; LINE_LIMIT]), Some(Protocol::Opaque));
        assert_eq!(classify(&[b'\x01'; LINE_LIMIT - 1]), None);
    }
}
