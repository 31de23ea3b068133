//! The decorator API: hook order (tower's onion rule), short-circuits, status
//! hooks, body hooks, upstream-error hooks and completion summaries.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{request, response};
use sitio::{Action, Body, BodyFilter, Decorator, Decorators, Exchange, ProxyError, on_status};
use tokio::net::TcpListener;

use crate::common::backend::Backend;
use crate::common::*;

type Log = Arc<Mutex<Vec<String>>>;

/// Records every hook call as "<name>.<hook>"; optionally answers requests itself.
struct Recorder {
    name: &'static str,
    log: Log,
    answer: bool,
}

impl Recorder {
    fn push(&self, hook: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.{hook}", self.name));
    }
}

impl Decorator for Recorder {
    type State = ();

    fn on_request(&self, head: &mut request::Parts, _: &mut (), _: &mut Exchange) -> Action<'_> {
        self.push("request");
        head.headers.append("x-seen-by", self.name.parse().unwrap());
        if self.answer {
            return Action::Respond(sitio::response::text(418, "answered by a decorator"));
        }
        Action::Continue
    }
    fn on_response(&self, head: &mut response::Parts, _: &mut (), _: &mut Exchange) -> Action<'_> {
        self.push("response");
        head.headers
            .append("x-decorated-by", self.name.parse().unwrap());
        Action::Continue
    }
    fn on_complete(&self, _: &mut (), ex: &Exchange) {
        self.push(&format!("complete:{}", ex.status().unwrap().as_u16()));
    }
}

fn recorders(log: &Log, answer_at: Option<usize>) -> Decorators {
    let mut b = Decorators::builder();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        b = b.with(Recorder {
            name,
            log: log.clone(),
            answer: answer_at == Some(i),
        });
    }
    b.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_onion_order() {
    let backend = Backend::start().await;
    let log = Log::default();
    let sitio = Sitio::start(config_for(backend.port()), recorders(&log, None)).await;
    let res = raw_request(sitio.addr, b"GET /headers HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let seen = String::from_utf8(res.body).unwrap();
    assert!(
        seen.contains("x-seen-by: a\nx-seen-by: b\nx-seen-by: c\n"),
        "{seen}"
    );
    let decorated: Vec<_> = res
        .headers
        .iter()
        .filter(|(k, _)| k == "x-decorated-by")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(decorated, ["c", "b", "a"]);
    sitio.stop().await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a.request",
            "b.request",
            "c.request",
            "c.response",
            "b.response",
            "a.response",
            "c.complete:200",
            "b.complete:200",
            "a.complete:200"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decorator_that_answers_skips_the_inner_ones_and_the_service() {
    let backend = Backend::start().await;
    let log = Log::default();
    let sitio = Sitio::start(config_for(backend.port()), recorders(&log, Some(1))).await;
    let res = raw_request(sitio.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        (res.status, res.body.as_slice()),
        (418, &b"answered by a decorator"[..])
    );
    assert_eq!(res.header("x-decorated-by"), Some("a"));
    sitio.stop().await;
    assert_eq!(backend.requests(), 0);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a.request",
            "b.request",
            "a.response",
            "c.complete:418",
            "b.complete:418",
            "a.complete:418"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_status_overrides_only_its_status_and_keeps_the_connection() {
    let backend = Backend::start().await;
    let decorators = Decorators::builder()
        .with(on_status(404, |_, _| {
            Action::Respond(sitio::response::html(404, "<h1>Cool! 404 Page</h1>"))
        }))
        .build();
    let sitio = Sitio::start(config_for(backend.port()), decorators).await;
    let mut s = tokio::net::TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    let mut cases = vec![("/status/200", 200, &b"the service says 200\n"[..])];
    cases.extend([("/status/404", 404, &b"<h1>Cool! 404 Page</h1>"[..]); 8]);
    for (path, status, body) in cases {
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let res = read_response(&mut s, &mut buf, false).await.unwrap();
        assert_eq!((res.status, res.body.as_slice()), (status, body));
    }
    sitio.stop().await;
    // The replaced 404 bodies are drained in the background, so their upstream
    // connections are reused instead of one being closed per override (which
    // would take 8 or more here). A request racing a drain may open one more.
    assert!(
        backend.connections() <= 4,
        "{} upstream connections",
        backend.connections()
    );
}

/// Upper-cases bodies of responses under /headers, and records completions.
struct Shout(Arc<Mutex<Vec<(u16, u64, bool)>>>);

struct Upper;

impl BodyFilter for Upper {
    fn on_chunk(&mut self, chunk: &mut Bytes) {
        *chunk = Bytes::from(chunk.to_ascii_uppercase());
    }
}

impl Decorator for Shout {
    type State = ();

    fn on_response(&self, _: &mut response::Parts, _: &mut (), ex: &mut Exchange) -> Action<'_> {
        if ex.path() == "/headers" {
            ex.filter_response_body(Upper);
        }
        Action::Continue
    }
    fn on_complete(&self, _: &mut (), ex: &Exchange) {
        let latency = ex.latency().unwrap();
        let ttfb = ex.time_to_first_byte().unwrap();
        self.0.lock().unwrap().push((
            ex.status().unwrap().as_u16(),
            ex.bytes_out(),
            ttfb <= latency,
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_hooks_run_only_on_watched_exchanges_and_completion_is_reported() {
    let backend = Backend::start().await;
    let done = Arc::new(Mutex::new(Vec::new()));
    let decorators = Decorators::builder().with(Shout(done.clone())).build();
    let sitio = Sitio::start(config_for(backend.port()), decorators).await;
    let res = raw_request(sitio.addr, b"GET /headers HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        String::from_utf8(res.body)
            .unwrap()
            .starts_with("GET /HEADERS HTTP/1.1")
    );
    let res = raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.body, b"the service says 200\n");
    sitio.stop().await;
    let done = done.lock().unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.contains(&(200, 21, true)), "{done:?}");
}

struct Fallback;

impl Decorator for Fallback {
    type State = ();

    fn on_error(
        &self,
        err: &ProxyError,
        _: &mut (),
        _: &mut Exchange,
    ) -> Option<http::Response<Body>> {
        Some(sitio::response::text(
            200,
            format!("fallback after {}", err.kind()),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_hook_can_supply_the_response() {
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let decorators = Decorators::builder().with(Fallback).build();
    let sitio = Sitio::start(config_for(port), decorators).await;
    let res = raw_request(sitio.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, &b"fallback after connect-refused"[..])
    );
    sitio.stop().await;
}

/// Doubles every byte of a request body: the length changes, so the body
/// goes to the service chunked, never with the client's `Content-Length`.
struct Double;

impl BodyFilter for Double {
    fn on_chunk(&mut self, chunk: &mut Bytes) {
        *chunk = chunk
            .iter()
            .flat_map(|b| [*b, *b])
            .collect::<Vec<u8>>()
            .into();
    }
    fn on_end(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b"!"))
    }
}

struct DoubleRequests;

impl Decorator for DoubleRequests {
    type State = ();

    fn on_request(&self, _: &mut request::Parts, _: &mut (), ex: &mut Exchange) -> Action<'_> {
        ex.filter_request_body(Double);
        Action::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_filter_reframes_what_the_service_receives() {
    let backend = Backend::start().await;
    let decorators = Decorators::builder().with(DoubleRequests).build();
    let sitio = Sitio::start(config_for(backend.port()), decorators).await;
    let mut stream = tokio::net::TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    let body = "x".repeat(100_000);
    let raw = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let res = send_on(&mut stream, &mut buf, raw.as_bytes()).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.body.len(),
        200_001,
        "doubled, plus the end-of-body flush"
    );
    assert!(res.body.ends_with(b"xx!"));
    // The same connection goes on; a body-less request passes untouched.
    let res = send_on(
        &mut stream,
        &mut buf,
        b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(res.body, b"the service says 200\n");
    sitio.stop().await;
}
