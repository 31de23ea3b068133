//! Upgraded connections and non-HTTP traffic become two-way tunnels.

use std::time::Duration;

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::backend::Backend;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_becomes_a_two_way_tunnel_after_101() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(res.status, 101);
    assert_eq!(res.header("upgrade"), Some("echo"));
    for msg in [
        &b"hello sitio"[..],
        b"\x00\x01 GET / HTTP/1.1\r\n\r\n binary",
    ] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
    sitio.stop().await;
}

/// A non-HTTP service: reads until the client half-closes, then answers and closes.
async fn reply_after_eof_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                let mut reply = b"ECHO:".to_vec();
                reply.extend_from_slice(&got);
                s.write_all(&reply).await.unwrap();
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_traffic_is_tunnelled_with_half_close() {
    let port = reply_after_eof_service().await;
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    for payload in [
        &b"\x16\x03\x01\x00\xa5binary TLS-like hello \x00\xff"[..],
        b"*1\r\n$4\r\nPING\r\n",
    ] {
        let mut s = TcpStream::connect(sitio.addr).await.unwrap();
        s.write_all(payload).await.unwrap();
        s.shutdown().await.unwrap(); // half-close: the service must see EOF and still answer
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let mut want = b"ECHO:".to_vec();
        want.extend_from_slice(payload);
        assert_eq!(got, want);
    }
    sitio.stop().await;
}
