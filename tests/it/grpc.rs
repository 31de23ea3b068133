//! gRPC through sitio with real grpcio services and clients
//! (`tests/backends/grpc_echo.py`): every kind of call, statuses counted
//! per method in `/stats` and `/metrics` and judged by the breaker and
//! crash notifications, sitio's own failures as gRPC statuses, and the
//! client's `grpc-timeout` held for the whole call.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sitio::{Decorators, ErrorPages};
use tokio::net::TcpStream;

use crate::common::*;
use crate::resilience::{wait_for_events, webhook};

/// The `/stats` entry of one gRPC method.
fn method<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["route"] == format!("/demo.Echo/{name}"))
        .unwrap_or_else(|| panic!("no /demo.Echo/{name} in {doc}"))
}

/// Runs the gRPC client script (`call` or `once`) against `addr`.
async fn grpc_client(mode: &str, addr: SocketAddr) -> String {
    run_script("grpc_echo.py", [mode, &addr.to_string()]).await
}

/// A real gRPC service and client (grpcio) through sitio with its defaults:
/// unary, an error status, and server-, client- and bidirectional
/// streaming all pass, and each method is a route in the statistics. With
/// the service gone, the client gets UNAVAILABLE at once, not an HTML page
/// (which it could not read), even with an error page configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_pass_and_are_counted_per_method() {
    let service = Script::start("grpc_echo.py", &["serve"]).await;
    let pages = ErrorPages::new().server_error("<h1>Down</h1>\n");
    let sitio = Sitio::start(
        config_for(service.port),
        Decorators::builder().with(pages).build(),
    )
    .await;
    let printed = grpc_client("call", sitio.addr).await;
    assert_eq!(
        printed,
        "Say b'echo:hi'\n\
         Fail NOT_FOUND no such thing\n\
         Stream [b'part0', b'part1', b'part2', b'part3', b'part4']\n\
         Collect b'a+b+c'\n\
         Chat [b're:x', b're:y']\n"
    );
    let doc = sitio.stats().await;
    let mut methods: Vec<&str> = doc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["route"].as_str().unwrap())
        .collect();
    methods.sort();
    assert_eq!(
        methods,
        [
            "/demo.Echo/Chat",
            "/demo.Echo/Collect",
            "/demo.Echo/Fail",
            "/demo.Echo/Say",
            "/demo.Echo/Stream"
        ],
        "{doc}"
    );

    drop(service);
    let started = std::time::Instant::now();
    let printed = grpc_client("once", sitio.addr).await;
    assert_eq!(
        printed,
        "Say UNAVAILABLE The service refused the connection: it is not listening.\n"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    sitio.stop().await;
}

/// Unary calls in turn (`grpc_echo.py calls`): one printed line each.
async fn grpc_calls(addr: SocketAddr, methods: &[&str]) -> String {
    let addr = addr.to_string();
    let args = ["calls", addr.as_str()]
        .into_iter()
        .chain(methods.iter().copied());
    run_script("grpc_echo.py", args).await
}

/// A failing gRPC method is seen for what it is although every answer is an
/// HTTP 200: its statuses by name in `/stats` (errors counted), in
/// `/metrics` (checked by promtool) and on the dashboard (in Chromium), a
/// crash notification naming the gRPC
/// status, and the breaker opening after consecutive failures, whose
/// refusal the client reads as UNAVAILABLE. A client's error (NOT_FOUND)
/// is no failure of the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statuses_reach_stats_metrics_the_dashboard_the_breaker_and_notifications() {
    let service = Script::start("grpc_echo.py", &["serve"]).await;
    let (url, got) = webhook().await;
    let mut config = config_for(service.port);
    config.breaker.breaker_failures = 3;
    config.breaker.breaker_cooldown = Duration::from_secs(30);
    config.notify.notify_url = Some(url.parse().unwrap());
    let sitio = Sitio::start(config, Decorators::none()).await;
    let printed = grpc_calls(
        sitio.addr,
        &[
            "Say", "Fail", "Crash", "Fail", "Crash", "Crash", "Crash", "Crash",
        ],
    )
    .await;
    assert_eq!(
        printed,
        "Say b'echo:hi'\n\
         Fail NOT_FOUND no such thing\n\
         Crash INTERNAL boom\n\
         Fail NOT_FOUND no such thing\n\
         Crash INTERNAL boom\n\
         Crash INTERNAL boom\n\
         Crash INTERNAL boom\n\
         Crash UNAVAILABLE The service is failing; sitio gives it a moment before trying again.\n",
        "NOT_FOUND did not count as a failure; three INTERNAL in a row opened the breaker"
    );

    let doc = sitio.stats().await;
    let crash = method(&doc, "Crash");
    assert_eq!(crash["status"], serde_json::json!({"200": 5}), "{crash}");
    assert_eq!(
        crash["grpc"],
        serde_json::json!({"INTERNAL": 4, "UNAVAILABLE": 1})
    );
    assert_eq!(crash["errors"], 5);
    let fail = method(&doc, "Fail");
    assert_eq!(fail["grpc"], serde_json::json!({"NOT_FOUND": 2}));
    assert_eq!(fail["errors"], 0);
    assert_eq!(method(&doc, "Say")["grpc"], serde_json::json!({"OK": 1}));

    let (ok, metrics) = curl(&[&format!("http://{}/metrics", sitio.admin)]).await;
    assert!(ok);
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        r#"sitio_grpc_requests_total{method="POST",route="/demo.Echo/Crash",grpc_code="INTERNAL"} 4"#,
        r#"sitio_grpc_requests_total{method="POST",route="/demo.Echo/Crash",grpc_code="UNAVAILABLE"} 1"#,
        r#"sitio_grpc_requests_total{method="POST",route="/demo.Echo/Say",grpc_code="OK"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (the README's test command installs it)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let events = wait_for_events(&got, 1, Duration::from_secs(5)).await;
    let first = &events[0];
    assert_eq!(
        (
            &first["event"],
            &first["kind"],
            &first["route"],
            &first["status"]
        ),
        (
            &serde_json::json!("service_error"),
            &serde_json::json!("grpc-internal"),
            &serde_json::json!("/demo.Echo/Crash"),
            &serde_json::Value::Null
        ),
        "{events:?}"
    );

    // The dashboard in Chromium: each method with its gRPC statuses, and
    // the statuses overall beside the HTTP ones (all 200).
    let url = format!("http://{}/", sitio.admin);
    let (codes, statuses, failed_colour) = tokio::task::spawn_blocking(move || {
        let mut b = crate::common::browser::Browser::open(&url, 1280, 1000);
        b.wait_for(
            "document.querySelector('[data-grpc-status=INTERNAL]') !== null",
            Duration::from_secs(20),
        );
        let codes = b.eval(
            "document.querySelector('#endpoints tr[data-key=\"POST /demo.Echo/Crash\"] .grpc-codes').textContent",
        );
        let statuses = b.eval("document.getElementById('statuses').textContent");
        let colour = b.eval(
            "document.querySelector('[data-grpc-status=INTERNAL] span').style.background",
        );
        (codes, statuses, colour)
    })
    .await
    .unwrap();
    assert_eq!(codes, "gRPC: INTERNAL 4 · UNAVAILABLE 1");
    let statuses = statuses.as_str().unwrap();
    for shown in [
        "200: 8",
        "gRPC INTERNAL: 4",
        "gRPC NOT_FOUND: 2",
        "gRPC OK: 1",
    ] {
        assert!(statuses.contains(shown), "{shown} not in {statuses:?}");
    }
    assert_eq!(failed_colour, "var(--red)");
    sitio.stop().await;
}

/// hyper's HTTP/2 client, to send a gRPC call with a `grpc-timeout` and no
/// deadline of its own: what comes back is sitio's doing, not the client's.
async fn call_with_timeout(
    addr: SocketAddr,
    method: &str,
    timeout: &str,
) -> (http::response::Parts, Vec<u8>, Option<http::HeaderMap>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One gRPC message: uncompressed, 2 bytes, "hi".
    let message = Bytes::from_static(b"\0\0\0\0\x02hi");
    let req = Request::post(format!("http://{addr}/demo.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(message))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (head, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (head, collected.to_bytes().to_vec(), trailers)
}

/// Takes `grpc-timeout` off what the service sees: a service that keeps no
/// deadline of its own (grpcio keeps one, so without this the service's
/// answer and sitio's race at the same instant).
struct ServiceKeepsNoDeadline;

impl sitio::Decorator for ServiceKeepsNoDeadline {
    type State = ();

    fn on_upstream_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        _: &'a mut (),
        _: &'a mut sitio::Exchange,
    ) -> sitio::Action<'a> {
        head.headers.remove("grpc-timeout");
        sitio::Action::Continue
    }
}

/// A call's `grpc-timeout` bounds the whole call through sitio, well under
/// `SITIO_UPSTREAM_TIMEOUT`, even for a service that keeps no deadline: a
/// call not answered by then is cancelled at the service and the client gets
/// a DEADLINE_EXCEEDED answer; a stream still running at the deadline ends
/// with DEADLINE_EXCEEDED trailers after the messages sent so far, and the
/// service sees its call cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timeout_bounds_the_whole_call() {
    let service = Script::start("grpc_echo.py", &["serve"]).await;
    let mut config = config_for(service.port);
    config.upstream_timeout = sitio::config::Interval(Some(Duration::from_secs(30)));
    let decorators = Decorators::builder().with(ServiceKeepsNoDeadline).build();
    let sitio = Sitio::start(config, decorators).await;

    let started = Instant::now();
    let (head, body, _) = call_with_timeout(sitio.addr, "Slow", "300m").await;
    let took = started.elapsed();
    assert_eq!(head.status, 200, "gRPC failures travel in a 200");
    assert_eq!(head.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(head.headers["sitio-error"], "upstream-timeout");
    assert!(body.is_empty());
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "answered after {took:?}; the service takes 3 s"
    );

    let started = Instant::now();
    let (head, body, trailers) = call_with_timeout(sitio.addr, "Drip", "700m").await;
    let took = started.elapsed();
    assert_eq!(head.status, 200);
    assert!(
        head.headers.get("grpc-status").is_none(),
        "the stream had begun"
    );
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains("drop0") && body.contains("drop2"), "{body:?}");
    assert!(!body.contains("drop20"), "{body:?}");
    let trailers = trailers.expect("the stream ends with trailers");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    assert!(
        trailers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("grpc-timeout"),
        "{trailers:?}"
    );
    assert!(
        took >= Duration::from_millis(690) && took < Duration::from_secs(3),
        "ended after {took:?}; the stream runs 5 s"
    );
    let cancelled = Instant::now();
    while service.printed("DRIP CANCELLED").is_empty() {
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "the service never saw its call cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let doc = sitio.stats().await;
    for name in ["Slow", "Drip"] {
        assert_eq!(
            method(&doc, name)["grpc"],
            serde_json::json!({"DEADLINE_EXCEEDED": 1}),
            "{name}"
        );
    }
    sitio.stop().await;
}

/// Holds every request 300 ms before it goes on (an auth check that asks
/// another service, say).
struct Waits300Ms;

impl sitio::Decorator for Waits300Ms {
    type State = ();

    fn on_request<'a>(
        &'a self,
        _: &'a mut http::request::Parts,
        _: &'a mut (),
        _: &'a mut sitio::Exchange,
    ) -> sitio::Action<'a> {
        sitio::Action::wait(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sitio::Action::Continue
        })
    }
}

/// The service gets what is left of the call's time, not the client's whole
/// `grpc-timeout` again: time spent in sitio's hooks counts against the
/// deadline (gRPC's deadline propagation), so the service never works past
/// the moment the client stops waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_gets_what_is_left_of_the_calls_time() {
    let service = Script::start("grpc_echo.py", &["serve"]).await;
    let decorators = Decorators::builder().with(Waits300Ms).build();
    let sitio = Sitio::start(config_for(service.port), decorators).await;
    let (head, body, trailers) = call_with_timeout(sitio.addr, "Left", "2S").await;
    assert_eq!(head.status, 200);
    let trailers = trailers.expect("a gRPC answer ends with trailers");
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    // One gRPC message: a 5-byte prefix, then the milliseconds left.
    let left: u64 = std::str::from_utf8(&body[5..])
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("the service saw a deadline: {body:?}"));
    assert!(
        (1_000..=1_750).contains(&left),
        "the service had {left} ms of the call's 2,000 after sitio held it 300 ms"
    );
    sitio.stop().await;
}
