//! The client connection as sitio's own HTTP/1 server side serves it: what a
//! client does while its exchange runs reaches the service.

use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::common::*;

/// A service that takes one request and never answers it: it reports how
/// long after the request its connection was closed (`None`: not within 10 s).
async fn never_answers() -> (u16, oneshot::Receiver<Option<Duration>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        if read_request_head(&mut s, &mut buf).await.is_none() {
            return;
        }
        let asked = Instant::now();
        let mut rest = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while s.read(&mut rest).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let _ = tx.send(closed.ok().map(|()| asked.elapsed()));
    });
    (port, rx)
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
