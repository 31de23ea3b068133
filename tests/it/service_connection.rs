//! sitio's own HTTP/1 client (src/upstream/h1) against services that behave
//! as real ones do: closing idle connections, answering uploads early,
//! sending broken responses; and the lingering close that lets a client
//! which sends its whole upload first read an early answer.

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

/// A service on a port of its own that counts its connections; `serve`
/// answers on each.
async fn counting_service<F, Fut>(serve: F) -> (u16, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (port, connections)
}

/// A GET through sitio after an exchange whose service connection must not
/// be reused: it is answered, over a second service connection.
async fn next_get_uses_a_new_connection(addr: std::net::SocketAddr, connections: &AtomicUsize) {
    let res = raw_request(addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("a response");
    assert_eq!(res.status, 200);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the GET went over a new service connection"
    );
}

/// A service that answers every POST at once with a 413, reads nothing of
/// its body and keeps the connection open (as one that refuses an upload by
/// its head does); anything else gets a 200. Counts its connections.
async fn answers_uploads_early() -> (u16, Arc<AtomicUsize>) {
    counting_service(|mut s| async move {
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
    })
    .await
}

/// Starts a 10 MB upload and sends the first 64 KiB of it.
async fn start_upload(addr: std::net::SocketAddr) -> TcpStream {
    let mut uploader = TcpStream::connect(addr).await.unwrap();
    uploader
        .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    uploader.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
    uploader
}

/// A service answering an upload before reading it (413, 401...): the
/// client gets the answer at once, and that service connection (still
/// owed the rest of a body) is not handed to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_is_relayed_and_its_connection_not_reused() {
    let (port, connections) = answers_uploads_early().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut uploader = start_upload(sitio.addr).await;
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

    next_get_uses_a_new_connection(sitio.addr, &connections).await;
    sitio.stop().await;
}

/// A service that answered before the upload ended is not asked again on
/// that connection, even when the rest of the upload then went through:
/// whether it still read the body or gave up on it and is closing (hyper's
/// server closes when the body is not already there once it answered),
/// sitio cannot tell. Here it reads the body and finishes its answer after;
/// the next request still goes over a new connection (Envoy does the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_answered_before_the_upload_ended_is_not_reused() {
    let (port, connections) = counting_service(|mut s| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_request_head(&mut s, &mut buf).await {
            if !head.starts_with("POST") {
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(ok).await.is_err() {
                    return;
                }
                continue;
            }
            // Half the answer at once, the rest once the body is in.
            let half = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok";
            if s.write_all(half).await.is_err() {
                return;
            }
            let mut chunk = [0u8; 64];
            while buf.len() < 10 {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..10);
            if s.write_all(b"!!").await.is_err() {
                return;
            }
        }
    })
    .await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    client
        .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    // The answer's head reached the client: sitio had it before the rest.
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, |s| {
        s.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    client.write_all(b"world").await.unwrap();
    read_until(&mut client, &mut seen, |s| s.ends_with(b"ok!!")).await;
    next_get_uses_a_new_connection(sitio.addr, &connections).await;
    sitio.stop().await;
}

/// Reads from `client` into `seen` until `done` says so (10 s at most).
async fn read_until(client: &mut TcpStream, seen: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let mut chunk = [0u8; 256];
    while !done(seen) {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk))
            .await
            .expect("more of the answer within 10 s")
            .unwrap();
        assert!(n > 0, "sitio closed the connection");
        seen.extend_from_slice(&chunk[..n]);
    }
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

/// Sends an 8 MiB upload whole, as Python's http.client and most simple
/// clients do, and only then reads the answer; every write must succeed and
/// the connection must then end cleanly after the answer.
async fn upload_whole_then_read(addr: std::net::SocketAddr) -> RawResponse {
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    );
    upload_whole_with_head_then_read(addr, &head).await
}

/// [`upload_whole_then_read`] after the head given.
async fn upload_whole_with_head_then_read(addr: std::net::SocketAddr, head: &str) -> RawResponse {
    let mut uploader = TcpStream::connect(addr).await.unwrap();
    let size = 8 << 20;
    uploader.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for sent in (0..size).step_by(chunk.len()) {
        tokio::time::timeout(Duration::from_secs(10), uploader.write_all(&chunk))
            .await
            .expect("the upload is never stalled")
            .unwrap_or_else(|e| panic!("the upload failed after {sent} bytes: {e}"));
    }
    let mut buf = Vec::new();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        read_response(&mut uploader, &mut buf, false),
    )
    .await
    .expect("the answer arrives")
    .expect("a response, not a reset");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), uploader.read_to_end(&mut rest))
        .await
        .expect("sitio closes the connection after the answer");
    assert!(end.is_ok() && rest.is_empty(), "a clean close: {end:?}");
    res
}

/// A client that sends its whole upload before it reads the answer gets the
/// service's early 413, not a reset: sitio reads and drops the rest of the
/// body after the answer (a lingering close) instead of closing with bytes
/// unread, which would fail the client's next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_whole_upload_before_reading_gets_the_early_answer() {
    let (port, _) = answers_uploads_early().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let res = upload_whole_then_read(sitio.addr).await;
    assert_eq!((res.status, &res.body[..]), (413, &b"too big\n"[..]));
    sitio.stop().await;
}

/// The same when sitio's parser refuses the upload's head (a malformed
/// length, answered 400): the client sending its body gets the 400, not a
/// reset, and nothing reaches the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_a_malformed_head_gets_its_400_not_a_reset() {
    let (port, connections) = answers_uploads_early().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}x\r\n\r\n",
        8 << 20
    );
    let res = upload_whole_with_head_then_read(sitio.addr, &head).await;
    assert_eq!(res.status, 400);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached the service"
    );
    sitio.stop().await;
}

/// Refuses every upload by its head, before any of its body is read.
struct RefusesUploads;

impl sitio::Decorator for RefusesUploads {
    type State = ();

    fn on_request<'a>(
        &'a self,
        head: &'a mut sitio::http::request::Parts,
        _: &'a mut (),
        _: &'a mut sitio::Exchange,
    ) -> sitio::Action<'a> {
        if head.method == sitio::http::Method::POST {
            return sitio::Action::Respond(sitio::response::text(401, "sign in first"));
        }
        sitio::Action::Continue
    }
}

/// The same when a decorator answers the upload by its head (an auth check):
/// the body sitio never read is drained after the answer, not reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_a_decorator_refuses_by_its_head_gets_the_answer_not_a_reset() {
    let (port, connections) = answers_uploads_early().await;
    let decorators = Decorators::builder().with(RefusesUploads).build();
    let sitio = Sitio::start(config_for(port), decorators).await;
    let res = upload_whole_then_read(sitio.addr).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached the service"
    );
    sitio.stop().await;
}

/// The lingering close is bounded: a client that stops sending halfway
/// through its upload, and neither reads nor closes, is closed once it has
/// been quiet for the idle timeout (at most 5 s), so it cannot hold its
/// connection any longer than an idle keep-alive client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_close_ends_when_the_client_goes_quiet() {
    let (port, _) = answers_uploads_early().await;
    let mut config = config_for(port);
    config.idle_timeout = Duration::from_millis(500);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let mut uploader = start_upload(sitio.addr).await;
    let started = Instant::now();
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), uploader.read_to_end(&mut rest))
        .await
        .expect("the quiet client's connection is closed");
    assert!(end.is_ok(), "closed, not reset: {end:?}");
    assert!(
        rest.starts_with(b"HTTP/1.1 413"),
        "the answer came first: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    sitio.stop().await;
}
