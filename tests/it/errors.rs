//! Error pages, and a dead, slow or crashing service.

use std::time::{Duration, Instant};

use sitio::{Decorators, ErrorPages};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::backend::Backend;
use crate::common::*;

const PAGE_404: &str = "<html><body><h1>Look Somewhere Else</h1></body></html>\n";
const PAGE_5XX: &str = "<html><body><h1>We are on it</h1></body></html>\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_from_files_replace_404_and_keep_the_connection() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("present.txt"), "here\n").unwrap();
    let pages = tempfile::tempdir().unwrap();
    std::fs::write(pages.path().join("404.html"), PAGE_404).unwrap();
    let py = PythonServer::start(site.path(), &["--protocol", "HTTP/1.1"]).await;
    let mut config = config_for(py.port);
    config.error_page_404 = Some(pages.path().join("404.html"));
    let decorators = sitio::default_decorators(&config).unwrap();
    let sitio = Sitio::start(config, decorators).await;

    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /missing.jpg HTTP/1.1\r\nHost: t\r\nAccept: text/html\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(res.body, PAGE_404.as_bytes());
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        res.header("content-length"),
        Some(PAGE_404.len().to_string().as_str())
    );
    assert!(res.header("date").is_some());
    assert_eq!(res.header("connection"), None);
    // Same connection still works: the override did not break keep-alive.
    s.write_all(b"GET /present.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!((res.status, res.body.as_slice()), (200, &b"here\n"[..]));

    s.write_all(b"GET /missing.json HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(problem["status"], 404);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_get_the_5xx_page() {
    let backend = Backend::start().await;
    let decorators = Decorators::builder()
        .with(ErrorPages::new().server_error(PAGE_5XX))
        .build();
    let sitio = Sitio::start(config_for(backend.port()), decorators).await;
    for code in [500, 503] {
        let res = raw_request(
            sitio.addr,
            format!("GET /status/{code} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(
            (res.status, res.body.as_slice()),
            (code, PAGE_5XX.as_bytes())
        );
    }
    let res = raw_request(sitio.addr, b"GET /status/404 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        res.body, b"the service says 404\n",
        "no 404 page configured: untouched"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_service_gets_502_at_once_and_recovery_is_immediate() {
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;

    let started = Instant::now();
    let res = raw_request(sitio.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(res.status, 502);
    assert_eq!(res.header("sitio-error"), Some("connect-refused"));
    assert!(String::from_utf8_lossy(&res.body).contains("502"));
    let res = raw_request(
        sitio.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(res.header("content-type"), Some("application/problem+json"));

    // The service comes back on its port: the very next request reaches it.
    let backend = Backend::serve(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let res = raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(backend.requests(), 1);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_connect_gets_504_after_the_connect_timeout() {
    // A listener whose accept queue is full drops further SYNs: connects hang.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let mut config = config_for(port);
    config.connect_timeout = Duration::from_millis(300);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let started = Instant::now();
    let res = raw_request(sitio.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 504);
    assert_eq!(res.header("sitio-error"), Some("connect-timeout"));
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(socket);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_crashing_mid_response_leaves_a_clean_error_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
                .await;
            // then the process "crashes": the socket closes.
        }
    });
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got))
        .await
        .expect("the client connection is closed, not left hanging")
        .ok();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("only ten b"),
        "the truncated body is not padded or faked: {text}"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_for_any_status_from_environment_variables_alone() {
    let backend = Backend::start().await;
    let pages = tempfile::tempdir().unwrap();
    let file = |name: &str, html: &str| {
        let path = pages.path().join(name);
        std::fs::write(&path, html).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (busy, client) = (
        file("503.html", "<h1>busy</h1>"),
        file("4xx.html", "<h1>yours</h1>"),
    );
    let (mut child, port, _, _) = start_binary(
        backend.port(),
        &[
            ("SITIO_ERROR_PAGE_503", &busy),
            ("SITIO_ERROR_PAGE_4XX", &client),
        ],
    )
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for (path, status, body) in [
        ("/status/503", 503, &b"<h1>busy</h1>"[..]),
        ("/status/401", 401, b"<h1>yours</h1>"),
        ("/status/429", 429, b"<h1>yours</h1>"),
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        let res = raw_request(addr, raw.as_bytes()).await.unwrap();
        assert_eq!((res.status, res.body.as_slice()), (status, body), "{path}");
    }
    let other = raw_request(addr, b"GET /status/500 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(other.status, 500);
    assert_ne!(
        other.body, b"<h1>busy</h1>",
        "no 5XX page was set: the service's body"
    );
    child.kill().await.unwrap();

    let out = tokio::process::Command::new(SITIO)
        .env_clear()
        .env("PORT", "0")
        .env("SITIO_ADMIN_PORT", "0")
        .env("SITIO_ERROR_PAGE_200", &busy)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SITIO_ERROR_PAGE_200") && stderr.contains("400 to 599"),
        "{stderr}"
    );
}
