//! Notes which framing headers a raw request head carries, as its bytes arrive.
//!
//! hyper resolves `Content-Length` + `Transfer-Encoding` itself (it drops the
//! length and closes after the response, as RFC 9112 §6.3 allows), so the
//! parsed request no longer shows the conflict. sitio refuses such requests
//! outright, so it looks at the raw bytes: line starts only, found with
//! `memchr`, nothing copied. Heads pipelined behind the first one in a single
//! read are not seen here; hyper's normalisation still protects those.

use crate::guard::RawFraming;

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";
const KEEP: usize = 18; // the longer name

/// Scanner state for one request head.
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    /// The first bytes of the line not yet ended.
    start: [u8; KEEP],
    start_len: usize,
    line_len: usize,
    seen_line: bool,
    framing: RawFraming,
    done: bool,
}

impl HeadScan {
    /// Prepares for the next request head.
    pub(crate) fn reset(&mut self) {
        *self = HeadScan::default();
    }

    /// Feeds bytes read while a head is awaited; returns the head's framing
    /// once its empty line has been seen (once per head).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<RawFraming> {
        if self.done {
            return None;
        }
        loop {
            let Some(nl) = memchr::memchr(b'\n', bytes) else {
                self.extend_line(bytes);
                return None;
            };
            self.extend_line(&bytes[..nl]);
            bytes = &bytes[nl + 1..];
            let empty = self.line_len == 0 || (self.line_len == 1 && self.start[0] == b'\r');
            if empty {
                // Blank lines before the request line are allowed and ignored.
                if self.seen_line {
                    self.done = true;
                    return Some(self.framing);
                }
            } else {
                self.seen_line = true;
                let start = &self.start[..self.start_len];
                if has_prefix_ignore_case(start, CONTENT_LENGTH) {
                    self.framing.content_length = true;
                } else if has_prefix_ignore_case(start, TRANSFER_ENCODING) {
                    self.framing.transfer_encoding = true;
                }
            }
            self.start_len = 0;
            self.line_len = 0;
        }
    }

    fn extend_line(&mut self, piece: &[u8]) {
        let room = KEEP - self.start_len;
        let take = room.min(piece.len());
        self.start[self.start_len..self.start_len + take].copy_from_slice(&piece[..take]);
        self.start_len += take;
        self.line_len += piece.len();
    }
}

fn has_prefix_ignore_case(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(head: &[u8], piece: usize) -> Option<RawFraming> {
        let mut scan = HeadScan::default();
        let mut found = None;
        for chunk in head.chunks(piece) {
            if let Some(f) = scan.feed(chunk) {
                found = Some(f);
            }
        }
        found
    }

    #[test]
    fn finds_both_framing_headers_across_any_split() {
        let head = b"\r\nPOST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 4\r\nTransfer-Encoding: chunked\r\n\r\nbody";
        for piece in 1..head.len() {
            let f = scan_in_pieces(head, piece).expect("head end found");
            assert!(f.content_length && f.transfer_encoding, "split {piece}");
        }
    }

    #[test]
    fn ignores_bodies_and_lookalikes() {
        let head = b"POST / HTTP/1.1\nX-Content-Length: 4\nHost: a\n\ncontent-length: 9\r\n";
        let f = scan_in_pieces(head, 7).unwrap();
        assert_eq!(f, RawFraming::default());
    }
}
