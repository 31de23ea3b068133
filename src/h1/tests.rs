//! sitio's own server side against hyper's. The request-head parser: the
//! same bytes go to sitio with hyper's server side (hyper's parser, then the
//! guard, through `fuzzing::serve_bytes_by_hyper`) and to `head::parse` with
//! the guard behind it; each request must be refused with the same status,
//! or forwarded by both. The whole connection: the same bytes served with
//! the own side (which hands what it does not serve to hyper's) and with
//! hyper's alone must bring the client the same bytes.

use bytes::BytesMut;
use http::StatusCode;

use super::head::{self, BodyFraming, Limits};
use crate::config::Config;
use crate::fuzzing::{Outcome, as_sitio_runs, with_new_parser};

fn limits() -> Limits {
    Limits::of(&Config::default())
}

/// Requests that vary one thing at a time from a plain one: the method, the
/// target, the version, and every way of framing a body the desync corpus
/// and the smuggling suites try, each with a body that fits its framing.
fn cases() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut add = |line: &str, fields: &[&str], body: &str| {
        let mut raw = format!("{line}\r\n");
        for f in fields {
            raw.push_str(f);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        out.push(raw.into_bytes());
    };
    for line in [
        "GET / HTTP/1.1",
        "get / HTTP/1.1",
        "HEAD / HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "GET * HTTP/1.1",
        "CONNECT a:1 HTTP/1.1",
        "GET http://a/photos HTTP/1.1",
        // An empty path: the service gets `/?q` (a fuzz finding: it got
        // `?q`, which it refused).
        "GET http://a?/q HTTP/1.1",
        "GET http://a HTTP/1.1",
        "GET ftp://a/ HTTP/1.1",
        "GET a/b HTTP/1.1",
        "GET /a?b=c HTTP/1.1",
        "GET /%zz HTTP/1.1",
        "GET / HTTP/1.0",
        "GET / HTTP/1.2",
        "GET / HTTP/2.0",
        "GET / http/1.1",
        "GET  / HTTP/1.1",
        "G(T / HTTP/1.1",
        "GET /a\x7fb HTTP/1.1",
    ] {
        add(line, &["Host: a"], "");
    }
    add("GET / HTTP/1.1", &[], "");
    add("GET / HTTP/1.0", &[], "");
    add("GET / HTTP/1.1", &["Host: a", "Host: b"], "");
    add(
        "GET / HTTP/1.1",
        &["Host: a", "Transfer_Encoding: chunked"],
        "",
    );
    add("GET / HTTP/1.1", &["Host: a", "X: a", " folded"], "");
    add("GET / HTTP/1.1", &["Host: a", "Bad Name: x"], "");
    add("GET / HTTP/1.1", &["Host: a", "X: a\x01b"], "");
    add("GET / HTTP/1.1", &["Host: a", "X: caf\u{e9}"], "");
    let framings: &[(&[&str], &str)] = &[
        (&["Content-Length: 5"], "hello"),
        (&["Content-Length: 0"], ""),
        (&["Content-Length: 05"], "hello"),
        (&["Content-Length: +5"], "hello"),
        (&["Content-Length: 5,5"], "hello"),
        (&["Content-Length: 5 "], "hello"),
        (&["Content-Length:"], ""),
        (&["Content-Length: 99999999999999999999"], ""),
        (&["Content-Length: 18446744073709551615"], ""),
        (&["Content-Length: 5", "Content-Length: 5"], "hello"),
        (&["Content-Length: 5", "Content-Length: 6"], "hello!"),
        (&["Transfer-Encoding: chunked"], "5\r\nhello\r\n0\r\n\r\n"),
        (&["Transfer-Encoding: Chunked"], "0\r\n\r\n"),
        (&["Transfer-Encoding: gzip, chunked"], "0\r\n\r\n"),
        (&["Transfer-Encoding: chunked, gzip"], "0\r\n\r\n"),
        (&["Transfer-Encoding: gzip"], ""),
        (&["Transfer-Encoding: identity"], ""),
        (
            &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
            "0\r\n\r\n",
        ),
        (
            &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
            "0\r\n\r\n",
        ),
        (
            &["Transfer-Encoding: chunked", "Content-Length: 5"],
            "0\r\n\r\n",
        ),
        (
            &["Content-Length: 5", "Transfer-Encoding: chunked"],
            "0\r\n\r\n",
        ),
        (&["Transfer-Encoding: caf\u{e9}, chunked"], "0\r\n\r\n"),
        (&["Transfer-Encoding: chunked;x=1"], "0\r\n\r\n"),
        (&["Connection: close"], ""),
        (&["Connection: keep-alive"], ""),
        (&["Connection: upgrade", "Upgrade: websocket"], ""),
        (&["Expect: 100-continue", "Content-Length: 5"], "hello"),
    ];
    for (fields, body) in framings {
        for line in [
            "POST /x HTTP/1.1",
            "GET / HTTP/1.1",
            "HEAD / HTTP/1.1",
            "TRACE / HTTP/1.1",
            "POST /x HTTP/1.0",
        ] {
            let fields: Vec<&str> = std::iter::once("Host: a")
                .chain(fields.iter().copied())
                .collect();
            add(line, &fields, body);
        }
    }
    let many: Vec<String> = (0..=Config::default().max_headers)
        .map(|i| format!("X-{i}: y"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    add("GET / HTTP/1.1", &many, "");
    // As many as sitio takes, less two: with the forwarding fields the
    // service gets more than hyper's default of 100 (a fuzz finding: the
    // demo service answered 431 to a head sitio had let through).
    let max = Config::default().max_headers;
    add("GET / HTTP/1.0", &many[..max - 2], "");
    let long = format!("X: {}", "y".repeat(Config::default().max_header_bytes));
    add("GET / HTTP/1.1", &["Host: a", &long], "");
    let long_target = format!("GET /{} HTTP/1.1", "a".repeat(70_000));
    add(&long_target, &["Host: a"], "");
    out
}

/// Each case (named) read both ways: every one alike, and enough of them
/// refused, and enough forwarded, for the comparison to mean something.
fn assert_alike(cases: &[(String, Vec<u8>)], at_least_each: usize) {
    let mut differ = Vec::new();
    let mut refused = 0;
    for (name, input) in cases {
        let (new, today) = (with_new_parser(input), as_sitio_runs(input));
        refused += usize::from(matches!(today, Outcome::Refused(_)));
        if new != today {
            differ.push(format!("{name}: new {new:?}, today {today:?}"));
        }
    }
    let n = cases.len();
    assert!(
        differ.is_empty(),
        "{} of {n} differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert!(
        refused >= at_least_each && n - refused >= at_least_each,
        "{refused} of {n} refused"
    );
}

#[test]
fn the_new_parser_takes_and_refuses_what_sitio_takes_and_refuses_today() {
    let named: Vec<(String, Vec<u8>)> = cases()
        .into_iter()
        .map(|input| {
            let shown =
                String::from_utf8_lossy(&input[..input.len().min(160)]).replace("\r\n", "|");
            (shown, input)
        })
        .collect();
    assert_alike(&named, 40);
}

#[test]
fn a_head_is_read_once_complete_and_its_framing_follows_rfc_9112() {
    let parse = |raw: &str| head::parse(&mut BytesMut::from(raw.as_bytes()), limits());
    for partial in [
        "",
        "GET",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r",
    ] {
        assert!(matches!(parse(partial), Ok(None)), "{partial:?}");
    }
    let framing = |raw: &str| {
        let head = parse(raw).unwrap().unwrap();
        (
            head.body,
            head.keep_alive,
            head.raw.content_length,
            head.raw.transfer_encoding,
        )
    };
    assert_eq!(
        framing("GET / HTTP/1.1\r\n\r\n"),
        (BodyFraming::Empty, true, false, false)
    );
    assert_eq!(
        framing("GET / HTTP/1.0\r\n\r\n"),
        (BodyFraming::Empty, false, false, false)
    );
    assert_eq!(
        framing("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        (BodyFraming::Empty, true, false, false)
    );
    assert_eq!(
        framing("GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"),
        (BodyFraming::Empty, false, false, false),
        "a later keep-alive does not undo a close"
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n"),
        (BodyFraming::Length(7), true, true, false)
    );
    // Both: chunked frames it, the length is dropped, and the connection
    // closes after (the guard refuses it before that matters).
    let both = parse("POST / HTTP/1.1\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!((both.body, both.keep_alive), (BodyFraming::Chunked, false));
    assert!(
        both.parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none()
    );
    assert_eq!(
        (both.raw.content_length, both.raw.transfer_encoding),
        (true, true)
    );
    let mut buf =
        BytesMut::from(&b"GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\nGET /b"[..]);
    let first = head::parse(&mut buf, limits()).unwrap().unwrap();
    assert!(first.expect_continue);
    assert_eq!(first.parts.uri, "/a");
    assert_eq!(&buf[..], b"GET /b", "a pipelined head stays in the buffer");
    let upgrade = |raw: &str| parse(raw).unwrap().unwrap().wants_upgrade;
    assert!(upgrade(
        "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    ));
    assert!(upgrade("CONNECT a:1 HTTP/1.1\r\n\r\n"));
    assert!(
        !upgrade("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"),
        "HTTP/1.1 only"
    );
    assert!(!upgrade("GET / HTTP/1.1\r\n\r\n"));
    let refused = head::parse(
        &mut BytesMut::from(
            &b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        ),
        limits(),
    );
    assert_eq!(refused.unwrap_err().status, StatusCode::BAD_REQUEST);
}

/// The corpus of `tests/data/desync_cases.txt` (from aws/http-desync-guardian,
/// escaped one head a line): `\r`, `\n`, `\t`, `\\` and `\xHH`.
fn corpus() -> Vec<(String, Vec<u8>)> {
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            rest = tail;
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let (&code, tail) = rest.split_first().expect("an escape");
            rest = tail;
            out.push(match code {
                b'r' => b'\r',
                b'n' => b'\n',
                b't' => b'\t',
                b'\\' => b'\\',
                b'x' => {
                    let (hex, tail) = rest.split_at(2);
                    rest = tail;
                    u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap()
                }
                other => panic!("unknown escape {}", other as char),
            });
        }
        out
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/desync_cases.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.splitn(3, '\t').collect();
            let mut raw = unescape(fields[2]);
            raw.extend_from_slice(b"\r\n");
            // A body its framing can end: the last chunk, or as many bytes
            // as a small length asks for.
            let lower = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            let length = lower
                .split("content-length:")
                .nth(1)
                .and_then(|v| v.split("\r\n").next())
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n <= 64);
            if lower.contains("transfer-encoding") {
                raw.extend_from_slice(b"0\r\n\r\n");
            } else if let Some(n) = length {
                raw.extend(std::iter::repeat_n(b'x', n));
            }
            (fields[1].to_owned(), raw)
        })
        .collect()
}

#[test]
fn the_new_parser_reads_the_desync_corpus_as_sitio_does_today() {
    let corpus = corpus();
    assert!(corpus.len() > 150, "the whole corpus is loaded");
    assert_alike(&corpus, 20);
}

/// What the client reads from sitio's own server side for `input`.
fn by_own(input: &[u8]) -> String {
    String::from_utf8_lossy(&crate::fuzzing::serve_bytes(input)).into_owned()
}

/// What the client reads from hyper's server side alone for `input`.
fn by_hyper(input: &[u8]) -> String {
    String::from_utf8_lossy(&crate::fuzzing::serve_bytes_by_hyper(input)).into_owned()
}

/// The own side answers `input` once, 400 for its body, and closes; the
/// comparison with hyper's side allows it.
fn assert_refused_as_malformed_and_closed(input: &[u8]) {
    let own = by_own(input);
    assert!(own.contains("<p>malformed request body</p>"), "{own}");
    assert_eq!(own.matches("HTTP/1.1 ").count(), 1, "closed after: {own}");
    assert!(crate::fuzzing::served_alike(input).is_ok());
}

/// Every input of `named` served whole by sitio's own server side and by
/// hyper's: the client reads the same bytes (dates aside). Most are not
/// served by the own side at all (a body, HTTP/1.0, a refused head): they
/// check that the hand-over to hyper loses and repeats nothing.
fn assert_served_alike(named: &[(String, Vec<u8>)]) {
    let differ: Vec<String> = named
        .iter()
        .filter_map(|(name, input)| {
            crate::fuzzing::served_alike(input)
                .err()
                .map(|e| format!("{name}:\n{e}"))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        named.len(),
        differ.join("\n\n")
    );
}

#[test]
fn the_own_server_side_answers_as_hyper_does() {
    let mut named: Vec<(String, Vec<u8>)> = cases()
        .into_iter()
        .map(|input| (String::from_utf8_lossy(&input).replace("\r\n", "|"), input))
        .collect();
    // Keep-alive sequences: bodiless requests back to back, pipelined, then
    // one hyper serves, then bodiless ones again on the same connection.
    for sequence in [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD /photos/1.svg HTTP/1.1\r\nHost: a\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        // Found by the `server_side` fuzz target: a chunked body's end was
        // handed to the exchange one ask after its data (the service got it
        // after its answer), and the demo service, which answers before it
        // reads, closed its connection; sitio reused it for the next request
        // (502). The whole body now goes with the head (`client_body`).
        "QPOST /ec^o HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n2PO",
        "POST /nowhere HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nPOST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
        // Trailers of the service's answer reach a client that takes them.
        "GET /echo HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nX-Echo-Trailers: 1\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\nX-Echo-Trailers: 1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: a\r\nTE: gzip, trailers\r\nX-Echo-Trailers: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-In: 1\r\n\r\nGET /echo HTTP/1.0\r\nTE: trailers\r\nX-Echo-Trailers: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        // Upgrades: the service switches (and echoes through the tunnel),
        // or does not; bytes sent before the `101` go through the tunnel.
        "GET /switch HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nsent early",
        "GET /switch HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\nContent-Length: 3\r\n\r\nabcdef",
        "GET /switch HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /switch HTTP/1.0\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade, keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /nowhere HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        "POST /x HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHo",
        "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        named.push((sequence.replace("\r\n", "|"), sequence.as_bytes().to_vec()));
    }
    assert_served_alike(&named);
    let te = b"GET /echo HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nX-Echo-Trailers: 1\r\n\r\n";
    let own = by_own(te);
    assert!(own.contains("\r\n0\r\nx-sum: 1\r\n\r\n"), "{own}");
    // The tunnel echoes what was sent early, then the closing request.
    let switch =
        b"GET /switch HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nearly";
    let own = by_own(switch);
    let (head, tunnel) = own.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{own}"
    );
    assert!(tunnel.starts_with("earlyGET /end HTTP/1.1\r\n"), "{own}");
}

#[test]
fn the_own_server_side_answers_the_desync_corpus_as_hyper_does() {
    assert_served_alike(&corpus());
}

#[test]
fn a_refused_head_leaves_the_buffer_as_it_was() {
    let raw = &b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n"[..];
    let mut buf = BytesMut::from(raw);
    assert!(head::parse(&mut buf, limits()).is_err());
    assert_eq!(&buf[..], raw, "hyper reads the same bytes again");
}

/// Found by the `server_side` fuzz target: a head with both framing fields,
/// pipelined behind another in one read. The own side reads its raw fields
/// and the guard refuses it for that; with hyper's side alone, `head_scan`
/// misses them (it reads the first head of a read only) and the guard
/// refuses it for its next fault. Both refuse it, with 400 and a close.
#[test]
fn a_pipelined_head_with_both_framing_fields_is_refused_for_them() {
    let input = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
        GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\
        Content-Length: 5\r\n\r\n0\r\n\r\n";
    let own = by_own(input);
    let hyper = by_hyper(input);
    assert!(
        own.contains("both Content-Length and Transfer-Encoding"),
        "{own}"
    );
    assert!(hyper.contains("more than one Host header"), "{hyper}");
    assert_eq!(own.matches("HTTP/1.1 400").count(), 1, "{own}");
    assert!(crate::fuzzing::served_alike(input).is_ok());
}

/// Found by the `server_side` fuzz target: the same head pipelined behind
/// a bodiless request. With hyper's side alone it is forwarded (`head_scan`
/// missed its length, hyper dropped it, the guard saw chunked framing) and
/// the connection closed after it; the own side refuses it.
#[test]
fn a_pipelined_head_with_both_framing_fields_is_not_forwarded() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
        GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let own = by_own(input);
    let hyper = by_hyper(input);
    assert!(
        own.contains("both Content-Length and Transfer-Encoding"),
        "{own}"
    );
    assert_eq!(
        hyper.matches("HTTP/1.1 404").count(),
        1,
        "forwarded: {hyper}"
    );
    assert!(crate::fuzzing::served_alike(input).is_ok());
    let refused_twice = [&input[..], &input[..]].concat();
    assert!(
        crate::fuzzing::served_alike(&refused_twice).is_ok(),
        "the connection closes at the refusal"
    );
}

/// Found by the `server_side` fuzz target: a head hyper cannot parse after
/// an HTTP/1.0 keep-alive exchange. hyper's own connection answers it
/// `HTTP/1.0 400` (the previous request's version); the own side hands it
/// to a fresh hyper connection, which answers `HTTP/1.1 400` with
/// `connection: close`. Both close after it: an allowed difference.
#[test]
fn an_unparsable_head_after_an_http10_exchange_is_refused_by_both() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
        GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n\
        GET / HTTP/1.1\r\n\r2";
    let own = by_own(input);
    let hyper = by_hyper(input);
    assert_eq!(own.matches("HTTP/1.1 400 Bad Request").count(), 1, "{own}");
    assert_eq!(
        hyper.matches("HTTP/1.0 400 Bad Request").count(),
        1,
        "{hyper}"
    );
    assert!(crate::fuzzing::served_alike(input).is_ok());
    // Nothing is answered after the 400 on either side.
    let twice = [&input[..], b"GET /x HTTP/1.1\r\n\r\n"].concat();
    assert!(
        crate::fuzzing::served_alike(&twice).is_ok(),
        "the connection closes at the 400"
    );
}

/// Chunked request bodies, which the own side now reads itself (`chunked`):
/// each served both ways to a service that answers with what it read of
/// the body (`/echo`), so a byte read differently shows in the answer.
#[test]
fn the_own_server_side_reads_chunked_bodies_as_hyper_does() {
    let extension = |n: usize| format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(n));
    let trailers = |n: usize| {
        let lines: String = (0..n).map(|i| format!("X-{i}: y\r\n")).collect();
        format!("0\r\n{lines}\r\n")
    };
    let sized = |n: usize| format!("0\r\nX: {}\r\n\r\n", "y".repeat(n - "X: \r\n\r\n".len()));
    let max = Config::default().max_headers;
    let mut bodies: Vec<String> = [
        "5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "0\r\n\r\n",
        "000\r\n\r\n",
        "00000000000000000005\r\nhello\r\n0\r\n\r\n",
        "5;a=b\r\nhello\r\n0;c=\"d\"\r\n\r\n",
        "5 \t;x\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nX-A: 1\r\nx-b: two\r\nX-A: 3\r\n\r\n",
        "0\r\nA: 1\n\r\nB: 2\r\n\r\n",
        // No size: not the last chunk (`httparse::parse_chunk_size` reads
        // it as one).
        "\r\n\r\n",
        ";x\r\nX: y\r\n\r\n",
        ";x\r\n5\r\nhello\r\n0\r\n\r\n",
        "g\r\n",
        "5 5\r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5;a\nb\r\nhello\r\n0\r\n\r\n",
        "10000000000000000\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "0\r\nA 1\r\n\r\n",
        "0\r\nA: 1\nB: 2\r\n\r\n",
        "0\r\n: 1\r\n\r\n",
        "0\r\nA: \x01\r\n\r\n",
        // Cut short: the harness's closing request follows, read as the body.
        "5\r\nhel",
        "0\r\n",
    ]
    .map(String::from)
    .to_vec();
    bodies.extend([
        extension(16 * 1024 - 1),
        extension(16 * 1024),
        trailers(max),
        trailers(max + 1),
        sized(16 * 1024 - 1),
        sized(16 * 1024),
    ]);
    let mut named = Vec::new();
    for body in &bodies {
        for head in [
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /nowhere HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            // Then a request on the same connection: read only if the body
            // ended where hyper's side says.
            let input = format!("{head}{body}GET /echo HTTP/1.1\r\nHost: a\r\n\r\n");
            let shown: String = input.chars().take(300).collect();
            named.push((shown.replace("\r\n", "|"), input.into_bytes()));
        }
    }
    assert_served_alike(&named);
    // The comparison sees bodies: the service's echo of a good one.
    let good = &named[0].1;
    let own = by_own(good);
    assert!(own.contains("data: b\"hello\""), "{own}");
    assert!(own.contains("transfer-encoding: [\"chunked\"]"), "{own}");
    let with_trailers = &named[4 * 7].1;
    let own = by_own(with_trailers);
    assert!(own.contains("\"x-a\": \"1\""), "{own}");
}

/// Found by the `server_side` fuzz target: a chunked body broken after its
/// third chunk, sent whole, to a path the service answers without reading
/// (404). The own side decodes what came of the body at once and refuses
/// it (400, `malformed request body`); hyper's side may relay the 404 it
/// got first. Both close the connection after: an allowed difference.
#[test]
fn a_broken_chunked_body_read_whole_is_refused_before_the_answer() {
    let input = b"POST /nowhere HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n1\r\n5;ext=1\r\nhell2\r\n\r\n\
        GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_refused_as_malformed_and_closed(input);
}

/// Found by the `server_side` fuzz target once the harness's body timeout
/// was short: a body that stalls (its chunk, or its length, promises more
/// than comes) was dropped by the own side with no answer; hyper's side
/// answers it 400 ("malformed request body") and closes. Both now do.
#[test]
fn a_stalled_request_body_is_answered_400_and_the_connection_closed() {
    for input in [
        &b"GPOST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nE0\r\n\r\nPO'Sc_echo HTTP/1"[..],
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ] {
        assert_refused_as_malformed_and_closed(input);
    }
}
