//! The response side against hyper's server: the same response, for the
//! same request, is sent by hyper (over an in-memory connection) and by
//! `send::response`; the client must read the same bytes (the date aside),
//! and the connection must persist after both or after neither.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::response::Asked;
use super::send::{self, Unwatched};
use crate::body::BoxError;
use crate::upstream::Lines;

/// A response body with the end and length hint a case asks for.
struct Canned {
    frames: VecDeque<Frame<Bytes>>,
    /// `is_end_stream` once the frames are out (else one more poll says so).
    ends_known: bool,
    hint: Option<u64>,
}

impl HttpBody for Canned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.ends_known && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.hint {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[derive(Clone)]
struct Case {
    request: &'static str,
    status: StatusCode,
    version: Version,
    reason: Option<&'static str>,
    fields: Vec<(&'static str, &'static str)>,
    body: Vec<&'static [u8]>,
    /// A trailers frame after the data, with these fields.
    trailers: Option<&'static [(&'static str, &'static str)]>,
    ends_known: bool,
    hint: Option<u64>,
}

impl Case {
    fn response(&self) -> Response<Canned> {
        let mut frames: VecDeque<Frame<Bytes>> = self
            .body
            .iter()
            .map(|b| Frame::data(Bytes::from_static(b)))
            .collect();
        if let Some(fields) = self.trailers {
            let mut t = HeaderMap::new();
            for (name, value) in fields {
                t.append(*name, value.parse().unwrap());
            }
            frames.push_back(Frame::trailers(t));
        }
        let mut res = Response::new(Canned {
            frames,
            ends_known: self.ends_known,
            hint: self.hint,
        });
        *res.status_mut() = self.status;
        *res.version_mut() = self.version;
        for (name, value) in &self.fields {
            res.headers_mut().append(*name, value.parse().unwrap());
        }
        if let Some(reason) = self.reason {
            let reason = hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).unwrap();
            res.extensions_mut().insert(reason);
        }
        res
    }

    fn asked(&self) -> Asked {
        asked_by(self.request)
    }
}

/// What `request` asks of its response's framing.
fn asked_by(request: &str) -> Asked {
    let http10 = request.contains("HTTP/1.0");
    let te = request
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("te: "))
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    Asked {
        head: request.starts_with("HEAD"),
        keep_alive: !request.contains("close") && (!http10 || request.contains("keep-alive")),
        http10,
        trailers: te,
        connect: request.starts_with("CONNECT"),
    }
}

/// What the client read, with the date's value blanked, and whether the
/// connection stayed open after it.
type Seen = (String, bool);

fn blank_date(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    match text.find("date: ") {
        Some(at) if text.len() >= at + 6 + 29 => {
            format!("{}date: <now>{}", &text[..at], &text[at + 6 + 29..])
        }
        _ => text,
    }
}

/// Reads until the end of stream or until nothing more comes (paused time:
/// the timeout fires once every task waits).
async fn read_all(client: &mut tokio::io::DuplexStream) -> Seen {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (blank_date(&seen), false),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => return (blank_date(&seen), true),
        }
    }
}

async fn by_hyper(case: &Case) -> Seen {
    by_hyper_with(case.request, case.response()).await
}

async fn by_hyper_with(request: &str, res: Response<Canned>) -> Seen {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let res = Arc::new(Mutex::new(Some(res)));
    let service = hyper::service::service_fn(move |_req| {
        let res = res.lock().unwrap().take().unwrap();
        async move { Ok::<_, std::convert::Infallible>(res) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let task = tokio::spawn(conn);
    client.write_all(request.as_bytes()).await.unwrap();
    let seen = read_all(&mut client).await;
    task.abort();
    seen
}

async fn by_sitio(case: &Case) -> Seen {
    by_sitio_with((case.response(), None), case.asked()).await
}

async fn by_sitio_with(res: (Response<Canned>, Option<Box<Lines>>), asked: Asked) -> Seen {
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let (mut out, mut spare) = (Vec::new(), None);
    let sent = send::response(
        &mut server,
        res,
        asked,
        (&mut out, &mut spare),
        &mut Unwatched,
    )
    .await;
    let persists = sent.unwrap_or(false);
    if !persists {
        drop(server);
    }
    let (bytes, open) = read_all(&mut client).await;
    (bytes, open && persists)
}

fn base() -> Case {
    Case {
        request: "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
        status: StatusCode::OK,
        version: Version::HTTP_11,
        reason: None,
        fields: vec![("content-type", "text/plain")],
        body: vec![b"hello"],
        trailers: None,
        ends_known: true,
        hint: Some(5),
    }
}

/// A body's frames, whether its end is known once they are out, its hint.
type Body = (Vec<&'static [u8]>, bool, Option<u64>);

/// Every variation of one thing from `base`, and some of two.
fn cases() -> Vec<Case> {
    let big: &'static [u8] = Box::leak(vec![b'x'; 10_010].into_boxed_slice());
    let mut out = Vec::new();
    let requests = REQUESTS;
    let bodies: Vec<Body> = vec![
        (vec![b"hello"], true, Some(5)),
        (vec![], true, Some(0)),
        (vec![], false, None),
        (vec![b"hel", b"lo"], true, None),
        (vec![b"hel", b"", b"lo"], false, None),
        (vec![b"hel", b"lo"], false, Some(5)),
        (vec![big, b"tail"], true, None),
        (vec![big], true, Some(10_010)),
        (vec![b"hello", b" world"], true, Some(5)),
    ];
    let fields: Vec<Vec<(&'static str, &'static str)>> = vec![
        vec![],
        vec![("content-length", "5")],
        vec![("content-length", "5"), ("content-length", "5")],
        vec![("transfer-encoding", "chunked")],
        vec![("transfer-encoding", "gzip")],
        vec![("transfer-encoding", "gzip"), ("connection", "x")],
        vec![("connection", "keep-alive")],
        vec![("connection", "close")],
        vec![("connection", "upgrade"), ("connection", "x-a")],
        vec![("date", "Mon, 01 Jan 2001 00:00:00 GMT")],
        vec![
            ("trailer", "x-checksum"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ],
        vec![("x-a", "1"), ("content-length", "5"), ("x-b", "2")],
    ];
    for request in requests {
        for (body, ends_known, hint) in &bodies {
            for f in &fields {
                // hyper asserts (in debug builds) that a stated length is the
                // body's known one; a body never claims a false one here.
                let stated = f.iter().any(|(n, _)| *n == "content-length");
                if stated && hint.is_some_and(|h| h != 5) {
                    continue;
                }
                out.push(Case {
                    request,
                    body: body.clone(),
                    ends_known: *ends_known,
                    hint: *hint,
                    fields: f.clone(),
                    ..base()
                });
            }
        }
    }
    for status in [201, 204, 304, 404, 500, 103] {
        for request in requests {
            let status = StatusCode::from_u16(status).unwrap();
            out.push(Case {
                request,
                status,
                ..base()
            });
            out.push(Case {
                request,
                status,
                hint: None,
                ..base()
            });
        }
    }
    out.push(Case {
        reason: Some("Fine Thanks"),
        ..base()
    });
    out.push(Case {
        status: StatusCode::NOT_FOUND,
        reason: Some("Nope"),
        ..base()
    });
    for request in requests {
        out.push(Case {
            request,
            version: Version::HTTP_10,
            hint: None,
            ..base()
        });
        out.push(Case {
            request,
            version: Version::HTTP_10,
            fields: vec![("connection", "keep-alive")],
            ..base()
        });
    }
    out.push(Case {
        trailers: Some(&[("x-checksum", "abc")]),
        hint: None,
        ..base()
    });
    // Trailers, for requests that take them and requests that do not: only
    // those the response's `Trailer` names go, and of those only fields
    // that may trail; none at all without `TE: trailers`.
    let named: [&[(&str, &str)]; 6] = [
        &[],
        &[("trailer", "x-checksum")],
        &[
            ("trailer", "X-Checksum, content-type,x-b"),
            ("trailer", "x-c"),
        ],
        &[("trailer", "x-other")],
        &[("trailer", "bad name, ")],
        &[("trailer", "x-checksum"), ("content-length", "5")],
    ];
    let trailers: &[(&str, &str)] = &[
        ("x-checksum", "abc"),
        ("content-type", "text/x"),
        ("x-b", "1"),
        ("x-b", "2"),
        ("x-c", "3"),
    ];
    for request in REQUESTS.iter().chain(&TAKE_TRAILERS) {
        for fields in named {
            for hint in [None, Some(5)] {
                if hint.is_none() && fields.iter().any(|(n, _)| *n == "content-length") {
                    continue;
                }
                out.push(Case {
                    request,
                    fields: fields.to_vec(),
                    body: vec![b"hel", b"lo"],
                    trailers: Some(trailers),
                    hint,
                    ..base()
                });
            }
        }
    }
    // Upgrades: a `101` ends the connection's HTTP whatever was asked, as
    // does a 2xx to `CONNECT`, neither with a body or framing fields (a
    // framing field in a 2xx to `CONNECT` is an error); other answers to
    // them are framed as any.
    let framing: [&[(&str, &str)]; 4] = [
        &[],
        &[("content-length", "5")],
        &[("transfer-encoding", "chunked")],
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("trailer", "x-a"),
        ],
    ];
    for request in UPGRADES.iter().chain(&REQUESTS[..2]) {
        for status in [101, 200, 204, 403] {
            for fields in framing {
                for hint in [Some(5), None] {
                    out.push(Case {
                        request,
                        status: StatusCode::from_u16(status).unwrap(),
                        fields: fields.to_vec(),
                        hint,
                        ..base()
                    });
                }
            }
        }
    }
    out.push(Case {
        fields: vec![("content-length", "5"), ("content-length", "6")],
        hint: None,
        ..base()
    });
    out.push(Case {
        fields: vec![("content-length", "five")],
        hint: None,
        ..base()
    });
    out.push(Case {
        fields: vec![("content-length", "5"), ("transfer-encoding", "chunked")],
        hint: None,
        ..base()
    });
    out
}

#[tokio::test(start_paused = true)]
async fn responses_go_out_as_hyper_sends_them() {
    let cases = cases();
    let mut differ = Vec::new();
    for case in &cases {
        let (hyper, sitio) = (by_hyper(case).await, by_sitio(case).await);
        if hyper != sitio {
            differ.push(format!(
                "{:?} {} {:?} {:?} body {:?} known-end {} hint {:?}:\n hyper {hyper:?}\n sitio {sitio:?}",
                case.request, case.status, case.version, case.fields, case.body.iter().map(|b| b.len()).collect::<Vec<_>>(), case.ends_known, case.hint
            ));
        }
    }
    assert!(cases.len() > 600, "{} cases", cases.len());
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        cases.len(),
        differ.join("\n")
    );
}

/// The requests every case is answered for.
const REQUESTS: [&str; 6] = [
    "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    "HEAD / HTTP/1.1\r\nhost: a\r\n\r\n",
    "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
    "GET / HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\n\r\n",
    "HEAD / HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\n\r\n",
];

/// Requests that ask for an upgrade (hyper's `wants_upgrade`).
const UPGRADES: [&str; 4] = [
    "GET /chat HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    "GET /chat HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: websocket\r\n\r\n",
    "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
    "CONNECT a:443 HTTP/1.0\r\nhost: a:443\r\n\r\n",
];

/// Requests whose `TE` lists `trailers` (the first two say so).
const TAKE_TRAILERS: [&str; 4] = [
    "GET / HTTP/1.1\r\nhost: a\r\nte: trailers\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: a\r\nte: gzip, Trailers\r\nconnection: close\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: a\r\nte: gzip\r\n\r\n",
    "GET / HTTP/1.0\r\nhost: a\r\nte: trailers\r\nconnection: keep-alive\r\n\r\n",
];

/// Service heads for the lines: the usual ones, and every field the
/// reading leaves out, gives up on, or that changes the client's framing.
const SERVICE_HEADS: [&str; 16] = [
    "HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Thu, 03 Dec 2026 08:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nLast-Modified: Thu, 03 Dec 2026 07:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"1-5\"\r\nAccept-Ranges: bytes\r\n\r\n",
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Mixed-Case: V\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nDate: Thu, 03 Dec 2026 08:00:00 GMT\r\n\r\n",
    "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n",
    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 204 No Content\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 5\r\nX-Obs: café\tx\r\n\r\n",
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
];

/// A body as the service connection gives it: `None`, known to be empty;
/// `Some(None)`, of unknown length.
fn service_body(body: Option<Option<u64>>) -> Canned {
    let (frames, ends_known, hint) = match body {
        None => (vec![], true, Some(0)),
        Some(Some(n)) => (vec![Bytes::from(vec![b'x'; n as usize])], true, Some(n)),
        Some(None) => (
            vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")],
            false,
            None,
        ),
    };
    Canned {
        frames: frames.into_iter().map(Frame::data).collect(),
        ends_known,
        hint,
    }
}

/// `seen` with the head's field lines in name order (a stable sort: one
/// name's lines keep theirs), for heads whose lines keep the service's
/// order where a map groups each name's fields together.
fn fields_by_name((text, open): Seen) -> Seen {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (text, open);
    };
    let mut lines: Vec<&str> = head.split("\r\n").collect();
    lines[1..].sort_by_key(|line| line.split(':').next().unwrap_or_default().to_owned());
    (format!("{}\r\n\r\n{body}", lines.join("\r\n")), open)
}

/// A service's head whose fields were kept as the client's lines goes out
/// as hyper sends the same head read into a map (the order of different
/// names aside), for every kind of request; and the usual heads are kept
/// as lines.
#[tokio::test(start_paused = true)]
async fn heads_kept_as_lines_go_out_as_hyper_sends_them_from_a_map() {
    let (mut compared, mut as_lines) = (0, 0);
    for service in SERVICE_HEADS {
        for request in REQUESTS.iter().chain(&TAKE_TRAILERS) {
            let head_request = request.starts_with("HEAD");
            let read = |lines| {
                crate::upstream::h1::head_for_client(service.as_bytes(), head_request, lines)
            };
            let Some((map, body, None)) = read(false) else {
                panic!("{service:?} not read into a map");
            };
            let Some((parts, lines_body, lines)) = read(true) else {
                panic!("{service:?} not read for lines");
            };
            assert_eq!(body, lines_body);
            as_lines += usize::from(lines.is_some());
            let hyper = by_hyper_with(request, Response::from_parts(map, service_body(body))).await;
            let res = Response::from_parts(parts, service_body(body));
            let sitio = by_sitio_with((res, lines.map(Box::new)), asked_by(request)).await;
            assert_eq!(
                fields_by_name(hyper),
                fields_by_name(sitio),
                "{service:?} for {request:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(
        compared,
        SERVICE_HEADS.len() * (REQUESTS.len() + TAKE_TRAILERS.len())
    );
    assert!(as_lines >= 12 * REQUESTS.len(), "{as_lines} kept as lines");
}
