//! sitio's own HTTP/1 client (src/upstream/h1) against services that behave
//! as real ones do: closing idle connections, answering uploads early,
//! sending broken responses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// The `Content-Length` of a request head (0 without one).
fn length_of(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// A service that answers one request per connection (reading its body)
/// and then closes the connection shortly after, as one with a short
/// keep-alive timeout does; every other connection first says so with an
/// unsolicited `408` (Node and nginx do). Counts the bodies it received.
async fn closes_idle_connections() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(AtomicUsize::new(0));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let mut accepted = 0usize;
        while let Ok((mut s, _)) = listener.accept().await {
            accepted += 1;
            let seen = seen.clone();
            let says_408 = accepted.is_multiple_of(2);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(head) = read_request_head(&mut s, &mut buf).await else {
                    return;
                };
                let mut chunk = [0u8; 4096];
                while buf.len() < length_of(&head) {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                if says_408 {
                    let _ = s
                        .write_all(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (port, bodies)
}

/// A POST is never retried, so a pooled connection the service closed (or
/// wrote a stray 408 on) while it sat idle must be found before the request
/// goes out, not after: every upload lands exactly once and gets its 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_service_closed_while_idle_never_cost_a_request() {
    let (port, bodies) = closes_idle_connections().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..6 {
        let res = send_on(
            &mut client,
            &mut buf,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert_eq!(
            res.status,
            200,
            "upload {i}: {:?}",
            res.header("sitio-error")
        );
        // Longer than the service keeps a connection: the pooled one is
        // closed (or holds a stray 408) by the next upload.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(
        bodies.load(Ordering::SeqCst),
        6,
        "each upload reached the service once"
    );
    sitio.stop().await;
}

/// A service answering an upload before reading it (413, 401...): the
/// client gets the answer at once, and that service connection (still
/// owed the rest of a body) is not handed to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_is_relayed_and_its_connection_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request_head(&mut s, &mut buf).await {
                    let answer: &[u8] = if head.starts_with("POST") {
                        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n\r\ntoo big\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if head.starts_with("POST") {
                        // Reads nothing more: the body is never taken.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                }
            });
        }
    });
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut uploader = TcpStream::connect(sitio.addr).await.unwrap();
    uploader
        .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    uploader.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        read_response(&mut uploader, &mut buf, false),
    )
    .await
    .expect("the early answer arrives while the upload is unfinished")
    .expect("a response");
    assert_eq!((res.status, &res.body[..]), (413, &b"too big\n"[..]));
    assert!(started.elapsed() < Duration::from_secs(3));

    let res = raw_request(sitio.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("a response");
    assert_eq!(res.status, 200);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the GET went over a new service connection"
    );
    sitio.stop().await;
}

/// Responses a service can get wrong: each is a 502 naming the protocol
/// failure, and the next request through the same client connection is
/// served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_service_responses_are_502_and_harm_nothing_after() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request_head(&mut s, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let answer = match path.as_str() {
                        "/garbage" => b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
                        "/two-lengths" => {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"
                                .to_vec()
                        }
                        "/huge-head" => format!(
                            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
                            "b".repeat(40_000)
                        )
                        .into_bytes(),
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                    };
                    if s.write_all(&answer).await.is_err() || path != "/ok" {
                        return; // a broken exchange ends its connection
                    }
                }
            });
        }
    });
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    for path in ["/garbage", "/two-lengths", "/huge-head"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let res = send_on(&mut client, &mut buf, raw.as_bytes()).await;
        assert_eq!(res.status, 502, "{path}");
        assert_eq!(
            res.header("sitio-error"),
            Some("upstream-protocol"),
            "{path}"
        );
        let res = send_on(
            &mut client,
            &mut buf,
            b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await;
        assert_eq!(
            (res.status, &res.body[..]),
            (200, &b"ok"[..]),
            "after {path}"
        );
    }
    sitio.stop().await;
}

/// A `103 Early Hints` is for the time the service still works on its
/// answer: it reaches the client at once, not with the final response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_the_client_before_the_final_answer_is_ready() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request_head(&mut s, &mut buf).await.is_some() {
                    let hint = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
                    if s.write_all(hint).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npage")
                        .await;
                }
            });
        }
    });
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let hint = send_on(
        &mut client,
        &mut buf,
        b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(hint.status, 103);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the hint waited for the answer: {:?}",
        started.elapsed()
    );
    let page = read_response(&mut client, &mut buf, false).await.unwrap();
    assert_eq!((page.status, &page.body[..]), (200, &b"page"[..]));
    sitio.stop().await;
}
