//! The client connection as sitio's own HTTP/1 server side serves it: what a
//! client does while its exchange runs reaches the service.

use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::common::*;

/// A service that serves its first connection with `serve` and reports
/// what that found.
async fn first_connection<T, F, Fut>(serve: F) -> (u16, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok((s, _)) = listener.accept().await {
            let _ = tx.send(serve(s).await);
        }
    });
    (port, rx)
}

/// A service that takes one request and never answers it: it reports how
/// long after the request its connection was closed (`None`: not within 10 s).
async fn never_answers() -> (u16, oneshot::Receiver<Option<Duration>>) {
    first_connection(|mut s| async move {
        let mut buf = Vec::new();
        read_request_head(&mut s, &mut buf).await?;
        let asked = Instant::now();
        let mut rest = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while s.read(&mut rest).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        closed.ok().map(|()| asked.elapsed())
    })
    .await
}

/// A client that gives up on a slow answer and closes its connection ends
/// the exchange: sitio closes the request at the service at once instead of
/// waiting for an answer nobody will read (hyper's server did the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_ends_its_exchange_at_the_service() {
    let (port, closed) = never_answers().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let mut client = TcpStream::connect(sitio.addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let after = closed
        .await
        .unwrap()
        .expect("the service connection was closed");
    assert!(
        after < Duration::from_secs(3),
        "closed {after:?} after the request, the client left after 300 ms"
    );
    sitio.stop().await;
}

/// A service that reports the first bytes it read of the first request
/// (and answers it).
async fn first_read() -> (u16, oneshot::Receiver<Vec<u8>>) {
    first_connection(|mut s| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).await.unwrap_or(0);
        buf.truncate(n);
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        buf
    })
    .await
}

/// What of an upload arrived with its head goes to the service with the
/// head, in one write: a service that answers before reading the body (and
/// closes a connection whose body is not there yet, as hyper's server does)
/// finds it there. Found by the `server_side` fuzz target: when the body
/// went out a turn later, such a service closed the connection at times,
/// and the next request on it failed with 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_came_with_its_head_goes_to_the_service_with_it() {
    let (port, first) = first_read().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let res = raw_request(
        sitio.addr,
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .expect("a response");
    assert_eq!(res.status, 200);
    let seen = String::from_utf8_lossy(&first.await.unwrap()).into_owned();
    assert!(seen.starts_with("POST /up HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.ends_with("\r\n\r\nhello"),
        "the body with the head: {seen:?}"
    );
    sitio.stop().await;
}
