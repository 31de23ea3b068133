//! HTTP/2 clients (h2c with prior knowledge, detected by the preface on the
//! same `PORT`): hyper's HTTP/2 server drives the connection, and every
//! stream is one exchange through the same driver, decorators and
//! statistics as HTTP/1 (`engine`). To the service each stream goes over
//! HTTP/2 (`SITIO_TARGET_PROTOCOL=auto|h2c`, what gRPC needs) or HTTP/1.1
//! (`http1`).
//!
//! Protection is hyper's and the h2 crate's, with limits set here: streams
//! per connection, header list size, and the caps on resets that defeat
//! rapid reset (CVE-2023-44487) and CONTINUATION floods; plus sitio's own
//! rule against rapid reset paced to slip under those caps ([`RESET_FLOOR`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use compact_str::CompactString;
use http::{Request, Response, request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::body::Body;
use crate::config::{Config, TargetProtocol};
use crate::decorator::{Decorators, Filters};
use crate::engine::{Edits, Leg, Tracked};
use crate::error::ProxyError;
use crate::guard::{RawFraming, Refusal};
use crate::headers;
use crate::proxy::Shared;
use crate::upstream::{PoolHome, RequestBody, RequestBodyState, Source, Upstream};

/// Streams one client may have open at once (Envoy's and nginx's default is 100 and 128).
const MAX_STREAMS: u32 = 100;

/// Rapid reset that paces itself past the h2 crate's cap (which counts only
/// streams reset before they were taken up): streams opened, taken up, each
/// sent to the service, then reset. A connection that has opened at least
/// this many streams and reset half of them before their answer is closed
/// (Envoy's premature-reset rule, with a lower floor: each such stream cost
/// the service a request).
const RESET_FLOOR: u64 = 200;

/// What the streams of one HTTP/2 client connection share.
pub(crate) struct H2Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    forwarded_for: http::HeaderValue,
    /// To the service over HTTP/2 too.
    h2_upstream: bool,
    /// Streams taken up, and those the client reset before their answer.
    streams: AtomicU64,
    reset_early: AtomicU64,
    /// Streams over: answered to their end, or reset before their answer.
    ended: AtomicU64,
    /// When the last open stream ended (`io::clock` nanoseconds).
    idle_since: AtomicU64,
    /// Told when the client resets too many streams (see [`RESET_FLOOR`]).
    abuse: tokio::sync::Notify,
    /// Told when the connection cap needs this idle connection's room, or
    /// the drain began.
    evict: tokio::sync::Notify,
}

impl H2Conn {
    /// A stream is over (for the idle registry).
    fn ended_one(&self, at: Instant) {
        self.idle_since
            .store(crate::io::clock(at), Ordering::Relaxed);
        self.ended.fetch_add(1, Ordering::Release);
    }

    /// One stream ended; `answered` is false when the client reset it first.
    fn stream_ended(&self, answered: bool) {
        if answered {
            return; // Over once its body is (`Leg::finished`).
        }
        self.ended_one(Instant::now());
        let reset = self.reset_early.fetch_add(1, Ordering::Relaxed) + 1;
        let streams = self.streams.load(Ordering::Relaxed);
        if streams >= RESET_FLOOR && reset * 2 >= streams {
            self.abuse.notify_one();
        }
    }
}

impl crate::idle::Evictable for H2Conn {
    /// Idle once it has served a stream and has none open.
    fn idle_since(&self) -> Option<u64> {
        let ended = self.ended.load(Ordering::Acquire);
        let idle = ended > 0 && ended == self.streams.load(Ordering::Relaxed);
        idle.then(|| self.idle_since.load(Ordering::Relaxed))
    }

    /// Ends the connection with a GOAWAY (no stream is cut short).
    fn evict(&self) {
        self.evict.notify_one();
    }

    /// The drain: a GOAWAY, whether idle or not.
    fn drain(&self) {
        self.evict();
    }
}

/// Notes, when dropped, whether its stream got its answer.
struct StreamWatch {
    conn: Arc<H2Conn>,
    answered: bool,
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.conn.stream_ended(self.answered);
    }
}

impl PoolHome for H2Conn {
    fn upstream(&self, index: usize) -> &Upstream {
        &self.shared.upstreams[index]
    }
}

/// Serves one h2c client whose first bytes (the preface, at least) were
/// already read into `first`, until it closes or the drain ends it with a
/// GOAWAY after its streams finish (told through the idle registry, or
/// begun before it was listed: `stop`).
pub(crate) async fn serve<S>(
    stream: S,
    first: Bytes,
    shared: Arc<Shared>,
    config: &Config,
    peer: SocketAddr,
    stop: &watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connections = shared.telemetry.connections.clone();
    let conn = Arc::new(H2Conn {
        h2_upstream: config.target_protocol != TargetProtocol::Http1,
        forwarded_for: headers::ip_header_value(peer.ip()),
        shared,
        peer,
        streams: AtomicU64::new(0),
        reset_early: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        idle_since: AtomicU64::new(0),
        abuse: tokio::sync::Notify::new(),
        evict: tokio::sync::Notify::new(),
    });
    let _listed = conn.shared.connections.list(conn.clone());
    // Listed first: a drain that begins after this look tells the registry.
    if *stop.borrow() {
        crate::idle::Evictable::drain(conn.as_ref());
    }
    let watched = conn.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let conn = conn.clone();
        conn.streams.fetch_add(1, Ordering::Relaxed);
        // A gRPC call's deadline counts from its arrival: the time sitio's
        // hooks take is part of it.
        if let Some(deadline) = crate::grpc::Deadline::of(req.headers()) {
            req.extensions_mut().insert(deadline);
        }
        async move {
            // hyper drops this future when the client resets the stream.
            let mut watch = StreamWatch {
                conn: conn.clone(),
                answered: false,
            };
            let res: Result<Response<Tracked<H2Conn>>, Infallible> =
                crate::engine::exchange(conn, req).await;
            watch.answered = true;
            res
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(1024))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let io = TokioIo::new(Prefixed { first, stream });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = watched.evict.notified() => {
            if !*stop.borrow() {
                tracing::debug!(client = %peer, "idle HTTP/2 connection closed to admit a new client");
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = watched.abuse.notified() => {
            let reset = watched.reset_early.load(Ordering::Relaxed);
            let streams = watched.streams.load(Ordering::Relaxed);
            tracing::warn!(client = %peer, streams, reset,
                "HTTP/2 client closed: it reset most streams once sitio had taken them up (rapid reset)");
            connections.refused(Refusal::Http2Abuse);
            return; // Dropping the connection closes it.
        }
    };
    if let Err(e) = result {
        if let Some(why) = refusal_of(&e) {
            connections.refused(why);
        }
        tracing::debug!(client = %peer, error = %e, "HTTP/2 client connection ended with an error");
    }
}

/// What a connection error says of the client: abuse when the h2 crate
/// called it out (ENHANCE_YOUR_CALM: too many resets, CONTINUATION frames,
/// or pending control frames), malformed when it broke the protocol, nothing
/// when it merely went away.
fn refusal_of(e: &hyper::Error) -> Option<Refusal> {
    let Some(h2) = crate::error::cause::<h2::Error>(e) else {
        return (e.is_parse() || e.is_user()).then_some(Refusal::Malformed);
    };
    match h2.reason() {
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Some(Refusal::Http2Abuse),
        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL) | None => None,
        Some(_) if h2.is_io() || h2.is_remote() => None,
        Some(_) => Some(Refusal::Malformed),
    }
}

/// How an exchange of an h2c client goes to the service.
pub(crate) struct H2cForward {
    /// Over HTTP/2 (`SITIO_TARGET_PROTOCOL=h2c`), else HTTP/1.
    h2: bool,
    /// Its service connection may serve other exchanges.
    reusable: bool,
    /// The call's `grpc-timeout`, counted from its arrival.
    deadline: Option<crate::grpc::Deadline>,
}

impl Leg for H2Conn {
    type In = Incoming;
    /// How the exchange goes to the service, and the call's deadline.
    type Forward = H2cForward;
    const COMPLETE_BODILESS_AT_HEAD: bool = true;

    fn decorators(&self) -> &Decorators {
        &self.shared.decorators
    }

    fn client_addr(&self) -> SocketAddr {
        self.peer
    }

    fn route_of(&self, path: &str) -> CompactString {
        self.shared.routes.route_of(path)
    }

    /// HTTP/2 frames carry no Content-Length/Transfer-Encoding ambiguity
    /// (the h2 crate refuses connection-specific fields outright).
    fn exchange_started(&self) -> RawFraming {
        RawFraming::default()
    }

    fn refused(&self, why: Refusal) {
        self.shared.telemetry.connections.refused(why);
    }

    fn upstream_index(&self, name: Option<&str>) -> Option<usize> {
        self.shared.upstream_index(name)
    }

    /// The head for the service; whether it goes over HTTP/2, whether an
    /// HTTP/1 service connection may serve others afterwards (not after a
    /// request the guard isolated), and the call's gRPC deadline.
    fn forward(
        &self,
        head: &mut request::Parts,
        _body: &mut Incoming,
        upstream: usize,
        edits: Edits,
    ) -> H2cForward {
        let isolate = edits.isolate;
        // Set at the call's arrival, from the client's head: a hook that
        // takes `grpc-timeout` off what the service sees does not take
        // sitio's hold on the call's deadline with it.
        let deadline = head.extensions.remove::<crate::grpc::Deadline>();
        let authority = self.shared.upstreams[upstream].authority();
        headers::to_upstream(head, &self.forwarded_for, isolate, authority);
        if self.h2_upstream {
            headers::for_h2(head);
        }
        H2cForward {
            h2: self.h2_upstream,
            reusable: !isolate,
            deadline,
        }
    }

    fn request_body(
        &self,
        body: Incoming,
        filters: Filters,
    ) -> (RequestBody, Option<Arc<RequestBodyState>>) {
        RequestBody::new(Source::Wire(body), None, filters)
    }

    async fn send(
        self: &Arc<Self>,
        upstream: usize,
        mut req: Request<RequestBody>,
        forward: H2cForward,
        _as_lines: bool,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        // A gRPC call's deadline holds for the whole call: the response head
        // and then its body (a stream past it ends DEADLINE_EXCEEDED).
        let deadline = forward.deadline;
        if let Some(deadline) = &deadline {
            deadline.propagate(req.headers_mut());
        }
        let target = &self.shared.upstreams[upstream];
        let left = deadline.map(|d| d.remaining());
        let res = target
            .send(
                req,
                crate::upstream::How {
                    reusable: forward.reusable,
                    h2: forward.h2,
                    // hyper's HTTP/2 server sends the response: a map.
                    as_lines: false,
                    head: None,
                },
                left,
                None,
                None,
            )
            .await?;
        let mut res = crate::proxy::relay(self.clone(), upstream, res);
        if let Some(d) = deadline {
            res = res.map(|body| crate::grpc::CallDeadline::wrap(body, d.at, d.timeout));
        }
        Ok((res, false))
    }

    fn finished(&self, at: Instant) {
        self.ended_one(at);
    }

    /// HTTP/2 flow control already bounds what runs ahead of the client.
    fn written(&self) -> u64 {
        0
    }

    fn poll_room(&self, _cx: &mut Context<'_>, _start: u64, _sent: u64) -> Poll<()> {
        Poll::Ready(())
    }
}

pin_project_lite::pin_project! {
    /// The client's stream with the bytes the protocol detection read first
    /// put back in front.
    struct Prefixed<S> {
        first: Bytes,
        #[pin]
        stream: S,
    }
}

impl<S: AsyncRead> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this.first.has_remaining() {
            let n = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first[..n]);
            this.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.stream.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
