//! Telling HTTP/1 from anything else by a connection's first bytes, without
//! guessing from a single TCP read: bytes are gathered until the answer is certain.

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.x request line (its validity is the parser's job).
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2PriorKnowledge,
    /// Anything else: tunnelled untouched.
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token accepted before deciding the bytes are not HTTP.
const MAX_METHOD_LEN: usize = 32;

/// Classifies the first bytes of a connection; `None` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let buf = &buf[start..];
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Protocol::Http2PriorKnowledge)
        } else {
            None
        };
    }
    for (i, &b) in buf.iter().enumerate() {
        if b == b' ' && i > 0 {
            return Some(Protocol::Http1);
        }
        if !is_tchar(b) || i >= MAX_METHOD_LEN {
            // An invalid method on an HTTP request line is still HTTP: the
            // parser must refuse it, not the tunnel pass it to the service
            // around every decorator.
            return Some(if looks_like_request_line(buf) {
                Protocol::Http1
            } else {
                Protocol::Opaque
            });
        }
    }
    None
}

/// True when the first line (as far as it has arrived) names an HTTP/1 version.
fn looks_like_request_line(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    buf[..line_end].windows(8).any(|w| w == b" HTTP/1.")
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_are_recognised_byte_by_byte() {
        let req = b"GET / HTTP/1.1\r\n";
        assert_eq!(classify(&req[..0]), None);
        assert_eq!(classify(&req[..3]), None);
        assert_eq!(classify(&req[..4]), Some(Protocol::Http1));
        assert_eq!(classify(b"\r\nPOST /x HTTP/1.0"), Some(Protocol::Http1));
        assert_eq!(classify(b"GET \x00/bad HTTP/1.1"), Some(Protocol::Http1));
    }

    #[test]
    fn h2_preface_and_binary_are_not_http1() {
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2PriorKnowledge));
        assert_eq!(classify(b"PRI /x HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b" GET"), Some(Protocol::Opaque));
        assert_eq!(classify(&[b'A'; 40]), Some(Protocol::Opaque));
        assert_eq!(
            classify(b"bad_method\x01 /foo HTTP/1.1\r\n"),
            Some(Protocol::Http1),
            "a broken request line is refused by the parser, not tunnelled"
        );
    }
}
