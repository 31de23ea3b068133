//! The decorators the engine's contract exists for, as a user writes them
//! (`examples/`): a waiting hook (token introspection), request ids on every
//! answer, A/B routing to a named upstream, and a length-changing body
//! rewrite. Each runs as its own binary against real service processes.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::process::Command;

use crate::common::*;
use crate::examples::example;

/// `tests/backends/examples_origin.py NAME`, with the lines it prints.
struct Origin;

impl Origin {
    async fn start(name: &str) -> Script {
        Script::start("examples_origin.py", &[name]).await
    }
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

async fn stats(admin: u16) -> serde_json::Value {
    let (ok, body) = curl(&[&format!("http://127.0.0.1:{admin}/stats")]).await;
    assert!(ok);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_waits_without_a_thread_on_one_worker() {
    let bin = example("auth_introspection");
    let idp = Origin::start("idp").await;
    let service = Origin::start("service").await;
    let url = format!("http://127.0.0.1:{}/introspect", idp.port);
    let (mut child, port, _, _) = start_program(
        &bin,
        service.port,
        &[("SITIO_WORKERS", "1"), ("INTROSPECT_URL", &url)],
    )
    .await;
    let sitio = addr(port);

    // 20 clients at once, each token's check taking 300 ms: they wait side by
    // side on the one worker, so all are through in about one check's time.
    let started = Instant::now();
    let calls = (0..20).map(|i| async move {
        let raw = format!(
            "GET /headers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer good-{i}\r\nX-Auth-User: root\r\n\r\n"
        );
        raw_request(sitio, raw.as_bytes()).await.unwrap()
    });
    let answers = futures_util::future::join_all(calls).await;
    let took = started.elapsed();
    for (i, res) in answers.iter().enumerate() {
        let seen = String::from_utf8_lossy(&res.body).to_ascii_lowercase();
        assert_eq!(res.status, 200, "{seen}");
        assert!(seen.contains(&format!("x-auth-user: user-{i}\n")), "{seen}");
        assert!(
            !seen.contains("root"),
            "the client's own X-Auth-User is gone: {seen}"
        );
    }
    eprintln!("20 introspections of 300 ms each, one worker: {took:?}");
    assert!(took < Duration::from_secs(2), "20 checks took {took:?}");

    // Cached: the same token again costs no call.
    let calls_before = idp.lines.lock().unwrap().len();
    let again = raw_request(
        sitio,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer good-3\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(
        idp.lines.lock().unwrap().len(),
        calls_before,
        "answered from the cache"
    );

    let none = raw_request(sitio, b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"sitio\"")
    );
    let bad = raw_request(
        sitio,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer stolen\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    // The identity provider gone: 503, not a hang and not a pass.
    drop(idp);
    let down = raw_request(
        sitio,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer good-new\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(down.status, 503);
    child.kill().await.unwrap();

    let missing = Command::new(&bin).env_clear().output().await.unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("INTROSPECT_URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_reach_the_service_and_every_answer() {
    let bin = example("request_id");
    let service = Origin::start("service").await;
    let (mut child, port, _, _) = start_program(&bin, service.port, &[]).await;
    let sitio = addr(port);
    let fresh = raw_request(sitio, b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let id = fresh.header("x-request-id").expect("an id").to_owned();
    let seen = String::from_utf8_lossy(&fresh.body).to_ascii_lowercase();
    assert!(seen.contains(&format!("x-request-id: {id}\n")), "{seen}");
    let other = raw_request(sitio, b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_ne!(
        other.header("x-request-id"),
        Some(id.as_str()),
        "ids are unique"
    );

    let given = raw_request(
        sitio,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(given.header("x-request-id"), Some("abc-123"));
    assert!(String::from_utf8_lossy(&given.body).contains("abc-123"));

    // sitio's own answers: a refused request, then the service down.
    let refused = raw_request(
        sitio,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 400);
    assert!(
        refused.header("x-request-id").is_some(),
        "{:?}",
        refused.headers
    );
    drop(service);
    let down = raw_request(
        sitio,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Request-Id: down-1\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        (down.status, down.header("x-request-id")),
        (502, Some("down-1"))
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_split_sends_its_share_to_b_through_the_upstream_machinery() {
    let bin = example("ab_split");
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let b_port = b.port.to_string();
    let (mut child, port, admin, logged) = start_program(
        &bin,
        a.port,
        &[("SPLIT_PERCENT", "25"), ("B_PORT", &b_port)],
    )
    .await;
    let mut stream = TcpStream::connect(addr(port)).await.unwrap();
    let mut buf = Vec::new();
    let mut by_origin = std::collections::HashMap::<String, usize>::new();
    for i in 0..40 {
        let body = format!("payload {i}");
        let raw = format!(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // One keep-alive client connection throughout: B's answers are
        // normalised like A's, so the connection survives both.
        let res = send_on(&mut stream, &mut buf, raw.as_bytes()).await;
        assert_eq!((res.status, res.body.as_slice()), (200, body.as_bytes()));
        let origin = res.header("x-origin").unwrap().to_owned();
        let variant = res.header("x-variant").unwrap();
        assert_eq!(origin, variant, "the variant header names who answered");
        *by_origin.entry(origin).or_default() += 1;
    }
    assert_eq!(by_origin.get("b"), Some(&10), "{by_origin:?}");
    assert_eq!(by_origin.get("a"), Some(&30), "{by_origin:?}");

    let doc = stats(admin).await;
    let upstreams = doc["upstreams"].as_array().unwrap();
    let hits = |name: &str| {
        upstreams
            .iter()
            .find(|u| u["upstream"] == name)
            .map_or(0, |u| u["hits"].as_u64().unwrap())
    };
    assert_eq!((hits("service"), hits("b")), (30, 10), "{upstreams:?}");
    let (ok, metrics) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).await;
    assert!(ok);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("sitio_upstream_requests_total{upstream=\"b\",status=\"200\"} 10"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_b = logged
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l["target"] == "sitio::access" && l["upstream"] == "b")
        .count();
    assert_eq!(to_b, 10, "the access log names the upstream");

    // B down: its requests get sitio's 502, A's still pass.
    drop(b);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let res = raw_request(addr(port), b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        statuses.push(res.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
    child.kill().await.unwrap();

    let bad = Command::new(&bin)
        .env_clear()
        .env("SPLIT_PERCENT", "150")
        .env("B_PORT", "9")
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SPLIT_PERCENT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_rewrite_reframes_and_keeps_the_connection() {
    let bin = example("rewrite_body");
    let service = Origin::start("service").await;
    let (mut child, port, _, _) = start_program(&bin, service.port, &[]).await;
    let mut stream = TcpStream::connect(addr(port)).await.unwrap();
    let mut buf = Vec::new();

    // A Content-Length page of ~50 KB: many reads, matches split between them.
    let n = 3000;
    let res = send_on(
        &mut stream,
        &mut buf,
        format!("GET /page.html?n={n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
    )
    .await;
    let expected: String = (0..n).map(|i| format!("Cool! page {i}. ")).collect();
    assert_eq!(res.status, 200);
    assert!(res.header("content-length").is_none(), "no stale length");
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(String::from_utf8(res.body).unwrap(), expected);

    // Chunked, with "Boring" split across chunks, on the same connection.
    let res = send_on(
        &mut stream,
        &mut buf,
        b"GET /chunked.html HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(
        String::from_utf8(res.body).unwrap(),
        "<p>Cool! and Cool!, Cool! end Bori"
    );

    // Not HTML: untouched, its length kept.
    let res = send_on(
        &mut stream,
        &mut buf,
        b"GET /data.json HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(res.header("content-length"), Some("18"));
    assert_eq!(res.body, b"{\"mood\": \"Boring\"}");

    // An HTTP/1.0 client gets a close-delimited body.
    let res = raw_request(
        addr(port),
        b"GET /page.html?n=2 HTTP/1.0\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(res.body, b"Cool! page 0. Cool! page 1. ");
    child.kill().await.unwrap();
}
