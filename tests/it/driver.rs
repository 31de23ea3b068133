//! The exchange driver is one: `Decorators::simulate` and real sockets run
//! the same phases, so they answer the same; and a panicking hook costs its
//! own exchange a 500, never the connection or the process.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{request, response};
use sitio::resilience::FaultInjection;
use sitio::resilience::faults::parse_delay;
use sitio::{
    Action, BodyFilter, Decorator, Decorators, ErrorKind, Exchange, ProxyError, Simulated,
};
use tokio::net::TcpStream;

use crate::common::*;

/// "Boring" → "Cool!", streaming (a match split across chunks waits).
#[derive(Default)]
struct Cool(BytesMut);

impl BodyFilter for Cool {
    fn on_chunk(&mut self, chunk: &mut Bytes) {
        self.0.extend_from_slice(chunk);
        let text = String::from_utf8_lossy(&self.0).replace("Boring", "Cool!");
        let keep = (1..6)
            .rev()
            .find(|&n| text.ends_with(&"Boring"[..n]))
            .unwrap_or(0);
        *chunk = Bytes::from(text[..text.len() - keep].to_owned());
        self.0 = BytesMut::from(&text.as_bytes()[text.len() - keep..]);
    }
    fn on_end(&mut self) -> Option<Bytes> {
        Some(self.0.split().freeze())
    }
}

struct Rewrite;

impl Decorator for Rewrite {
    type State = ();
    fn on_response(&self, _: &mut response::Parts, _: &mut (), ex: &mut Exchange) -> Action<'_> {
        ex.filter_response_body(Cool::default());
        Action::Continue
    }
}

fn chain() -> Decorators {
    Decorators::builder()
        .with(Rewrite)
        .with(FaultInjection {
            delay: Some(parse_delay("100%:30ms").unwrap()),
            abort: None,
            routes: Default::default(),
        })
        .build()
}

/// The head fields that describe the message as sent, not its meaning.
fn comparable(headers: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut v: Vec<_> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| {
            ![
                "date",
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
            ]
            .contains(&k.as_str())
        })
        .collect();
    v.sort();
    v
}

fn simulated_headers(done: &Simulated) -> Vec<(String, String)> {
    comparable(
        done.head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_answers_byte_for_byte_what_the_wire_answers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("page.html"),
        "<p>Boring, so Boring.</p>\n".repeat(400),
    )
    .unwrap();
    let service = PythonServer::start(dir.path(), &[]).await;
    let raw = b"GET /page.html HTTP/1.1\r\nHost: svc\r\n\r\n";
    // What the service itself answers: the simulated service answers the same.
    let direct = raw_request(
        std::net::SocketAddr::from(([127, 0, 0, 1], service.port)),
        raw,
    )
    .await
    .unwrap();

    let sitio = Sitio::start(config_for(service.port), chain()).await;
    let wire = raw_request(sitio.addr, raw).await.unwrap();
    let mut answer = http::Response::builder().status(direct.status);
    for (k, v) in &direct.headers {
        answer = answer.header(k, v);
    }
    let answer = answer.body(sitio::Body::full(direct.body.clone())).unwrap();
    let request = http::Request::get("/page.html")
        .header("host", "svc")
        .body(())
        .unwrap();
    let done = chain().simulate(request, move |_| Ok(answer)).await;

    assert_eq!(wire.status, 200);
    assert_eq!(done.head.status.as_u16(), wire.status);
    assert_eq!(
        done.body.as_ref(),
        wire.body.as_slice(),
        "the rewritten body"
    );
    assert_eq!(
        String::from_utf8(wire.body.clone()).unwrap(),
        "<p>Cool!, so Cool!.</p>\n".repeat(400)
    );
    assert_eq!(simulated_headers(&done), comparable(wire.headers.clone()));
    assert_eq!(wire.header("sitio-fault"), Some("delay"));
    assert!(
        wire.header("content-length").is_none(),
        "no stale length on the wire"
    );
    assert!(
        done.head.headers.get("content-length").is_none(),
        "nor in simulate"
    );
    assert!(
        done.exchange.latency().unwrap() >= Duration::from_millis(30),
        "the delay waited"
    );

    // The service unreachable: the same error answer both ways.
    drop(service);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = Sitio::start(config_for(port), chain()).await;
    let wire = raw_request(down.addr, raw).await.unwrap();
    let request = http::Request::get("/page.html")
        .header("host", "svc")
        .body(())
        .unwrap();
    let done = chain()
        .simulate(request, |_| {
            Err(ProxyError::new(
                ErrorKind::ConnectRefused,
                "connect: refused",
            ))
        })
        .await;
    assert_eq!((wire.status, done.head.status.as_u16()), (502, 502));
    assert_eq!(done.body.as_ref(), wire.body.as_slice());
    assert_eq!(simulated_headers(&done), comparable(wire.headers.clone()));
    assert_eq!(done.exchange.error(), Some(ErrorKind::ConnectRefused));
    sitio.stop().await;
    down.stop().await;
}

/// Panics where the path says: in `on_request`, in `on_response`, or inside
/// a waiting hook's future.
struct Fragile;

impl Decorator for Fragile {
    type State = ();
    fn name(&self) -> &'static str {
        "fragile"
    }
    fn on_request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        _: &'a mut (),
        _: &'a mut Exchange,
    ) -> Action<'a> {
        match head.uri.path() {
            "/panic/request" => panic!("a bug in on_request"),
            "/panic/wait" => Action::wait(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                panic!("a bug after a wait")
            }),
            _ => Action::Continue,
        }
    }
    fn on_response(&self, _: &mut response::Parts, _: &mut (), ex: &mut Exchange) -> Action<'_> {
        if ex.path() == "/panic/response" {
            panic!("a bug in on_response");
        }
        Action::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_is_a_500_for_its_exchange_only() {
    let backend = crate::common::backend::Backend::start().await;
    let decorators = Decorators::builder().with(Fragile).build();
    let sitio = Sitio::start(config_for(backend.port()), decorators).await;
    let mut stream = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for path in [
        "/panic/request",
        "/panic/wait",
        "/panic/response",
        "/status/200",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        // One keep-alive connection throughout: it survives every panic.
        let res = send_on(&mut stream, &mut buf, raw.as_bytes()).await;
        if path.starts_with("/panic") {
            assert_eq!(
                (res.status, res.header("sitio-error")),
                (500, Some("internal")),
                "{path}"
            );
        } else {
            assert_eq!(res.status, 200);
        }
    }
    let stats: serde_json::Value = {
        let (ok, body) = curl(&[&format!("http://{}/stats", sitio.admin)]).await;
        assert!(ok);
        serde_json::from_slice(&body).unwrap()
    };
    let requests = stats["requests_total"].as_u64().unwrap();
    assert_eq!(requests, 4, "every exchange completed and was counted");
    sitio.stop().await;
}

fn get() -> http::Request<()> {
    http::Request::get("/page").body(()).unwrap()
}

fn answer(status: u16) -> http::Response<sitio::Body> {
    http::Response::builder()
        .status(status)
        .body(sitio::Body::from("x"))
        .unwrap()
}

/// Timings come from one clock (Tokio's), so a test pauses time and advances
/// it instead of sleeping: a 30 s cool-down and a 10 s delay take no real time.
#[tokio::test(start_paused = true)]
async fn timers_run_on_paused_time() {
    use sitio::resilience::{Breaker, CircuitBreaker, CircuitState};
    let real = std::time::Instant::now();
    let breaker = std::sync::Arc::new(Breaker::new(2, Duration::from_secs(30)));
    let chain = Decorators::builder()
        .with(CircuitBreaker(breaker.clone()))
        .build();
    for _ in 0..2 {
        let done = chain.simulate(get(), |_| Ok(answer(500))).await;
        assert_eq!(done.head.status, 500);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let refused = chain.simulate(get(), |_| Ok(answer(200))).await;
    assert_eq!(refused.head.status, 503);
    assert_eq!(refused.head.headers["retry-after"], "30");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let probe = chain.simulate(get(), |_| Ok(answer(200))).await;
    assert_eq!(probe.head.status, 200);
    assert_eq!(breaker.state(), CircuitState::Closed);

    let delayed = Decorators::builder()
        .with(FaultInjection {
            delay: Some(parse_delay("100%:10s").unwrap()),
            abort: None,
            routes: Default::default(),
        })
        .build();
    let done = delayed.simulate(get(), |_| Ok(answer(200))).await;
    assert!(done.exchange.latency().unwrap() >= Duration::from_secs(10));
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "no real waiting: {:?}",
        real.elapsed()
    );
}

/// Counts its hooks: no request hooks declared (an `on_request` that must
/// never run), a start hook that panics on one path.
#[derive(Default)]
struct Counts {
    starts: std::sync::atomic::AtomicUsize,
    requests: std::sync::atomic::AtomicUsize,
    completes: std::sync::atomic::AtomicUsize,
}

struct Counting(std::sync::Arc<Counts>);

impl Decorator for Counting {
    type State = ();
    const ON_REQUEST: bool = false;
    fn on_start(&self, _: &mut (), ex: &Exchange) {
        self.0
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if ex.path() == "/panic/start" {
            panic!("a bug in on_start");
        }
    }
    fn on_request(&self, _: &mut request::Parts, _: &mut (), _: &mut Exchange) -> Action<'_> {
        self.0
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Action::Continue
    }
    fn on_complete(&self, _: &mut (), _: &Exchange) {
        self.0
            .completes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn every_exchange_starts_and_completes_and_a_chain_without_request_hooks_calls_none() {
    use std::sync::atomic::Ordering::Relaxed;
    let counting = std::sync::Arc::new(Counts::default());
    let chain = Decorators::builder()
        .with(Counting(counting.clone()))
        .build();
    for path in ["/a", "/panic/start", "/b"] {
        let request = http::Request::get(path)
            .header("host", "svc")
            .body(())
            .unwrap();
        let done = chain.simulate(request, |_| Ok(answer(200))).await;
        // A panic in `on_start` is logged; the exchange goes on.
        assert_eq!(done.head.status.as_u16(), 200, "{path}");
    }
    // The guard refuses this one (two Hosts): it started too.
    let refused = http::Request::get("/c")
        .header("host", "a")
        .header("host", "b")
        .body(())
        .unwrap();
    let done = chain.simulate(refused, |_| Ok(answer(200))).await;
    assert_eq!(done.head.status.as_u16(), 400);
    assert_eq!(counting.starts.load(Relaxed), 4);
    assert_eq!(counting.completes.load(Relaxed), 4);
    assert_eq!(counting.requests.load(Relaxed), 0, "ON_REQUEST = false");
}
