//! Resilience: upstream timeouts, safe retries on stale connections, the
//! circuit breaker, and notifications when the service fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::common::backend::Backend;
use crate::common::*;

/// A service that answers the first request of each connection and keeps it
/// alive, then drops the connection when a second request arrives on it: what
/// a service closing an idle keep-alive connection looks like to a proxy that
/// picked that connection at the same moment.
async fn closes_reused_connections() -> (u16, Arc<AtomicUsize>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let port = canned_service(move |n| {
        // The second request closes the connection without a response byte.
        (n == 0).then(|| {
            count.fetch_add(1, Ordering::SeqCst);
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..]
        })
    })
    .await;
    (port, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_safe_request_on_a_stale_pooled_connection_is_sent_again() {
    let (port, answered) = closes_reused_connections().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for round in 0..3 {
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let res = read_response(&mut client, &mut buf, false).await.unwrap();
        assert_eq!(
            res.status, 200,
            "round {round}: the stale connection is invisible to the client"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await; // the pooled connection goes stale
    }
    assert_eq!(answered.load(Ordering::SeqCst), 3);

    // Not a safe request: not sent twice, the client is told.
    client
        .write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
        .await
        .unwrap();
    let res = read_response(&mut client, &mut buf, false).await.unwrap();
    assert_eq!(res.status, 502);
    assert_eq!(res.header("sitio-error"), Some("upstream-closed"));
    sitio.stop().await;
}

/// The service drops the pooled connection as the next request comes, with
/// no idle time in between (as a service does that closes a connection right
/// after an answer): the request goes again all the same, as nginx resends
/// on its cached connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_safe_request_is_sent_again_however_briefly_its_connection_sat_idle() {
    let (port, answered) = closes_reused_connections().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for round in 0..5 {
        let res = send_on(&mut client, &mut buf, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(res.status, 200, "round {round}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), 5);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn retries_can_be_switched_off() {
    let (port, _) = closes_reused_connections().await;
    let mut config = config_for(port);
    config.retries = false;
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        send_on(&mut client, &mut buf, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        send_on(&mut client, &mut buf, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .status,
        502
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_failures_and_a_probe_closes_it() {
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let mut config = config_for(port);
    config.breaker.breaker_failures = 3;
    config.breaker.breaker_cooldown = Duration::from_millis(800);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let get = || raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n");

    for _ in 0..3 {
        assert_eq!(
            get().await.unwrap().status,
            502,
            "failures pass through until the threshold"
        );
    }
    let res = get().await.unwrap();
    assert_eq!(res.status, 503);
    assert_eq!(res.header("sitio-error"), Some("circuit-open"));
    assert_eq!(res.header("retry-after"), Some("1"));

    // The service comes back, but the circuit is open: nothing reaches it yet.
    let backend = Backend::serve(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    assert_eq!(get().await.unwrap().status, 503);
    assert_eq!(backend.connections(), 0, "an open circuit calls nobody");
    let s: serde_json::Value = serde_json::from_slice(
        &raw_request(sitio.admin, b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(s["circuit"]["state"], "open");
    let metrics = raw_request(sitio.admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains("sitio_circuit_state{state=\"open\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sitio_circuit_opened_total 1"));

    // After the cool-down one probe goes through; it succeeds and closes the circuit.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(get().await.unwrap().status, 200);
    for _ in 0..3 {
        assert_eq!(get().await.unwrap().status, 200);
    }
    assert_eq!(backend.requests(), 4);

    // A failing probe opens it again at once.
    drop(backend);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        get().await.unwrap();
    }
    assert_eq!(get().await.unwrap().status, 503);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        get().await.unwrap().status,
        502,
        "the probe reaches the (dead) service"
    );
    assert_eq!(
        get().await.unwrap().status,
        503,
        "and the circuit is open again"
    );
    sitio.stop().await;
}

/// A webhook receiver recording every JSON body posted to it.
pub(crate) async fn webhook() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/hook");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            sink.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap());
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, got)
}

pub(crate) async fn wait_for_events(
    got: &std::sync::Mutex<Vec<serde_json::Value>>,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let events = got.lock().unwrap().clone();
        if events.len() >= n {
            return events;
        }
        assert!(
            started.elapsed() < within,
            "expected {n} notifications, got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_notified_once_per_interval_with_a_folded_count() {
    let (url, got) = webhook().await;
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.notify.notify_url = Some(url.parse().unwrap());
    config.notify.notify_interval = Duration::from_millis(700);
    let sitio = Sitio::start(config, Decorators::none()).await;
    for _ in 0..5 {
        assert_eq!(
            raw_request(sitio.addr, b"GET /status/500 HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap()
                .status,
            500
        );
    }
    raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = wait_for_events(&got, 1, Duration::from_secs(2)).await;
    assert_eq!(first[0]["event"], "service_error");
    assert_eq!(first[0]["kind"], "http-500");
    assert_eq!(first[0]["status"], 500);
    assert_eq!(first[0]["method"], "GET");
    assert_eq!(first[0]["route"], "/status/{id}");
    assert_eq!(first[0]["folded"], 0);
    assert_eq!(first[0]["service"], format!("127.0.0.1:{}", backend.port()));
    assert!(first[0]["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(first[0]["time"].as_str().unwrap().ends_with('Z'));
    let both = wait_for_events(&got, 2, Duration::from_secs(3)).await;
    assert_eq!(both[1]["folded"], 4, "the other four were folded: {both:?}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(got.lock().unwrap().len(), 2, "nothing for the 200");
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_never_slows_traffic_and_its_losses_are_counted() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.notify.notify_url = Some(dead_url.parse().unwrap());
    config.notify.notify_interval = Duration::from_millis(100);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..400 {
        let t = Instant::now();
        let path = format!("GET /status/50{} HTTP/1.1\r\nHost: t\r\n\r\n", i % 4);
        assert!(
            raw_request(sitio.addr, path.as_bytes())
                .await
                .unwrap()
                .status
                >= 500
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?}"
    );
    let started = Instant::now();
    loop {
        let metrics = raw_request(sitio.admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let metrics = String::from_utf8(metrics.body).unwrap();
        let count = |result: &str| -> u64 {
            metrics
                .lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "sitio_notify_events_total{{channel=\"webhook\",result=\"{result}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap()
        };
        if count("failed") >= 1 {
            assert_eq!(count("sent"), 0);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_on_the_chosen_routes_and_shares() {
    use sitio::resilience::faults::{parse_abort, parse_delay};
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.faults.fault_abort = Some(parse_abort("100%:503").unwrap());
    config.faults.fault_routes = "/status/*".into();
    let sitio = Sitio::start(config, Decorators::none()).await;
    let res = raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 503);
    assert_eq!(res.header("sitio-fault"), Some("abort"));
    let res = raw_request(sitio.addr, b"GET /headers HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 200, "other routes are untouched");
    assert_eq!(
        backend.requests(),
        1,
        "aborted requests never reach the service"
    );
    sitio.stop().await;

    let mut config = config_for(backend.port());
    config.faults.fault_delay = Some(parse_delay("100%:300ms").unwrap());
    let sitio = Sitio::start(config, Decorators::none()).await;
    let started = Instant::now();
    let res = raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (res.status, res.header("sitio-fault")),
        (200, Some("delay"))
    );
    sitio.stop().await;

    let mut config = config_for(backend.port());
    config.faults.fault_abort = Some(parse_abort("50%:500").unwrap());
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut aborted = 0;
    for _ in 0..200 {
        let res = raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        aborted += usize::from(res.status == 500);
    }
    assert!(
        (60..=140).contains(&aborted),
        "about half aborted: {aborted}"
    );
    sitio.stop().await;
}

/// A service the test steers: `mode` 0 answers 200 pages, any other value is
/// the status to fail with. Aborting the task kills it, connections too.
async fn steerable(
    listener: TcpListener,
    mode: Arc<std::sync::atomic::AtomicU16>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            while conns.try_join_next().is_some() {}
            let mode = mode.clone();
            conns.spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let code = mode.load(Ordering::SeqCst);
                        async move {
                            let mut res =
                                http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                                    format!("page {} (mode {code})", req.uri().path()),
                                )));
                            if code != 0 {
                                *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            } else if req.uri().path() == "/nostore" {
                                res.headers_mut().insert(
                                    "cache-control",
                                    http::HeaderValue::from_static("no-store"),
                                );
                            } else if req.uri().path() == "/brief" {
                                res.headers_mut().insert(
                                    "cache-control",
                                    http::HeaderValue::from_static("stale-if-error=1"),
                                );
                            }
                            res.headers_mut()
                                .insert("x-origin", http::HeaderValue::from_static("steerable"));
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_failures_still_open_the_breaker_and_notify() {
    let (url, got) = webhook().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let _service = steerable(listener, mode.clone()).await;
    let mut config = config_for(port);
    config.stale.stale_on_error = true;
    config.breaker.breaker_failures = 2;
    config.breaker.breaker_cooldown = Duration::from_secs(30);
    config.notify.notify_url = Some(url.parse().unwrap());
    let sitio = Sitio::start(config, Decorators::none()).await;
    let page = || raw_request(sitio.addr, b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(page().await.unwrap().status, 200);
    mode.store(503, Ordering::SeqCst);
    for _ in 0..2 {
        let res = page().await.unwrap();
        assert_eq!(
            (res.status, res.header("sitio-stale")),
            (200, Some("service-5xx"))
        );
    }
    let res = page().await.unwrap();
    assert_eq!(
        (res.status, res.header("sitio-stale")),
        (200, Some("circuit-open")),
        "the breaker opened"
    );
    let events = wait_for_events(&got, 1, Duration::from_secs(2)).await;
    assert_eq!(
        events[0]["event"], "service_error",
        "the client got 200, the service had failed"
    );
    assert_eq!(events[0]["status"], 503);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_hangs_gets_504_after_the_upstream_timeout() {
    let service = Steerable::start(0).await;
    let mut config = config_for(service.port);
    config.upstream_timeout = sitio::config::Interval(Some(Duration::from_millis(300)));
    let sitio = Sitio::start(config, Decorators::none()).await;
    let started = Instant::now();
    let res = raw_request(sitio.addr, b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 504);
    assert_eq!(res.header("sitio-error"), Some("upstream-timeout"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let res = raw_request(sitio.addr, b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 200, "fast answers are untouched");

    // One keep-alive connection, its exchanges back to back (too close to
    // park it in between), for longer than the timeout: every wait for the
    // service gets the whole timeout from its own start (the connection's
    // one timer is moved for each), and never more.
    let mut conn = tokio::net::TcpStream::connect(sitio.addr).await.unwrap();
    let paths = ["/fast"; 10].into_iter().chain(["/hang"]);
    for path in paths.clone().chain(paths) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut conn, raw.as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        let res = read_response(&mut conn, &mut buf, false).await.unwrap();
        let took = started.elapsed();
        if path == "/hang" {
            assert_eq!(res.status, 504);
            assert!(
                took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
                "{path} answered after {took:?}"
            );
        } else {
            assert_eq!(res.status, 200, "{path}");
        }
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_copy_masks_5xx_and_a_crashed_service() {
    let mut service = Steerable::start(0).await;
    let mut config = config_for(service.port);
    config.stale.stale_on_error = true;
    let sitio = Sitio::start(config, Decorators::none()).await;
    let get = |raw: &'static [u8]| raw_request(sitio.addr, raw);
    for raw in [
        &b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /mine HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n\r\n",
    ] {
        assert_eq!(get(raw).await.unwrap().status, 200);
    }

    // The service answers 500: the last good copy is served, marked.
    service.set_mode(500).await;
    let res = get(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!((res.status, res.body.as_slice()), (200, &b"page /page"[..]));
    assert_eq!(res.header("sitio-stale"), Some("service-5xx"));
    assert_eq!(res.header("age"), Some("0"));
    assert_eq!(
        res.header("x-origin"),
        Some("steerable"),
        "the stored headers come back"
    );
    let mine = get(b"GET /mine HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        mine.status, 500,
        "answers to requests with credentials are never stored"
    );
    assert_eq!(
        get(b"GET /never-seen HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        500
    );

    // The service process crashes: still served, and the copy ages.
    service.kill().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = get(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(
        (res.status, res.header("sitio-stale")),
        (200, Some("connect-refused"))
    );
    assert_eq!(res.header("age"), Some("1"));
    assert_eq!(
        get(b"GET /never-seen HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        502
    );

    // It comes back: fresh answers again, at once.
    let service = Steerable::start(service.port).await;
    let res = get(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!((res.status, res.header("sitio-stale")), (200, None));
    let metrics = raw_request(sitio.admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(metrics.contains("sitio_stale_served_total 2"), "{metrics}");
    drop(service);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_honour_no_store_and_stale_if_error() {
    // The steerable service's /nostore and /brief pages carry these directives.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let service = steerable(listener, mode.clone()).await;
    let mut config = config_for(port);
    config.stale.stale_on_error = true;
    let cached = Sitio::start(config, Decorators::none()).await;
    for path in ["/nostore", "/brief"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            raw_request(cached.addr, raw.as_bytes())
                .await
                .unwrap()
                .status,
            200
        );
    }
    mode.store(500, Ordering::SeqCst);
    assert_eq!(
        raw_request(cached.addr, b"GET /nostore HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        500
    );
    let res = raw_request(cached.addr, b"GET /brief HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        (res.status, res.header("sitio-stale")),
        (200, Some("service-5xx"))
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = raw_request(cached.addr, b"GET /brief HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        res.status, 500,
        "stale-if-error=1 from the service: too old now"
    );
    service.abort();
    cached.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_the_recovery_are_notified_in_slack_format() {
    let (url, got) = webhook().await;
    let mut service = Steerable::start(0).await;
    let mut config = config_for(service.port);
    config.notify.notify_url = Some(url.parse().unwrap());
    config.notify.notify_format = sitio::resilience::NotifyFormat::Slack;
    let sitio = Sitio::start(config, Decorators::none()).await;
    assert_eq!(
        raw_request(sitio.addr, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        200
    );
    service.kill().await;
    assert_eq!(
        raw_request(sitio.addr, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        502
    );
    let events = wait_for_events(&got, 1, Duration::from_secs(2)).await;
    let text = events[0]["text"].as_str().unwrap();
    assert!(text.contains("GET /a failed: connect-refused"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", service.port)),
        "names the service: {text}"
    );
    let _back = Steerable::start(service.port).await;
    assert_eq!(
        raw_request(sitio.addr, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap()
            .status,
        200
    );
    let events = wait_for_events(&got, 2, Duration::from_secs(2)).await;
    assert!(
        events[1]["text"]
            .as_str()
            .unwrap()
            .contains("reachable again"),
        "{events:?}"
    );
    sitio.stop().await;
}
