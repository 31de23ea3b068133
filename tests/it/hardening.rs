//! Regressions from the second round of attacks (each failed before its fix):
//! no client can hurt another, how the first bytes arrive does not change how
//! a request is judged, framing and Host are normalised or refused, ports are
//! never shared silently, the connection cap does not lock new clients out,
//! and a dropped SYN is not a timeout.

use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::backend::Backend;
use crate::common::origin::{Answer, Origin, ok};
use crate::common::*;

async fn admin_text(sitio: &Sitio, path: &str) -> String {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    let res = raw_request(sitio.admin, raw.as_bytes()).await.unwrap();
    String::from_utf8(res.body).unwrap()
}

async fn stats(sitio: &Sitio) -> serde_json::Value {
    serde_json::from_str(&admin_text(sitio, "/stats").await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_does_not_block_other_clients() {
    // The service answers at the head, as nginx `return 200` does.
    let origin = Origin::start(Answer::AtHead, |_| ok("ok")).await;
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let mut a = TcpStream::connect(sitio.addr).await.unwrap();
    a.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let res = read_response(&mut a, &mut buf, false).await.unwrap();
    assert_eq!(res.status, 200, "the service answered A at once");
    // A goes quiet with 90 body bytes owed. B, on a new connection:
    let started = Instant::now();
    let b = tokio::time::timeout(
        Duration::from_secs(5),
        raw_request(sitio.addr, b"GET /victim HTTP/1.1\r\nHost: a\r\n\r\n"),
    )
    .await
    .expect("B was answered, not queued behind A's body (the body timeout is 30 s)")
    .unwrap();
    assert_eq!(b.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A's connection to the service was not shared with B.
    assert_eq!(origin.connections(), 2);
    assert!(!origin.connection(1).contains("/slow"));
    drop(a);
    sitio.stop().await;
}

/// Sends `parts` as separate packets (a pause between them) and returns the
/// response status, or `None` if the connection closed without one.
async fn send_in_parts(addr: std::net::SocketAddr, parts: &[&[u8]]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        if s.write_all(part).await.is_err() {
            break;
        }
    }
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, false)
        .await
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn how_the_first_bytes_arrive_does_not_change_how_a_request_is_judged() {
    let origin = Origin::start(Answer::AfterBody, |_| ok("ok")).await;
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let cases: [(&[u8], &[u8]); 5] = [
        (b"GET\t", b"/tab HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"),
        (b" ", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b"\x00", b" / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (
            b"GET\t",
            b"/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (&[b'A'; 33], b" / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (first, rest) in cases {
        let whole = [first, rest].concat();
        let at_once = send_in_parts(sitio.addr, &[&whole]).await;
        let split = send_in_parts(sitio.addr, &[first, rest]).await;
        assert_eq!(split, at_once, "{:?}", String::from_utf8_lossy(&whole));
        if first != [b'A'; 33] {
            assert_eq!(split, Some(400), "{:?}", String::from_utf8_lossy(&whole));
        }
    }
    // Nothing was tunnelled: whatever reached the service went through sitio's
    // HTTP path (its X-Forwarded-For is sitio's, not the client's alone).
    let s = stats(&sitio).await;
    assert_eq!(s["tunnels"]["not-http"], 0, "{s}");
    assert_eq!(s["tunnels"]["tls"], 0, "{s}");
    assert!(s["refused"]["malformed"].as_u64().unwrap() >= 6, "{s}");
    for i in 0..origin.connections() {
        let got = origin.connection(i);
        assert!(!got.contains("6.6.6.6") && !got.contains('\t'), "{got}");
    }
    let metrics = admin_text(&sitio, "/metrics").await;
    assert!(
        metrics.contains("sitio_refused_total{reason=\"malformed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sitio_tunnels_total{reason=\"tls\"} 0"),
        "{metrics}"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_still_undecided_at_the_header_timeout_is_refused_as_http() {
    let origin = Origin::start(Answer::AfterBody, |_| ok("ok")).await;
    let config = sitio::Config {
        header_timeout: Duration::from_millis(300),
        ..config_for(origin.port)
    };
    let sitio = Sitio::start(config, Decorators::none()).await;
    for start in [&b"GET\t"[..], b" ", b"\x16", b"GET / HT"] {
        let status = send_in_parts(sitio.addr, &[start]).await;
        assert!(
            matches!(status, Some(400 | 408)),
            "{start:?}: {status:?}, neither tunnelled nor left hanging"
        );
    }
    assert_eq!(origin.connections(), 0, "nothing reached the service");
    // Counted as each connection closes, which may come a moment after the
    // answer (on another worker's thread).
    let started = std::time::Instant::now();
    loop {
        let s = stats(&sitio).await;
        let refused = s["refused"]["malformed"].as_u64().unwrap()
            + s["refused"]["header-timeout"].as_u64().unwrap();
        if refused == 4 || started.elapsed() > Duration::from_secs(3) {
            assert_eq!(refused, 4, "{s}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_tunnelled_only_while_opaque_tunnels_are_on() {
    let origin = Origin::start(Answer::AfterBody, |_| ok("ok")).await;
    let hello: &[u8] = b"\x16\x03\x01\x00\x05hello";
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin.connection(0).as_bytes(),
        hello,
        "tunnelled as it was"
    );
    assert_eq!(stats(&sitio).await["tunnels"]["tls"], 1);
    sitio.stop().await;

    let config = sitio::Config {
        opaque: sitio::config::OpaqueMode::Off,
        ..config_for(origin.port)
    };
    let sitio = Sitio::start(config, Decorators::none()).await;
    assert_eq!(
        send_in_parts(sitio.addr, &[hello, b"\r\n\r\n"]).await,
        Some(400)
    );
    assert_eq!(origin.connections(), 1, "nothing more reached the service");
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_hosts_and_targets_reach_the_service_in_one_meaning() {
    let origin = Origin::start(Answer::AfterBody, |_| ok("ok")).await;
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    let body = "x".repeat(100);
    let leading_zero = format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0100\r\n\r\n{body}");
    assert_eq!(
        send_on(&mut s, &mut buf, leading_zero.as_bytes())
            .await
            .status,
        200
    );
    let conn_host =
        b"GET /b HTTP/1.1\r\nHost: app.example\r\nConnection: Host, X-Drop\r\nX-Drop: 1\r\n\r\n";
    assert_eq!(send_on(&mut s, &mut buf, conn_host).await.status, 200);
    let http10 = b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    assert_eq!(send_on(&mut s, &mut buf, http10).await.status, 200);
    let got = origin.connection(0).to_ascii_lowercase();
    assert!(
        got.contains("content-length: 100\r\n") && !got.contains("0100"),
        "{got}"
    );
    let b = &got[got.find("get /b").unwrap()..];
    assert!(
        b.contains("host: app.example\r\n") && !b.contains("x-drop"),
        "{b}"
    );
    let c = &got[got.find("get /c").unwrap()..];
    let want_host = format!("host: 127.0.0.1:{}\r\n", origin.port);
    assert_eq!(c.matches("host:").count(), 1, "{c}");
    assert!(
        c.contains(&want_host),
        "an HTTP/1.0 request gets the service's authority: {c}"
    );

    for target in ["evil.example", "!", "*", "evil.example:80"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let res = raw_request(sitio.addr, raw.as_bytes()).await;
        assert_eq!(res.map(|r| r.status), Some(400), "GET {target}");
    }
    let options = raw_request(sitio.addr, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(options.map(|r| r.status), Some(200));
    assert_eq!(stats(&sitio).await["refused"]["target"], 4);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_on_any_method_are_forwarded_intact_or_refused() {
    let origin = Origin::start(Answer::AfterBody, |_| ok("ok")).await;
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let chunked =
        b"GET /q HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(
        raw_request(sitio.addr, chunked).await.map(|r| r.status),
        Some(200)
    );
    let got = origin.connection(0).to_ascii_lowercase();
    assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{got:?}");
    assert!(
        got.contains("connection: close"),
        "on a connection of its own: {got}"
    );
    for method in ["GET", "POST", "DELETE"] {
        let bad = format!(
            "{method} /q HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        );
        let res = raw_request(sitio.addr, bad.as_bytes()).await;
        assert_eq!(
            res.map(|r| r.status),
            Some(400),
            "{method} with a malformed chunked body"
        );
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_both_lengths_is_framed_by_transfer_encoding() {
    let origin = Origin::start(Answer::AfterBody, |_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec()
    })
    .await;
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        let res = send_on(&mut s, &mut buf, b"GET /both HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!((res.status, res.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(res.header("content-length"), None);
    }
    assert_eq!(
        origin.connections(),
        2,
        "the service connection was not reused"
    );
    let s = stats(&sitio).await;
    assert_eq!(s["endpoints"][0]["status"]["200"], 2, "{s}");
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_the_client_and_interim_floods_are_cut() {
    let origin = Origin::start(Answer::AfterBody, |head| {
        let head = String::from_utf8_lossy(head);
        if head.starts_with("GET /flood") {
            b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000)
        } else {
            let hint = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
            [&hint[..], &ok("page")].concat()
        }
    })
    .await;
    let sitio = Sitio::start(config_for(origin.port), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    let hint = send_on(&mut s, &mut buf, b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        (hint.status, hint.header("link")),
        (103, Some("</a.css>; rel=preload"))
    );
    let page = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!((page.status, page.body.as_slice()), (200, &b"page"[..]));
    // Kept alive, and an HTTP/1.0 client gets no 1xx.
    let old = send_on(&mut s, &mut buf, b"GET /page HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert_eq!(old.status, 200);
    let started = Instant::now();
    let flood = raw_request(sitio.addr, b"GET /flood HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(flood.status, 502);
    assert_eq!(flood.header("sitio-error"), Some("upstream-protocol"));
    assert!(started.elapsed() < Duration::from_secs(5));
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_or_a_shared_admin_port_stops_startup_with_exit_2() {
    let backend = Backend::start().await;
    let (mut first, port, admin, _) = start_binary(backend.port(), &[]).await;
    for (env, names) in [
        (vec![("PORT", port.to_string())], "PORT"),
        (
            vec![("SITIO_ADMIN_PORT", admin.to_string())],
            "SITIO_ADMIN_PORT",
        ),
        (
            vec![
                ("PORT", "18999".to_owned()),
                ("SITIO_ADMIN_PORT", "18999".to_owned()),
            ],
            "PORT and SITIO_ADMIN_PORT",
        ),
    ] {
        let out = tokio::process::Command::new(SITIO)
            .env_clear()
            .env("PORT", "0")
            .env("SITIO_ADMIN_PORT", "0")
            .env("TARGET_PORT", backend.port().to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(names), "{stderr}");
    }
    // The first one still has the port to itself.
    let res = raw_request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(res.map(|r| r.status), Some(204));
    first.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_longest_idle_clients_make_room() {
    let backend = Backend::start().await;
    let config = sitio::Config {
        max_connections: 20,
        ..config_for(backend.port())
    };
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(sitio.addr).await.unwrap();
        let mut buf = Vec::new();
        let res = send_on(
            &mut s,
            &mut buf,
            b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
        assert_eq!(res.status, 204);
        idle.push(s);
    }
    // One client in the middle of an exchange: never cut.
    let mut busy = idle.remove(0);
    busy.write_all(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut newcomers = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        let mut s = TcpStream::connect(sitio.addr).await.unwrap();
        let mut buf = Vec::new();
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            send_on(
                &mut s,
                &mut buf,
                b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("new client {i} locked out by idle ones"));
        assert_eq!(res.status, 204);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        newcomers.push(s); // kept open: each needed a slot of its own
    }
    // The five that had been idle longest made room, in that order.
    let mut closed = Vec::new();
    for (i, s) in idle.iter_mut().enumerate() {
        if closed_within(s, Duration::from_millis(100)).await {
            closed.push(i);
        }
    }
    assert_eq!(closed, [0, 1, 2, 3, 4], "closed idle clients");
    busy.write_all(b"cd").await.unwrap();
    let mut buf = Vec::new();
    let res = read_response(&mut busy, &mut buf, false).await;
    assert_eq!(
        res.map(|r| r.status),
        Some(200),
        "the busy client finished its exchange"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_syn_is_a_wait_not_a_504() {
    // python's http.server listens with a backlog of 5 and closes every
    // connection: 32 concurrent clients overflow it and SYNs are dropped.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "hello").unwrap();
    let python = PythonServer::start(dir.path(), &[]).await;
    let sitio = Sitio::start(config_for(python.port), Decorators::none()).await;
    let addr = sitio.addr;
    let clients: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..6 {
                    let res = raw_request(
                        addr,
                        b"GET /f.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                    statuses.push(res.map_or(0, |r| r.status));
                }
                statuses
            })
        })
        .collect();
    let mut errors = Vec::new();
    for c in clients {
        errors.extend(c.await.unwrap().into_iter().filter(|s| *s != 200));
    }
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_can_wait_for_the_service() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let (mut child, _, admin, _) =
        start_binary(port, &[("SITIO_READY_REQUIRES_SERVICE", "on")]).await;
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let ready = || async {
        raw_request(admin, b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .map(|r| r.status)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ready().await, Some(503), "no service yet");
    let backend = Backend::serve(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    let started = Instant::now();
    while ready().await != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "ready after the service listens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(backend);
    let started = Instant::now();
    while ready().await != Some(503) {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "not ready once the service is gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}
