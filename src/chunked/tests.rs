//! The decoder on its own: hyper's rules case by case, every split of the
//! input read alike, and the limits at their edges. The decoder against
//! hyper's on whole connections: `h1::tests` and the `server_side` fuzz
//! target.

use bytes::BytesMut;
use http::HeaderMap;

use super::{Chunked, Decoded, Limits, Malformed};

/// A body read whole: its data, its trailers, and what followed it.
#[derive(Debug, PartialEq)]
struct Read {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    after: Vec<u8>,
}

/// Feeds `input` in pieces of `piece` bytes; `Ok(None)` if it ends before
/// the body does.
fn read(input: &[u8], piece: usize, limits: Limits) -> Result<Option<Read>, Malformed> {
    let mut decoder = Chunked::new(limits);
    let mut buf = BytesMut::new();
    let mut pieces = input.chunks(piece);
    let mut data = Vec::new();
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(d) => data.extend_from_slice(&d),
            Decoded::More => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return Ok(None),
            },
            end @ (Decoded::End | Decoded::Trailers(_)) => {
                assert!(decoder.is_done());
                assert_eq!(
                    decoder.decode(&mut buf),
                    Ok(Decoded::End),
                    "over stays over"
                );
                let trailers = match end {
                    Decoded::Trailers(t) => Some(t),
                    _ => None,
                };
                let mut after = buf.to_vec();
                after.extend(pieces.flatten());
                return Ok(Some(Read {
                    data,
                    trailers,
                    after,
                }));
            }
        }
    }
}

/// `input` read whole, and read alike in every split.
fn whole(input: &str) -> Result<Option<Read>, Malformed> {
    let input = input.as_bytes();
    let at_once = read(input, input.len().max(1), Limits::HYPER);
    for piece in 1..input.len().min(40) {
        assert_eq!(
            read(input, piece, Limits::HYPER),
            at_once,
            "{input:?} in pieces of {piece}"
        );
    }
    at_once
}

fn data(input: &str) -> String {
    let read = whole(input).unwrap().expect("a whole body");
    String::from_utf8(read.data).unwrap()
}

fn trailers(input: &str) -> Vec<(String, String)> {
    let read = whole(input).unwrap().expect("a whole body");
    read.trailers
        .expect("a trailer section")
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn bodies_hyper_takes_are_taken() {
    assert_eq!(data("5\r\nhello\r\n0\r\n\r\n"), "hello");
    assert_eq!(
        data("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "hello world"
    );
    assert_eq!(data("A\r\n0123456789\r\n0\r\n\r\n"), "0123456789");
    assert_eq!(data("a\r\n0123456789\r\n0\r\n\r\n"), "0123456789");
    assert_eq!(data("5;a=b\r\nhello\r\n0;c\r\n\r\n"), "hello");
    assert_eq!(data("5 \t ;x=\"y\\\"\"\r\nhello\r\n0\r\n\r\n"), "hello");
    assert_eq!(data("5\t\r\nhello\r\n0\r\n\r\n"), "hello");
    // Leading zeros are digits like any (httparse stops at 16 digits).
    assert_eq!(data("00000000000000000005\r\nhello\r\n0\r\n\r\n"), "hello");
    assert_eq!(data("0\r\n\r\n"), "");
    assert_eq!(data("000\r\n\r\n"), "");
}

#[test]
fn what_follows_the_body_is_left_for_the_next_request() {
    let read = whole("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(read.after, b"GET / HTTP/1.1\r\n");
    let read = whole("0\r\nA: 1\r\n\r\n0\r\n").unwrap().unwrap();
    assert_eq!(read.after, b"0\r\n");
}

#[test]
fn a_trailer_section_is_read_as_hyper_reads_it() {
    assert_eq!(trailers("0\r\nA: 1\r\n\r\n"), [("a".into(), "1".into())]);
    assert_eq!(
        trailers("3\r\nabc\r\n0\r\nA: 1\r\nB:  two \r\nA: 3\r\n\r\n"),
        [
            ("a".into(), "1".into()),
            ("a".into(), "3".into()),
            ("b".into(), "two".into()),
        ]
    );
    // A line ended by a bare LF, then an empty one: hyper counts lines by
    // their CRLF, `httparse` reads the field and stops at the empty line.
    // The section still ends only at CRLF CRLF, so the framing is not in
    // doubt (and what `httparse` left unread of it is dropped).
    assert_eq!(
        trailers("0\r\nA: 1\n\r\nB: 2\r\n\r\n"),
        [("a".into(), "1".into())]
    );
}

#[test]
fn bodies_hyper_refuses_are_refused() {
    for bad in [
        "\r\n",
        ";x\r\n",
        " 5\r\n",
        "g\r\n",
        "5 5\r\nhello\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5\r\r\nhello\r\n",
        "5;a\nb\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n",
        "0x5\r\nhello\r\n",
        "+5\r\nhello\r\n",
        "10000000000000000\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "5\r\nhello\r\r\n",
        "0\r\n\rx",
        "0\r\nA: 1\rx",
        "0\r\nA 1\r\n\r\n",
        "0\r\nA: 1\nB: 2\r\n\r\n",
        "0\r\nA: \x01\r\n\r\n",
        "0\r\n: 1\r\n\r\n",
    ] {
        assert!(whole(bad).is_err(), "{bad:?}: {:?}", whole(bad));
    }
}

#[test]
fn a_body_cut_short_asks_for_more() {
    for partial in [
        "",
        "5",
        "5\r",
        "5\r\nhel",
        "5\r\nhello\r\n",
        "0\r\n",
        "0\r\nA: 1\r\n",
    ] {
        assert_eq!(whole(partial), Ok(None), "{partial:?}");
    }
}

#[test]
fn the_limits_hold_at_their_edges() {
    let extension = |n: usize| format!("0;{}\r\n\r\n", "x".repeat(n));
    assert!(whole(&extension(16 * 1024 - 1)).is_ok());
    assert!(whole(&extension(16 * 1024)).is_err());
    // The extension limit is the body's, not a line's.
    let lines = format!("1;{0}\r\na\r\n0;{0}\r\n\r\n", "x".repeat(8 * 1024));
    assert!(whole(&lines).is_err());
    let fields = |n: usize| {
        let lines: String = (0..n).map(|i| format!("X-{i}: y\r\n")).collect();
        format!("0\r\n{lines}\r\n")
    };
    assert_eq!(trailers(&fields(100)).len(), 100);
    assert!(whole(&fields(101)).is_err());
    let small = Limits {
        trailer_fields: 2,
        trailer_bytes: 16 * 1024,
    };
    assert!(read(fields(2).as_bytes(), 4096, small).is_ok());
    assert!(read(fields(3).as_bytes(), 4096, small).is_err());
    // The section, its last CRLF included, stays below the byte limit.
    let sized = |n: usize| format!("0\r\nX: {}\r\n\r\n", "y".repeat(n - "X: \r\n\r\n".len()));
    assert!(whole(&sized(16 * 1024 - 1)).is_ok());
    assert!(whole(&sized(16 * 1024)).is_err());
}

#[test]
fn data_is_handed_as_it_comes_without_waiting_for_the_chunk_end() {
    let mut decoder = Chunked::new(Limits::HYPER);
    let mut buf = BytesMut::from(&b"9\r\nhello"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Data("hello".into())));
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::More));
    buf.extend_from_slice(b" you\r\n0\r\n\r\n");
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Data(" you".into())));
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
    assert!(buf.is_empty());
}

#[test]
fn a_size_line_is_the_size_in_hex_and_crlf_and_advances() {
    for (len, line) in [
        (0, "0\r\n"),
        (1, "1\r\n"),
        (15, "F\r\n"),
        (16, "10\r\n"),
        (4096, "1000\r\n"),
        (0xABCDE, "ABCDE\r\n"),
        (usize::MAX, "FFFFFFFFFFFFFFFF\r\n"),
    ] {
        assert_eq!(super::SizeLine::new(len).as_bytes(), line.as_bytes());
    }
    let mut line = super::SizeLine::new(0x1F);
    line.advance(1);
    assert_eq!(line.as_bytes(), b"F\r\n");
    line.advance(2);
    assert_eq!(line.as_bytes(), b"\n");
    line.advance(5);
    assert_eq!(line.as_bytes(), b"");
}
