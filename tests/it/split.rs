//! A/B testing from env vars alone (`SITIO_SPLIT*`) in the stock binary, in
//! front of two real services (`examples_origin.py a` and `b`, which name
//! themselves in `X-Origin`): shares within binomial bounds, POST bodies
//! intact, the sides compared in `/stats` and in a real Prometheus, sticky
//! clients, the header for testers, and the guard that sends traffic back
//! to the service (and says so) when the variant fails.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use crate::common::browser::Browser;
use crate::common::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn stats(admin: u16) -> Value {
    let (ok, body) = curl(&[&format!("http://127.0.0.1:{admin}/stats")]).await;
    assert!(ok);
    serde_json::from_slice(&body).unwrap()
}

/// The side that answered (`X-Origin` of the service), checked against sitio's `sitio-variant`.
fn side(res: &RawResponse) -> &str {
    let origin = res.header("x-origin").unwrap_or("none");
    let variant = res.header("sitio-variant").unwrap_or("none");
    let expected = match origin {
        "a" => "service",
        "b" => "canary",
        other => other,
    };
    assert_eq!(variant, expected, "{res:?}");
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_goes_to_the_variant_and_the_sides_are_compared() {
    let a = Script::start("examples_origin.py", &["a"]).await;
    let b = Script::start("examples_origin.py", &["b"]).await;
    let split = format!("canary=127.0.0.1:{}@20%", b.port);
    let (mut child, port, admin, _) = start_binary(
        a.port,
        &[("SITIO_SPLIT", &split), ("SITIO_ACCESS_LOG", "off")],
    )
    .await;

    let mut stream = TcpStream::connect(addr(port)).await.unwrap();
    let mut buf = Vec::new();
    let n = 400;
    let mut to_b = 0;
    for i in 0..n {
        let body = format!("order {i}: {}", "x".repeat(i % 50));
        let raw = format!(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let res = send_on(&mut stream, &mut buf, raw.as_bytes()).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, body.as_bytes(), "the body arrived intact");
        if side(&res) == "b" {
            to_b += 1;
        }
    }
    // 20% of 400 is 80, with a standard deviation of 8: five of them either side.
    assert!(
        (40..=120).contains(&to_b),
        "{to_b} of {n} went to the variant"
    );

    let s = stats(admin).await;
    let echo = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["route"] == "/echo")
        .unwrap();
    assert_eq!(echo["hits"], n);
    assert_eq!(echo["upstreams"]["canary"]["hits"], to_b);
    assert_eq!(echo["upstreams"]["service"]["hits"], n - to_b);
    assert_eq!(s["split"]["sides"][1]["percent"], 20.0);

    // The `upstream` label, as a real Prometheus scrapes it.
    let prometheus = Prometheus::scrape(addr(admin));
    let query = "sum by (upstream) (sitio_requests_total{route=\"/echo\"})";
    let result = prometheus
        .wait_for(query, |r| r.as_array().is_some_and(|a| a.len() == 2))
        .await;
    for series in result.as_array().unwrap() {
        let expected = match series["metric"]["upstream"].as_str() {
            Some("canary") => to_b,
            Some("service") => n - to_b,
            other => panic!("unexpected upstream {other:?}"),
        };
        assert_eq!(series["value"][1], expected.to_string(), "{series}");
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stick_to_their_side_and_testers_can_pick_one() {
    let a = Script::start("examples_origin.py", &["a"]).await;
    let b = Script::start("examples_origin.py", &["b"]).await;
    let split = format!("canary=127.0.0.1:{}@50%", b.port);
    let (mut child, port, _, _) = start_binary(
        a.port,
        &[
            ("SITIO_SPLIT", &split),
            ("SITIO_SPLIT_STICKY", "cookie"),
            ("SITIO_SPLIT_HEADER", "on"),
        ],
    )
    .await;
    let get = |extra: String| async move {
        let raw = format!("GET /headers HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        raw_request(addr(port), raw.as_bytes()).await.unwrap()
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let first = get(String::new()).await;
        let cookie = first
            .header("set-cookie")
            .expect("a new client gets a cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let home = side(&first).to_owned();
        seen.insert(home.clone());
        for _ in 0..10 {
            let again = get(format!("Cookie: theme=dark; {cookie}\r\n")).await;
            assert_eq!(side(&again), home, "{cookie}");
            assert!(again.header("set-cookie").is_none());
        }
    }
    // Twenty clients at 50%: both sides (all on one: 1 chance in 500,000).
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A tester's header wins, sets no cookie, and is not passed on.
    for _ in 0..5 {
        let res = get("sitio-variant: canary\r\n".to_owned()).await;
        assert_eq!(side(&res), "b");
        assert!(res.header("set-cookie").is_none());
        assert!(
            !String::from_utf8_lossy(&res.body)
                .to_lowercase()
                .contains("sitio-variant")
        );
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_sends_traffic_back_to_the_service_when_the_variant_fails() {
    let a = Script::start("examples_origin.py", &["a"]).await;
    let b = Steerable::start(0).await;
    b.set_mode(500).await;
    let mut hook = tokio::process::Command::new("python3")
        .arg("-u")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/backends/https_hook.py"
        ))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut events = BufReader::new(hook.stdout.take().unwrap()).lines();
    let first = events.next_line().await.unwrap().unwrap();
    let hook_url = format!(
        "http://127.0.0.1:{}/hook",
        first.strip_prefix("PORT ").unwrap()
    );
    let split = format!("canary=127.0.0.1:{}@50%", b.port);
    let (mut child, port, admin, _) = start_binary(
        a.port,
        &[
            ("SITIO_SPLIT", &split),
            ("SITIO_SPLIT_GUARD", "on"),
            ("SITIO_SPLIT_GUARD_MIN", "10"),
            ("SITIO_NOTIFY_URL", &hook_url),
            ("SITIO_ACCESS_LOG", "off"),
        ],
    )
    .await;
    let mut failures = 0;
    for _ in 0..200 {
        let res = raw_request(addr(port), b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        if res.status == 500 {
            failures += 1;
        }
    }
    // The guard judges after 10 requests to the variant with 3 failures: it
    // trips within the first few dozen, and after that the service answers all.
    assert!((3..60).contains(&failures), "{failures} failures");
    for _ in 0..50 {
        let res = raw_request(addr(port), b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((res.status, side(&res)), (200, "a"));
    }
    let s = stats(admin).await;
    assert_eq!(s["split"]["sides"][1]["tripped"], true, "{}", s["split"]);

    // The notification names the variant and says why.
    let started = Instant::now();
    let event = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), events.next_line())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(line.strip_prefix("EVENT ").unwrap()).unwrap();
        if event["event"] == "split_guard_tripped" {
            break event;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    };
    assert_eq!(event["upstream"], "canary");
    assert!(
        event["detail"].as_str().unwrap().contains("error rate"),
        "{event}"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_sides_and_marks_the_worse_one() {
    let a = Script::start("examples_origin.py", &["a"]).await;
    let b = Steerable::start(0).await;
    b.set_mode(503).await;
    let split = format!("canary=127.0.0.1:{}@30%", b.port);
    let (mut child, port, admin, _) = start_binary(
        a.port,
        &[("SITIO_SPLIT", &split), ("SITIO_ACCESS_LOG", "off")],
    )
    .await;
    for _ in 0..100 {
        raw_request(addr(port), b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
    }
    let url = format!("http://127.0.0.1:{admin}/?tap=off");
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-ab.png");
    let rows = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::open(&url, 1280, 1000);
        browser.wait_for(
            "document.querySelectorAll('#ab tr[data-side]').length === 2",
            Duration::from_secs(20),
        );
        browser.screenshot(&shot);
        // On a phone the table fits: nothing scrolls sideways.
        browser.viewport(390, 844, true);
        std::thread::sleep(Duration::from_millis(1300));
        let overflow = browser.eval(
            "document.documentElement.scrollWidth > window.innerWidth + 1 ||
             [...document.querySelectorAll('.scroll')].some(d => d.scrollWidth > d.clientWidth + 1)",
        );
        assert_eq!(overflow, Value::Bool(false), "the A/B table scrolls sideways on a phone");
        browser.screenshot(&shot.with_file_name("dashboard-ab-phone.png"));
        browser.eval(
            "JSON.stringify([...document.querySelectorAll('#ab tr[data-side]')].map(tr => ({
                side: tr.dataset.side,
                hits: Number(tr.querySelector('.hits').textContent),
                worse: tr.querySelector('.errors').classList.contains('worse'),
            })))",
        )
    })
    .await
    .unwrap();
    let rows: Vec<Value> = serde_json::from_str(rows.as_str().unwrap()).unwrap();
    let s = stats(admin).await;
    let figures = &s["endpoints"][0]["upstreams"];
    for row in &rows {
        let side = row["side"].as_str().unwrap();
        assert_eq!(row["hits"], figures[side]["hits"], "{row} vs {figures}");
        assert_eq!(row["worse"], side == "canary", "{row}");
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_has_its_own_circuit_and_stale_copies() {
    let a = Script::start("examples_origin.py", &["a"]).await;
    let b = Steerable::start(0).await;
    // 0%: only the tester's header sends requests to the variant.
    let split = format!("canary=127.0.0.1:{}@0%", b.port);
    let (mut child, port, admin, _) = start_binary(
        a.port,
        &[
            ("SITIO_SPLIT", &split),
            ("SITIO_SPLIT_HEADER", "on"),
            ("SITIO_BREAKER_FAILURES", "3"),
            ("SITIO_STALE_ON_ERROR", "on"),
        ],
    )
    .await;
    let get = |side: &'static str| async move {
        let raw = format!("GET /headers HTTP/1.1\r\nHost: a\r\nsitio-variant: {side}\r\n\r\n");
        raw_request(addr(port), raw.as_bytes()).await.unwrap()
    };
    let canary_page = get("canary").await;
    assert_eq!(canary_page.status, 200);
    assert_eq!(canary_page.body, b"page /headers");
    assert_eq!(get("service").await.header("x-origin"), Some("a"));

    b.set_mode(500).await;
    for _ in 0..3 {
        let res = get("canary").await;
        assert_eq!(res.status, 200, "a stale copy");
        assert_eq!(res.header("sitio-stale"), Some("service-5xx"));
        assert_eq!(res.body, canary_page.body, "the variant's own copy");
    }
    let s = stats(admin).await;
    assert_eq!(
        s["circuit"]["upstreams"]["canary"]["state"], "open",
        "{}",
        s["circuit"]
    );
    assert_eq!(s["circuit"]["state"], "closed", "the service's circuit");
    let service = get("service").await;
    assert_eq!(
        (service.status, service.header("x-origin")),
        (200, Some("a"))
    );
    assert!(service.header("sitio-stale").is_none());
    let refused = get("canary").await;
    assert_eq!(refused.header("sitio-stale"), Some("circuit-open"));
    child.kill().await.unwrap();
}
