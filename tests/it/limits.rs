//! Limits like trusted proxies: head size, header count, slow heads, idle
//! connections, connection cap, and malformed requests.

use std::time::Duration;

const GET_200: &[u8] = b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n";

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::Backend;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_too_many_headers_get_431() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    assert_eq!(
        raw_request(sitio.addr, big.as_bytes())
            .await
            .unwrap()
            .status,
        431
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        raw_request(sitio.addr, many.as_bytes())
            .await
            .unwrap()
            .status,
        431
    );
    // Just under the limits still passes.
    let fine = format!(
        "GET /status/200 HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(60 * 1024)
    );
    assert_eq!(
        raw_request(sitio.addr, fine.as_bytes())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(backend.requests(), 1);
    sitio.stop().await;
}

/// Sends a head that never ends; sitio's answer, and the connection.
async fn stalled_head(addr: std::net::SocketAddr) -> (TcpStream, RawResponse) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap(); // never finished
    let mut buf = Vec::new();
    let res = tokio::time::timeout(
        Duration::from_secs(3),
        read_response(&mut s, &mut buf, false),
    )
    .await
    .expect("sitio answers a stalled head")
    .unwrap();
    (s, res)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_gets_408_and_the_connection_closes() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.header_timeout = Duration::from_millis(500);
    let sitio = Sitio::start(config, Decorators::none()).await;

    let (mut s, res) = stalled_head(sitio.addr).await;
    assert_eq!(res.status, 408);
    assert_eq!(res.header("sitio-error"), Some("header-timeout"));
    assert!(String::from_utf8_lossy(&res.body).contains("did not arrive in time"));
    assert!(closed_within(&mut s, Duration::from_secs(1)).await);

    // Same after a first exchange: the timer starts again with the next head.
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(send_on(&mut s, &mut buf, GET_200).await.status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await; // idle, longer than the head timeout
    assert_eq!(
        send_on(&mut s, &mut buf, GET_200).await.status,
        200,
        "an idle keep-alive connection is not a slow head"
    );
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(res.status, 408);
    sitio.stop().await;
}

/// The 408 takes the one error path: decorators see it like any failure
/// (here the operator's page for 408 and a header of their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_408_goes_through_the_decorators_error_path() {
    use sitio::{Action, PageFor, on_status};
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.header_timeout = Duration::from_millis(300);
    let decorators = Decorators::builder()
        .with(on_status(408, |head, _| {
            head.headers.insert(
                "x-seen-by",
                sitio::http::HeaderValue::from_static("on_status"),
            );
            Action::Continue
        }))
        .with(sitio::ErrorPages::new().page(PageFor::Status(408), "<h1>too slow, friend</h1>"))
        .build();
    let sitio = Sitio::start(config, decorators).await;
    let (mut s, res) = stalled_head(sitio.addr).await;
    assert_eq!(res.status, 408);
    assert_eq!(res.header("x-seen-by"), Some("on_status"));
    assert!(
        String::from_utf8_lossy(&res.body).contains("too slow, friend"),
        "{res:?}"
    );
    assert_eq!(res.header("connection"), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(1)).await);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_quietly() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.idle_timeout = Duration::from_millis(400);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(send_on(&mut s, &mut buf, GET_200).await.status, 200);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "idle connection closed by sitio");
    assert!(rest.is_empty(), "no 408 for a connection that sent nothing");
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.max_connections = 2;
    let sitio = Sitio::start(config, Decorators::none()).await;
    // Two clients in the middle of an exchange hold both slots (idle ones
    // would make room: see hardening.rs).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(sitio.addr).await.unwrap();
        s.write_all(b"GET /slow/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = tokio::spawn(raw_request(
        sitio.addr,
        b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !third.is_finished(),
        "a third connection must wait while two are busy"
    );
    let res = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(res.status, 200);
    for mut s in held {
        let mut buf = Vec::new();
        let slow = read_response(&mut s, &mut buf, false).await;
        assert_eq!(
            slow.map(|r| r.status),
            Some(200),
            "busy clients were not cut"
        );
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_never_reach_the_service() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let cases: &[&[u8]] = &[
        b"GET /x HTTP/1.1 junk\r\nHost: t\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET /x HTTP/1.1\r\nHost: t\r\nBad\x01Name: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: t\r\nX: bad\x00value\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for raw in cases {
        let res = raw_request(sitio.addr, raw).await;
        let status = res.map(|r| r.status);
        assert_eq!(status, Some(400), "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(backend.requests(), 0, "no malformed request was forwarded");

    // A bad chunk inside a streamed body: the head may already be at the
    // service, but the request is aborted there, never completed, and the
    // client is told it was at fault.
    for raw in [
        &b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
        b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4x\r\nabcd\r\n0\r\n\r\n",
    ] {
        let res = raw_request(sitio.addr, raw).await.unwrap();
        assert_eq!(res.status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(res.header("connection"), Some("close"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend
            .counts
            .complete_bodies
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // A body that merely contains HTTP text is just a body.
    let smuggle_text = b"GET /admin HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut raw = format!(
        "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        smuggle_text.len()
    )
    .into_bytes();
    raw.extend_from_slice(smuggle_text);
    let res = raw_request(sitio.addr, &raw).await.unwrap();
    assert_eq!(
        (res.status, res.body),
        (200, smuggle_text.len().to_string().into_bytes())
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_off() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.body_timeout = Duration::from_millis(400);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "the stalled upload is dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(350));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend
            .counts
            .complete_bodies
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // A slow but steady upload is fine: every byte restarts the clock.
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n")
        .await
        .unwrap();
    for b in b"steady" {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut buf = Vec::new();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!((res.status, res.body.as_slice()), (200, &b"6"[..]));
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.send_timeout = Duration::from_millis(500);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&sitio.addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut s = TcpStream::from_std(socket.into()).unwrap();
    s.write_all(b"GET /bytes/104857600 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // reads nothing meanwhile
    let mut got = 0usize;
    let mut chunk = vec![0u8; 65536];
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(done.is_ok(), "the connection ended");
    assert!(
        got < 100 << 20,
        "it was cut off, not served in full ({got} bytes)"
    );
    sitio.stop().await;
}

/// Waits until `/stats` reports `parked` parked connections.
async fn parked_becomes(sitio: &Sitio, parked: u64) {
    let started = std::time::Instant::now();
    loop {
        let doc = sitio.stats().await;
        if doc["connections_parked"] == parked {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "connections_parked stayed {} (expected {parked})",
            doc["connections_parked"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle keep-alive connection is parked (hyper lets go of it and its
/// buffers; the socket stays open), and behaves as before: its next request
/// is served even when its head comes in pieces, a head that stalls after
/// the park still gets 408 at the header timeout, and the idle timeout
/// still closes it quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_parked_and_serve_their_next_request() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.header_timeout = Duration::from_millis(500);
    config.idle_timeout = Duration::from_secs(2);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(send_on(&mut s, &mut buf, GET_200).await.status, 200);
    parked_becomes(&sitio, 1).await;

    // The next head in two pieces: the first wakes the connection, hyper
    // reads the rest.
    s.write_all(b"GET /status/200 HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        send_on(&mut s, &mut buf, b"TP/1.1\r\nHost: t\r\n\r\n")
            .await
            .status,
        200
    );
    let last_answer = std::time::Instant::now();
    parked_becomes(&sitio, 1).await;

    // A head that stops halfway after the park: 408 at the header timeout.
    let mut slow = TcpStream::connect(sitio.addr).await.unwrap();
    let mut slow_buf = Vec::new();
    assert_eq!(send_on(&mut slow, &mut slow_buf, GET_200).await.status, 200);
    parked_becomes(&sitio, 2).await;
    slow.write_all(b"GET /status/200 HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let timed_out = read_response(&mut slow, &mut slow_buf, false).await;
    assert_eq!(timed_out.map(|r| r.status), Some(408));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // Parked and silent: closed at the idle timeout, with no bytes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the idle timeout closed the parked connection"
    );
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        last_answer.elapsed() >= Duration::from_millis(1900),
        "closed {:?} after its last answer, before the 2 s idle timeout",
        last_answer.elapsed()
    );
    parked_becomes(&sitio, 0).await;
    sitio.stop().await;
}

/// Parked connections wait on their socket alone; the drain still closes
/// them at once (not after the idle timeout or the drain time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_parked_connections_at_once() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.idle_timeout = Duration::from_secs(60);
    config.drain_seconds = 30;
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(sitio.addr).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(send_on(&mut s, &mut buf, GET_200).await.status, 200);
        clients.push(s);
    }
    parked_becomes(&sitio, 3).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), sitio.stop())
        .await
        .expect("sitio stopped");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for mut s in clients {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "parked client closed: {closed:?}"
        );
        assert!(rest.is_empty(), "{rest:?}");
    }
}

/// A client whose head was refused (400) and that keeps trickling bytes is
/// in a lingering close: answered, sitio only drains it. At the connection
/// cap it is the first to make room, though it never had an exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_close_makes_room_at_the_connection_cap() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.max_connections = 1;
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut refused = TcpStream::connect(sitio.addr).await.unwrap();
    refused
        .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 9x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut refused, &mut buf, false)
            .await
            .unwrap()
            .status,
        400
    );
    // Bytes keep coming, each within the lingering close's quiet limit.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if refused.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n"),
    )
    .await
    .expect("the newcomer is admitted")
    .unwrap();
    assert_eq!(res.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the newcomer waited {:?} behind a lingering close",
        started.elapsed()
    );
    trickle.abort();
    sitio.stop().await;
}
