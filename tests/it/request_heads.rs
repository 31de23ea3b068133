//! The client's request head on its way to the service: sent as the bytes
//! it came in (hop-by-hop lines cut, forwarding fields added) when no
//! decorator has request hooks, and from an edited field map when one
//! does. The service gets the same fields with the same values either way;
//! only the case of names and the order of different names may differ.

use std::sync::{Arc, Mutex};

use sitio::{Action, Decorator, Decorators, Exchange, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// Has a request hook that changes nothing: the head goes to the service
/// through a field map.
struct ReadsRequests;

impl Decorator for ReadsRequests {
    type State = ();

    fn on_request(
        &self,
        head: &mut http::request::Parts,
        _: &mut (),
        _: &mut Exchange,
    ) -> Action<'_> {
        assert!(head.headers.contains_key("host") || head.version == http::Version::HTTP_10);
        Action::Continue
    }
}

/// A keep-alive service that keeps every request head it gets (bodies of
/// known length read and dropped) and answers each with `ok`.
async fn recording_service() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let heads = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request_head(&mut s, &mut buf).await {
                    let len = fields(&head)
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
                    let mut chunk = [0u8; 4096];
                    while buf.len() < len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..len);
                    heads.lock().unwrap().push(head);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, heads)
}

/// The fields of a head (names as sent, values trimmed), in order.
fn fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect()
}

/// The request line, and the fields sorted by name (each name's values
/// keep their order).
fn reading(head: &str) -> (String, Vec<(String, String)>) {
    let mut sorted = fields(head);
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    (head.split("\r\n").next().unwrap().to_owned(), sorted)
}

/// Sends `request` on a new connection and returns the head the service got.
async fn forwarded(
    addr: std::net::SocketAddr,
    request: &str,
    heads: &Mutex<Vec<String>>,
) -> String {
    let before = heads.lock().unwrap().len();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let res = send_on(&mut s, &mut buf, request.as_bytes()).await;
    assert_eq!(res.status, 200, "{request:?}");
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), before + 1, "one request reached the service");
    heads[before].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_reaches_the_service_alike_whether_a_decorator_reads_it_or_not() {
    let (port, heads) = recording_service().await;
    let as_bytes = Sitio::start(config_for(port), Decorators::none()).await;
    let reads = Decorators::builder().with(ReadsRequests).build();
    let in_a_map = Sitio::start(config_for(port), reads).await;
    let requests = [
        "GET /a?b=1 HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: V\r\nCookie: x=1\r\nAccept: */*\r\n\
         cookie: y=2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nX-Mixed-Case: V\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Proto: https\r\nX-Mixed-Case: V\r\n\r\n",
        "GET / HTTP/1.0\r\nX-Mixed-Case: V\r\nConnection: keep-alive\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Mixed-Case: V\r\n\r\nhello",
        "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent:   spaced   \r\nX-Mixed-Case: V\r\n\r\n",
    ];
    for request in requests {
        let spliced = forwarded(as_bytes.addr, request, &heads).await;
        let mapped = forwarded(in_a_map.addr, request, &heads).await;
        assert_eq!(reading(&spliced), reading(&mapped), "{request:?}");
        let (line, got) = reading(&spliced);
        assert!(line.ends_with(" HTTP/1.1"), "{line}");
        let values = |name: &str| {
            got.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        for hop in ["connection", "keep-alive", "proxy-connection"] {
            assert!(values(hop).is_empty(), "{hop} in {spliced:?}");
        }
        assert_eq!(values("x-forwarded-for").len(), 1, "{spliced:?}");
        assert!(
            values("x-forwarded-for")[0].ends_with("127.0.0.1"),
            "{spliced:?}"
        );
        assert_eq!(values("host").len(), 1, "{spliced:?}");
        // Sent as the client's bytes: its names keep their case; the map's
        // way writes them in lowercase.
        assert!(spliced.contains("\r\nX-Mixed-Case: V\r\n"), "{spliced:?}");
        assert!(mapped.contains("\r\nx-mixed-case: V\r\n"), "{mapped:?}");
    }
    let spliced = forwarded(as_bytes.addr, requests[2], &heads).await;
    let (_, got) = reading(&spliced);
    assert!(got.contains(&("x-forwarded-for".into(), "203.0.113.9, 127.0.0.1".into())));
    assert!(got.contains(&("x-forwarded-proto".into(), "https".into())));
    as_bytes.stop().await;
    in_a_map.stop().await;
}
