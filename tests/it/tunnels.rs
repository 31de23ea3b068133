//! Upgraded connections and non-HTTP traffic become two-way tunnels.

use std::time::Duration;

use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::backend::Backend;
use crate::common::*;

/// Sends `request` to a new connection to `sitio`; returns the connection,
/// the first response and what came after it.
async fn first_answer(sitio: &Sitio, request: &[u8]) -> (TcpStream, RawResponse, Vec<u8>) {
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    (s, res, buf)
}

const UPGRADE: &[u8] =
    b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_becomes_a_two_way_tunnel_after_101() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let (mut s, res, _) = first_answer(&sitio, UPGRADE).await;
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

/// A real WebSocket client and service (the `websockets` package) through
/// sitio with its default decorators: the handshake's fields reach the
/// service, and text, a 1 MiB binary message, a burst, ping and pong, a
/// message the service sends first and the close code all come through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_runs_through_sitio() {
    let service = Script::start("ws.py", &["serve"]).await;
    let config = config_for(service.port);
    let decorators = sitio::default_decorators(&config).unwrap();
    let sitio = Sitio::start(config, decorators).await;
    let script = format!("{}/tests/backends/ws.py", env!("CARGO_MANIFEST_DIR"));
    let url = format!("ws://{}/chat?room=1", sitio.addr);
    let client = tokio::process::Command::new("python3")
        .args([script.as_str(), "client", url.as_str()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the WebSocket client finished in time")
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let checks = [
        "subprotocol",
        "text",
        "binary",
        "burst",
        "ping",
        "push",
        "push-echo",
        "close",
    ];
    let want: Vec<String> = checks.iter().map(|c| format!("OK {c}")).collect();
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        want,
        "client said:\n{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert_eq!(
        service.printed("SEEN"),
        ["SEEN /chat?room=1 chat.v1 127.0.0.1"]
    );
    sitio.stop().await;
}

/// Bytes a client sends right after its upgrade request, before the `101`
/// came, reach the service once it switched: nothing read early is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_before_the_101_reach_the_service() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let (mut s, res, mut got) = first_answer(&sitio, &[UPGRADE, b"sent early"].concat()).await;
    assert_eq!(res.status, 101);
    let early = b"sent early".len();
    assert!(fill(&mut s, &mut got, early).await.is_some(), "{got:?}");
    assert_eq!(got, b"sent early");
    sitio.stop().await;
}

/// A service that does not switch answers an upgrade request as any: the
/// connection stays HTTP and serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_upgrade_keeps_the_connection_for_http() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let declined =
        b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    let (mut s, res, mut buf) = first_answer(&sitio, declined).await;
    assert_eq!((res.status, res.body.len()), (200, 5));
    s.write_all(b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!((res.status, res.body.len()), (200, 3));
    sitio.stop().await;
}
