//! HTTP/2 clients (h2c with prior knowledge) through sitio: served stream by
//! stream through the same decorators and statistics as HTTP/1, to an
//! HTTP/2 service (gRPC's case) or an HTTP/1.1 one, as
//! `SITIO_TARGET_PROTOCOL` says. Clients are curl (nghttp2) and hyper's
//! HTTP/2 client; the HTTP/2 service is hyper's server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sitio::config::TargetProtocol;
use sitio::{Decorators, ErrorPages};
use tokio::net::{TcpListener, TcpStream};

use crate::common::backend::Backend;
use crate::common::*;

/// An HTTP/2 (h2c) service: `/echo` answers with what it received (version,
/// path, client address as forwarded) and a `grpc-status` trailer; other
/// paths 404. Also returns how many connections it accepted.
async fn h2_service() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                type Body = StreamBody<
                    futures_util::stream::Iter<
                        std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>,
                    >,
                >;
                if req.uri().path() != "/echo" {
                    let frames = vec![Ok(Frame::data(Bytes::from_static(b"no such thing\n")))];
                    let mut res = Response::new(Body::new(futures_util::stream::iter(frames)));
                    *res.status_mut() = http::StatusCode::NOT_FOUND;
                    return Ok::<_, Infallible>(res);
                }
                let seen = format!(
                    "{:?} {} xff={}\n",
                    req.version(),
                    req.uri().path(),
                    req.headers()
                        .get("x-forwarded-for")
                        .map_or("-", |v| v.to_str().unwrap_or("?"))
                );
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let frames = vec![
                    Ok(Frame::data(Bytes::from(seen))),
                    Ok(Frame::trailers(trailers)),
                ];
                Ok(Response::new(Body::new(futures_util::stream::iter(frames))))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, accepted)
}

pub(crate) type Client = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// hyper's HTTP/2 client on a new connection (prior knowledge).
pub(crate) async fn h2_connect(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// One request on `client`: status, body, trailers.
pub(crate) async fn h2_send(
    client: &mut Client,
    addr: SocketAddr,
    path: &str,
) -> (u16, String, Option<HeaderMap>) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = client.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    (status, body, trailers)
}

/// One request on a connection of its own.
async fn h2_get(addr: SocketAddr, path: &str) -> (u16, String, Option<HeaderMap>) {
    h2_send(&mut h2_connect(addr).await, addr, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_decorated_end_to_end_over_http2() {
    let (service, service_connections) = h2_service().await;
    let pages = ErrorPages::new().not_found("<h1>Look elsewhere</h1>\n");
    let sitio = Sitio::start(
        config_for(service.port()),
        Decorators::builder().with(pages).build(),
    )
    .await;
    // 20 streams at once, the first ones, share the worker's HTTP/2 connection to the
    // service (one per worker thread at most), not one dial each.
    let client = h2_connect(sitio.addr).await;
    let streams = (0..20).map(|_| {
        let (mut client, addr) = (client.clone(), sitio.addr);
        tokio::spawn(async move { h2_send(&mut client, addr, "/echo").await.0 })
    });
    for status in futures_util::future::join_all(streams).await {
        assert_eq!(status.unwrap(), 200);
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dialled = service_connections.load(Ordering::Relaxed);
    assert!(dialled <= workers, "{dialled} connections to the service");

    // HTTP/2 all the way (SITIO_TARGET_PROTOCOL=auto): the service sees
    // HTTP/2 and the forwarding header; its trailers reach the client.
    let (status, body, trailers) = h2_get(sitio.addr, "/echo").await;
    assert_eq!(status, 200);
    assert_eq!(body, "HTTP/2.0 /echo xff=127.0.0.1\n");
    let trailers = trailers.expect("the service's trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    // A decorator's work applies to HTTP/2 streams: the 404 page replaced.
    let (ok, out) = curl(&[
        "-s",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &sitio.url("/photos/9"),
    ])
    .await;
    assert!(ok);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "<h1>Look elsewhere</h1>\n\n2 404"
    );

    // Counted like HTTP/1: per route, and the connections by protocol.
    let doc = sitio.stats().await;
    let hits = |route: &str| {
        doc["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["route"] == route)
            .map(|e| e["hits"].as_u64().unwrap())
    };
    assert_eq!(hits("/echo"), Some(21), "{doc}");
    assert_eq!(hits("/photos/{id}"), Some(1), "{doc}");
    assert_eq!(doc["connections_total"]["h2c"], 3, "{doc}");
    assert!(
        doc["tunnels"].get("h2c").is_none(),
        "served, not tunnelled: {doc}"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_protocol_picks_http1_or_http2_to_the_service() {
    // HTTP/2 clients, an HTTP/1.1 service.
    let backend = Backend::start().await;
    let config = sitio::config::Config {
        target_protocol: TargetProtocol::Http1,
        ..config_for(backend.port())
    };
    let sitio = Sitio::start(config, Decorators::none()).await;
    let (status, _, _) = h2_get(sitio.addr, "/status/200").await;
    assert_eq!(status, 200);
    assert_eq!(backend.requests(), 1);
    // Many streams on one client connection, at once: all answered.
    let client = h2_connect(sitio.addr).await;
    let streams = (201..=210).map(|code| {
        let mut client = client.clone();
        let addr = sitio.addr;
        tokio::spawn(async move {
            h2_send(&mut client, addr, &format!("/status/{code}"))
                .await
                .0
        })
    });
    let codes: Vec<u16> = futures_util::future::join_all(streams)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(codes, (201..=210).collect::<Vec<u16>>());
    assert_eq!(backend.requests(), 11);
    sitio.stop().await;

    // HTTP/1.1 clients, an HTTP/2 service (SITIO_TARGET_PROTOCOL=h2c).
    let (service, _) = h2_service().await;
    let config = sitio::config::Config {
        target_protocol: TargetProtocol::H2c,
        ..config_for(service.port())
    };
    let sitio = Sitio::start(config, Decorators::none()).await;
    let (ok, out) = curl(&["-s", "--http1.1", &sitio.url("/echo")]).await;
    assert!(ok);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/2.0 /echo xff=127.0.0.1\n"
    );
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_whose_service_is_down_gets_a_502_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sitio = Sitio::start(config_for(port), Decorators::none()).await;
    let started = std::time::Instant::now();
    let (status, _, _) = h2_get(sitio.addr, "/echo").await;
    assert_eq!(status, 502);
    assert!(started.elapsed() < Duration::from_secs(2));
    sitio.stop().await;
}

/// A request body over HTTP/2 reaches an HTTP/2 service whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_through() {
    let backend = Backend::start().await;
    let config = sitio::config::Config {
        target_protocol: TargetProtocol::Http1,
        ..config_for(backend.port())
    };
    let sitio = Sitio::start(config, Decorators::none()).await;
    let stream = TcpStream::connect(sitio.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = Bytes::from(vec![b'x'; 300_000]);
    let req = Request::post(format!("http://{}/echo", sitio.addr))
        .body(Full::new(body.clone()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), body.len());
    assert_eq!(backend.connections(), 1);

    // A GET with a body is isolated by the guard, as over HTTP/1: a
    // service connection of its own, never a pooled one.
    let req = Request::get(format!("http://{}/echo", sitio.addr))
        .body(Full::new(Bytes::from_static(b"odd")))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    assert_eq!(
        backend.connections(),
        2,
        "the isolated request reused a pooled connection"
    );
    sitio.stop().await;
}

/// At `SITIO_MAX_CONNECTIONS`, an HTTP/2 client with no stream open makes
/// room for a newcomer like an idle HTTP/1 keep-alive client (it gets a
/// GOAWAY), while one with a stream still running is never cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_clients_make_room_at_the_connection_cap() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.max_connections = 2;
    config.target_protocol = TargetProtocol::Http1;
    let sitio = Sitio::start(config, Decorators::none()).await;
    let addr = sitio.addr;

    // A busy HTTP/2 client (a stream running) and an idle one fill the cap.
    let mut busy = h2_connect(addr).await;
    let running = tokio::spawn(async move { h2_send(&mut busy, addr, "/slow/1500").await.0 });
    let mut idle = h2_connect(addr).await;
    assert_eq!(h2_send(&mut idle, addr, "/status/200").await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    let res = raw_request(addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the newcomer waited {:?}: the idle HTTP/2 client did not make room",
        started.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while !idle.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle HTTP/2 client was sent away");
    assert_eq!(
        running.await.unwrap(),
        200,
        "the busy HTTP/2 client was not cut"
    );
    sitio.stop().await;
}
