//! HTTP/1.1 proxying: bytes, keep-alive, pipelining, streaming, framing edge cases.

use std::time::Duration;

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::{Backend, pattern};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_python_http_server_arrive_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = pattern(300_000);
    data.extend((0..=255u8).cycle().take(70_000)); // every byte value, NUL and CR/LF included
    data.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); // a body is just a body
    std::fs::write(dir.path().join("photo.bin"), &data).unwrap();
    let py = PythonServer::start(dir.path(), &[]).await;
    let sitio = Sitio::start(config_for(py.port), Decorators::none()).await;

    let out = dir.path().join("out.bin");
    let (ok, _) = curl(&["-f", "-o", out.to_str().unwrap(), &sitio.url("/photo.bin")]).await;
    assert!(ok);
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &sitio.url("/nope.jpg"),
    ])
    .await;
    assert_eq!(
        code, b"404",
        "without decorators the service's 404 passes through"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_reused_on_both_sides() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;

    // 20 requests on one client connection.
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..20 {
        let req = format!("GET /status/200?i={i} HTTP/1.1\r\nHost: t\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let res = read_response(&mut s, &mut buf, false)
            .await
            .expect("response on the same connection");
        assert_eq!(res.status, 200);
    }
    // 30 more from separate client connections (curl processes).
    for _ in 0..30 {
        let (ok, _) = curl(&["-f", "-o", "/dev/null", &sitio.url("/status/200")]).await;
        assert!(ok);
    }
    assert_eq!(backend.requests(), 50);
    // Sequential requests need one pooled connection per worker (each
    // worker keeps its own, SITIO_WORKERS defaults to one per core), give or
    // take one a racing return each; without pooling it would be 50.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        backend.connections() <= 2 * workers + 1,
        "50 requests should share a few pooled upstream connections, used {} with {workers} workers",
        backend.connections()
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(
        b"GET /slow/150 HTTP/1.1\r\nHost: t\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: t\r\n\r\nPOST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcdGET /status/202 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for _ in 0..4 {
        let res = read_response(&mut s, &mut buf, false).await.unwrap();
        got.push((res.status, String::from_utf8_lossy(&res.body).to_string()));
    }
    assert_eq!(got[0], (200, "slow done\n".to_string()));
    assert_eq!(got[1].0, 201);
    assert_eq!(got[2], (200, "4".to_string()));
    assert_eq!(got[3].0, 202);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let before = rss_bytes();
    let mut peak = before;

    // Download 512 MiB, checking the pattern of every chunk boundary region.
    const DOWN: usize = 512 << 20;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(
        format!("GET /bytes/{DOWN} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut total = 0usize;
    let mut head = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            head.extend_from_slice(&chunk[..n.min(4096)]);
        }
        total += n;
        if total % (32 << 20) < n {
            peak = peak.max(rss_bytes());
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    assert!(total > DOWN, "received {total} bytes");

    // Upload 256 MiB chunked; the service counts it.
    const UP: usize = 256 << 20;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let piece = vec![b'x'; 1 << 20];
    for i in 0..(UP >> 20) {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&piece).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        if i % 32 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(res.body, UP.to_string().as_bytes());
    peak = peak.max(rss_bytes());

    let growth = peak.saturating_sub(before);
    assert!(
        growth < 64 << 20,
        "streaming 768 MiB grew the test process by {} MiB",
        growth >> 20
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(
        b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let interim = tokio::time::timeout(
        Duration::from_secs(2),
        read_response(&mut s, &mut buf, false),
    )
    .await
    .expect("100 Continue arrives without the body being sent")
    .unwrap();
    assert_eq!(interim.status, 100);
    s.write_all(b"hello").await.unwrap();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!((res.status, res.body.as_slice()), (200, &b"5"[..]));
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_304_and_http10_keep_framing_right() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();

    s.write_all(b"HEAD /sized HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut s, &mut buf, true).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("10"));
    for (path, status) in [("/nothing", 204), ("/cached", 304), ("/sized", 200)] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let res = read_response(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(res.status, status, "{path}");
        if status == 304 {
            assert_eq!(res.header("etag"), Some("\"v1\""));
        }
        if status == 200 {
            assert_eq!(
                res.body, b"0123456789",
                "HEAD left no stray bytes on the connection"
            );
        }
    }
    assert!(buf.is_empty());

    // An HTTP/1.0 client without keep-alive: a streamed body ends with the connection.
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(b"GET /bytes/100000 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("HTTP/1.0 response ends with the connection")
        .unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(all.starts_with(b"HTTP/1."));
    assert_eq!(
        &all[split..],
        pattern(64 * 1024)
            .iter()
            .chain(pattern(64 * 1024).iter())
            .take(100_000)
            .copied()
            .collect::<Vec<_>>()
            .as_slice()
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_and_forwarding_headers_are_added() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let res = raw_request(
        sitio.addr,
        b"GET /headers HTTP/1.1\r\nHost: shop.example:8443\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.1.1.1\r\nX-Request-Id: r-1\r\n\r\n",
    )
    .await
    .unwrap();
    let seen = String::from_utf8(res.body).unwrap();
    assert!(seen.starts_with("GET /headers HTTP/1.1\n"), "{seen}");
    assert!(seen.contains("host: shop.example:8443\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-request-id: r-1\n"), "{seen}");
    assert!(!seen.contains("x-secret"), "{seen}");
    assert!(!seen.contains("keep-alive"), "{seen}");
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_trailers_reach_the_client() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(b"GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            all.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&all).to_lowercase();
            if text.contains("x-checksum: abc123\r\n\r\n") || n == 0 {
                return;
            }
        }
    })
    .await;
    let found = String::from_utf8_lossy(&all).to_lowercase();
    assert!(found.contains("transfer-encoding: chunked"), "{found}");
    assert!(found.contains("part one,"), "{found}");
    assert!(found.contains("0\r\nx-checksum: abc123\r\n\r\n"), "{found}");
    sitio.stop().await;
}
