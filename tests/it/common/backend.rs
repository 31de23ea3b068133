//! An in-process HTTP/1.1 service whose behaviour each test controls, counting
//! the connections and requests it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Counters shared with the test.
#[derive(Default)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    /// Request bodies read to their end without error.
    pub complete_bodies: AtomicUsize,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(listener)
    }

    /// Serves on an already bound listener (e.g. a port a test reserved).
    pub fn serve(listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            // Connections live in this task's set, so dropping the backend
            // ends them all, as a process exit would.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                c.connections.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        c.requests.fetch_add(1, Ordering::SeqCst);
                        let c = c.clone();
                        async move { Ok::<_, Infallible>(route(req, &c).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend { addr, counts, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(
        http_body_util::Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    res
}

/// A deterministic byte pattern, so streamed bodies can be checked byte by byte.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

static CHUNK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();

async fn route(mut req: Request<Incoming>, counts: &Counts) -> Response<Body> {
    let path = req.uri().path().to_string();
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next().unwrap_or(""), segments.next()) {
        // n bytes of `pattern`, streamed in 64 KiB chunks without Content-Length.
        ("bytes", Some(n)) => {
            let mut left: usize = n.parse().unwrap();
            let chunk = CHUNK
                .get_or_init(|| Bytes::from(pattern(64 * 1024)))
                .clone();
            let stream = futures_util::stream::poll_fn(move |_| {
                if left == 0 {
                    return std::task::Poll::Ready(None);
                }
                let take = left.min(chunk.len());
                left -= take;
                std::task::Poll::Ready(Some(Ok::<_, BoxError>(Frame::data(chunk.slice(..take)))))
            });
            Response::new(StreamBody::new(stream).boxed_unsync())
        }
        // The request body, streamed back.
        ("echo", _) => Response::new(req.into_body().map_err(BoxError::from).boxed_unsync()),
        // Reads the whole body and answers its length.
        ("count", _) => {
            let mut n = 0usize;
            let mut body = req.into_body();
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => n += frame.data_ref().map_or(0, |d| d.len()),
                    Some(Err(_)) => return full(400, "broken body"),
                    None => break,
                }
            }
            counts.complete_bodies.fetch_add(1, Ordering::SeqCst);
            full(200, n.to_string())
        }
        ("status", Some(code)) => {
            let code: u16 = code.parse().unwrap();
            full(code, format!("the service says {code}\n"))
        }
        ("slow", Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            full(200, "slow done\n")
        }
        // The request head as the service saw it.
        ("headers", _) => {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            full(200, text)
        }
        // A chunked body with a trailer (sent when the client says TE: trailers).
        ("trailers", _) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
            let frames = vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"part one,"))),
                Ok(Frame::data(Bytes::from_static(b"part two"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut res =
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
            res.headers_mut()
                .insert("trailer", HeaderValue::from_static("x-checksum"));
            res
        }
        // Switches to a raw echo protocol after 101.
        ("upgrade", _) => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut res = full(101, Bytes::new());
            res.headers_mut()
                .insert("upgrade", HeaderValue::from_static("echo"));
            res.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            res
        }
        // 304 / 204 / HEAD handling.
        ("cached", _) => {
            let mut res = full(304, Bytes::new());
            res.headers_mut()
                .insert("etag", HeaderValue::from_static("\"v1\""));
            res
        }
        ("nothing", _) => full(204, Bytes::new()),
        ("sized", _) => {
            // A fixed body with Content-Length, also answered to HEAD.
            full(200, Bytes::from_static(b"0123456789"))
        }
        _ => full(404, "not here\n"),
    }
}
