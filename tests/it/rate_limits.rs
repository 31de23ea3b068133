//! `SITIO_RATE_LIMIT` in the stock binary, from env vars alone, in front of a
//! real service: the burst, then 429 with `Retry-After` and the IETF
//! `RateLimit` fields, a page of the operator's for 429, per-client buckets
//! behind a trusted proxy only, and the counts in `/stats` and `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Command;

use crate::common::*;

fn get(client: Option<&str>) -> Vec<u8> {
    let xff = client.map_or(String::new(), |c| format!("X-Forwarded-For: {c}\r\n"));
    format!("GET /hello.txt HTTP/1.1\r\nHost: a\r\n{xff}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_per_client_behind_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    let page = dir.path().join("429.html");
    std::fs::write(&page, "<h1>slow down</h1>").unwrap();
    let service = PythonServer::start(dir.path(), &[]).await;
    let page = page.to_str().unwrap().to_owned();
    let (mut child, port, admin, _) = start_binary(
        service.port,
        &[
            ("SITIO_RATE_LIMIT", "5/s"),
            ("SITIO_RATE_LIMIT_BURST", "3"),
            ("SITIO_TRUSTED_PROXIES", "127.0.0.1"),
            ("SITIO_ERROR_PAGE_429", &page),
        ],
    )
    .await;
    let sitio = SocketAddr::from(([127, 0, 0, 1], port));

    // Client A, behind our trusted proxy: its burst, then 429.
    for left in [2, 1, 0] {
        let res = raw_request(sitio, &get(Some("203.0.113.7"))).await.unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(res.header("ratelimit-policy"), Some("\"sitio\";q=5;w=1"));
        let fields = res.header("ratelimit").unwrap().to_owned();
        assert!(
            fields.starts_with(&format!("\"sitio\";r={left};t=")),
            "{fields}"
        );
    }
    let refused = raw_request(sitio, &get(Some("203.0.113.7"))).await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.header("ratelimit").unwrap().contains(";r=0;"));
    assert_eq!(
        refused.body, b"<h1>slow down</h1>",
        "SITIO_ERROR_PAGE_429 applies"
    );

    // Client B has a bucket of its own; the proxy's own requests too.
    let other = raw_request(sitio, &get(Some("203.0.113.8"))).await.unwrap();
    assert_eq!(other.status, 200);
    let proxy_itself = raw_request(sitio, &get(None)).await.unwrap();
    assert_eq!(proxy_itself.status, 200);

    // 5/s: a new request is allowed 200 ms later (waiting longer only adds room).
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = raw_request(sitio, &get(Some("203.0.113.7"))).await.unwrap();
    assert_eq!(again.status, 200);

    let (ok, body) = curl(&[&format!("http://127.0.0.1:{admin}/stats")]).await;
    assert!(ok);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["rate_limit"]["limited"], 1, "{}", stats["rate_limit"]);
    let (_, metrics) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).await;
    assert!(String::from_utf8_lossy(&metrics).contains("sitio_rate_limited_total 1\n"));
    child.kill().await.unwrap();

    // Without trusted proxies, X-Forwarded-For is the client's word: ignored.
    let (mut child, port, _, _) = start_binary(
        service.port,
        &[("SITIO_RATE_LIMIT", "5/s"), ("SITIO_RATE_LIMIT_BURST", "3")],
    )
    .await;
    let sitio = SocketAddr::from(([127, 0, 0, 1], port));
    let mut statuses = Vec::new();
    for i in 0..5 {
        let spoofed = format!("198.51.100.{i}");
        statuses.push(
            raw_request(sitio, &get(Some(&spoofed)))
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    child.kill().await.unwrap();

    let bad = Command::new(SITIO)
        .env_clear()
        .env("SITIO_RATE_LIMIT", "lots")
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SITIO_RATE_LIMIT"));
}
