//! The service's response head on its way to the client, read into the
//! client's lines when nothing reads it (no decorator with a response hook)
//! and into a field map when a decorator does: the client gets the same
//! head either way, but for the order of fields of different names.

use sitio::{Action, Decorator, Decorators, Exchange, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// What the service answers every request with: names in mixed case, a
/// cookie on each side of another field, a value beyond ASCII, hop-by-hop
/// fields, its own date and reason phrase.
const ANSWER: &[u8] = "HTTP/1.1 200 Fine Thanks\r\nServer: canned\r\nSet-Cookie: a=1\r\n\
X-Mixed-Case: V\r\nSet-Cookie: b=2\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\
X-Obs: café\r\nDate: Thu, 03 Dec 2026 08:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello"
    .as_bytes();

/// Has a response hook that changes nothing: the head reaches it, and
/// the client, through a field map.
struct ReadsResponses;

impl Decorator for ReadsResponses {
    type State = ();

    fn on_response(
        &self,
        head: &mut http::response::Parts,
        _: &mut (),
        _: &mut Exchange,
    ) -> Action<'_> {
        assert_eq!(head.headers.get_all("set-cookie").iter().count(), 2);
        Action::Continue
    }
}

/// The status line, the fields (name lowercased, value) in the order sent,
/// and the body of the one response to `request` on a new connection.
async fn answer(
    addr: std::net::SocketAddr,
    request: &str,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(got[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let fields: Vec<(String, String)> = lines
        .map(|l| {
            let (name, value) = l.split_once(": ").unwrap();
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    let mut body = got[end + 4..].to_vec();
    let want = if request.starts_with("HEAD") { 0 } else { 5 };
    while body.len() < want {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    (status, fields, body)
}

/// The fields sorted by name (a stable sort: each name's values keep
/// their order).
fn by_name(fields: &[(String, String)]) -> Vec<(String, String)> {
    let mut sorted = fields.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
}

/// The names, in the order sent.
fn names(fields: &[(String, String)]) -> Vec<&str> {
    fields.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_reaches_the_client_alike_whether_a_decorator_reads_it_or_not() {
    let port = canned_service(|_| Some(ANSWER)).await;
    let as_lines = Sitio::start(config_for(port), Decorators::none()).await;
    let reads = Decorators::builder().with(ReadsResponses).build();
    let in_a_map = Sitio::start(config_for(port), reads).await;
    let requests = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    ];
    for request in requests {
        let (status, fields, body) = answer(as_lines.addr, request).await;
        let (map_status, map_fields, map_body) = answer(in_a_map.addr, request).await;
        assert_eq!(status, map_status, "{request:?}");
        assert_eq!(by_name(&fields), by_name(&map_fields), "{request:?}");
        assert_eq!(body, map_body, "{request:?}");
        assert!(status.ends_with(" 200 Fine Thanks"), "{status}");
        let field = |name: &str| {
            fields
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(field("set-cookie"), ["a=1", "b=2"], "{request:?}");
        assert_eq!(field("x-obs"), ["café"], "{request:?}");
        assert_eq!(
            field("date"),
            ["Thu, 03 Dec 2026 08:00:00 GMT"],
            "{request:?}"
        );
        assert_eq!(field("content-length"), ["5"], "{request:?}");
        assert!(field("keep-alive").is_empty(), "{request:?}: {fields:?}");
        assert!(!field("connection").contains(&"keep-alive") || request.contains("HTTP/1.0"));
    }
    // A plain keep-alive answer kept as lines keeps the service's order;
    // a map groups each name's fields together.
    let (_, fields, _) = answer(as_lines.addr, requests[0]).await;
    let (_, map_fields, _) = answer(in_a_map.addr, requests[0]).await;
    let service_order = [
        "server",
        "set-cookie",
        "x-mixed-case",
        "set-cookie",
        "x-obs",
        "date",
        "content-length",
    ];
    assert_eq!(names(&fields), service_order);
    assert_eq!(
        names(&map_fields),
        [
            "server",
            "set-cookie",
            "set-cookie",
            "x-mixed-case",
            "x-obs",
            "date",
            "content-length"
        ]
    );
    as_lines.stop().await;
    in_a_map.stop().await;
}
