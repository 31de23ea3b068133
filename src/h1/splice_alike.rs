//! The splice (`crate::splice`) held against the map's way on any bytes:
//! the service must get, name by name, the values the edited field map
//! would have sent (unit tests here, the `request_head` fuzz target).

use std::collections::BTreeMap;

use bytes::BytesMut;
use http::HeaderValue;

use crate::h1::head::{self, Limits, RequestHead};
use crate::upstream::h1::replay::{encode_head, encode_with};

fn limits() -> Limits {
    Limits {
        splice: true,
        ..Limits::of(&crate::config::Config::default())
    }
}

pub(crate) fn parse(wire: &[u8]) -> Option<RequestHead> {
    head::parse(&mut BytesMut::from(wire), limits())
        .ok()
        .flatten()
}

/// A head as its reader sees it: request line, and each name's values
/// in order (the order of different names, and the case of names, may
/// differ between the two ways).
type Read = (String, String, BTreeMap<String, Vec<Vec<u8>>>);

fn read(head: &[u8]) -> Result<Read, String> {
    let mut fields = vec![httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        other => return Err(format!("the service cannot read it: {other:?}")),
    }
    let mut by_name: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for f in req.headers.iter() {
        let name = f.name.to_ascii_lowercase();
        by_name.entry(name).or_default().push(f.value.to_vec());
    }
    let line = format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""));
    Ok((line, format!("{:?}", req.version), by_name))
}

pub(crate) const IP: HeaderValue = HeaderValue::from_static("192.0.2.7");
pub(crate) const SERVICE: HeaderValue = HeaderValue::from_static("127.0.0.1:8087");

/// The head at the start of `wire` as the service gets it both ways:
/// `Ok(None)` when it is not a whole head sitio forwards,
/// `Ok(Some(spliced))` when both agree (or only the map's way takes
/// it), `Err` with both readings when they differ.
pub(crate) fn check(wire: &[u8]) -> Result<Option<bool>, String> {
    let Some(mut mapped) = parse(wire) else {
        return Ok(None);
    };
    let len = match mapped.body {
        head::BodyFraming::Length(n) if n > 1 << 16 => return Ok(None),
        head::BodyFraming::Length(n) => Some(n as usize),
        head::BodyFraming::Chunked => None,
        _ => Some(0),
    };
    crate::headers::to_upstream(&mut mapped.parts, &IP, false, &SERVICE);
    let Ok(by_map) = read(&encode_head(mapped.parts, len)) else {
        // What the map's way sends the service's parser refuses: not
        // the splice's to match.
        return Ok(None);
    };
    let Some(spliced) = parse(wire) else {
        return Err("parsed once, not twice".into());
    };
    let Some(splice) = spliced.splice.as_ref() else {
        return Ok(Some(false));
    };
    let target = spliced
        .parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let added = crate::splice::Added {
        service: &SERVICE,
        client_ip: &IP,
    };
    let bytes = splice.encode(&spliced.wire, &spliced.parts.method, target, &added);
    let by_bytes = read(&encode_with(spliced.parts, len, Some(bytes)))?;
    if by_bytes == by_map {
        Ok(Some(true))
    } else {
        Err(format!("spliced {by_bytes:?}, mapped {by_map:?}"))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{IP, SERVICE, check, parse};
    use crate::h1::head::{self, Limits};

    const LINES: &[&str] = &[
        "GET /a?b=1 HTTP/1.1",
        "POST /upload HTTP/1.1",
        "GET / HTTP/1.0",
        "HEAD /x HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "GET http://other.example/abs HTTP/1.1",
    ];

    const FIELDS: &[&str] = &[
        "Host: svc.local",
        "host: svc.local",
        "Connection: keep-alive",
        "Connection: close",
        "connection: Keep-Alive, close",
        "Connection: x-secret",
        "Connection: ,keep-alive,",
        "X-Secret: 1",
        "Close: yes",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "X-Forwarded-For: 10.0.0.1",
        "x-forwarded-for: 10.0.0.2, 10.0.0.3",
        "X-Forwarded-For:   ",
        "X-Forwarded-For: caf\u{e9}",
        "X-Forwarded-Proto: https",
        "Expect: 100-continue",
        "Accept:   text/html  ",
        "User-Agent: curl/8.5",
        "Cookie: a=1",
        "cookie: b=2",
        "Content-Length: 5",
        "Content-Length: 05",
        "Content-Length: 0",
        "TE: trailers",
        "Upgrade: websocket",
        "Transfer-Encoding: chunked",
        "X-Empty:",
    ];

    #[test]
    fn a_spliced_head_reaches_the_service_as_the_map_would_send_it() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut spliced, mut mapped) = (0, 0);
        for _ in 0..20_000 {
            let line = LINES[next() as usize % LINES.len()];
            let mut wire = format!("{line}\r\n").into_bytes();
            let count = next() % 7;
            let mut body = 0;
            for _ in 0..count {
                let field = FIELDS[next() as usize % FIELDS.len()];
                if field.starts_with("Content-Length: 5") {
                    body = 5;
                }
                wire.extend_from_slice(field.as_bytes());
                // Now and then a line that ends in a bare LF.
                wire.extend_from_slice(if next() % 40 == 0 { b"\n" } else { b"\r\n" });
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend(std::iter::repeat_n(b'x', body));
            let shown = String::from_utf8_lossy(&wire);
            match check(&wire) {
                Ok(Some(true)) => spliced += 1,
                Ok(Some(false)) => mapped += 1,
                Ok(None) => {}
                Err(e) => panic!("{shown:?}: {e}"),
            }
        }
        // Both ways were taken often: the comparison says something.
        assert!(
            spliced > 4_000 && mapped > 2_000,
            "{spliced} spliced, {mapped} mapped"
        );
    }

    #[test]
    fn heads_the_plan_does_not_cover_take_the_maps_way() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nClose: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1\r\nX-Forwarded-For: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nHost: a\nAccept: */*\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
              Expect: 100-continue\r\nProxy-Connection: x\r\nX-Forwarded-For: 1\r\n\r\n",
        ];
        for wire in cases {
            let head = parse(wire).expect("a head");
            let shown = String::from_utf8_lossy(wire);
            assert!(head.splice.is_none(), "{shown:?} has no splice");
        }
        let plain = b"GET /p?q HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
        assert!(parse(plain).expect("a head").splice.is_some());
        let off = head::parse(
            &mut BytesMut::from(&plain[..]),
            Limits::of(&Default::default()),
        );
        assert!(
            off.expect("a head").expect("whole").splice.is_none(),
            "not asked for"
        );
    }

    #[test]
    fn a_spliced_head_keeps_the_clients_lines_as_they_came() {
        let wire =
            b"GET /p?q=1 HTTP/1.0\r\nUser-Agent: Mozilla/5.0 (X11)\r\nConnection: keep-alive\r\n\
                     X-Forwarded-For: 10.1.1.1\r\nAccept:  */*\r\n\r\n";
        let head = parse(wire).expect("a head");
        let added = crate::splice::Added {
            service: &SERVICE,
            client_ip: &IP,
        };
        let bytes =
            head.splice
                .expect("a splice")
                .encode(wire, &head.parts.method, "/p?q=1", &added);
        assert_eq!(
            &bytes[..],
            &b"GET /p?q=1 HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept:  */*\r\n\
               host: 127.0.0.1:8087\r\nx-forwarded-for: 10.1.1.1, 192.0.2.7\r\n\
               x-forwarded-proto: http\r\n\r\n"[..]
        );
    }

    /// A chunked upload's head goes as its bytes, its one plain `chunked`
    /// kept: the service reads what the map's way would send.
    #[test]
    fn a_chunked_uploads_head_is_spliced() {
        let wire = b"PUT /upload/file HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check(wire), Ok(Some(true)));
        let head = parse(wire).expect("a head");
        assert!(head.splice.expect("a splice").chunked);
    }
}
