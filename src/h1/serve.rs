//! The client connection's loop on sitio's own HTTP/1 server side: read a
//! head, run its exchange while watching the client, send the response,
//! again, in one buffer per direction that lives as long as the connection
//! is awake (hyper's server allocates a new read buffer for every request).
//!
//! It serves HTTP/1.0 and HTTP/1.1 requests with no body, a body of known
//! length or a chunked one (`100-continue` included), the body read as the
//! exchange asks for it (`client_body`), and upgrades: once the `101` is out,
//! the loop relays the tunnel itself, beginning with what the client sent
//! early. A head its parser refuses is handed with every byte read so far
//! to hyper's server (`connection::serve_awake`), which answers it as it
//! always did; the connection stays with hyper until it is next parked.
//! Timeouts, parking and the lingering close are `ClientIo`'s, as under
//! hyper.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::head::{self, BodyFraming, Limits, RequestHead};
use super::send::{self, Watch};
use super::watch::{Client, fill};
use crate::client_body::{Feed, Framing};
use crate::error::io_inner;
use crate::io::{ClientIo, ConnPhase, HeaderTimeout, Stalled};
use crate::proxy::{Arrived, ConnCtx};
use crate::tunnel::ServiceSide;
use crate::upstream::Source;

/// How long a request already on its way when the drain or the cap ends the
/// connection may take to arrive (as under hyper, `connection::serve_http1`).
const GRACE: Duration = Duration::from_secs(1);

/// How the loop ended.
pub(crate) enum Ended {
    /// The connection is over (closed, failed, or its client left).
    Closed,
    /// Idle long enough to park: `ClientIo::into_parked` has the socket.
    Parked,
    /// A head this side's parser refuses: its bytes and all read after
    /// them, for hyper to read (and answer) first (`ClientIo::unread`).
    Hyper(Bytes, BytesMut),
}

/// Why a wait ended without what it waited for.
enum Stop {
    Closed,
    Parked,
    Hyper(Bytes, BytesMut),
    Failed(io::Error),
}

/// Serves the client until the connection ends, parks or needs hyper.
/// `draining`: the drain had begun when the connection woke; the request on
/// its way is served, then the connection closes.
pub(crate) async fn serve<S>(
    io: &mut ClientIo<S>,
    ctx: &Arc<ConnCtx>,
    limits: Limits,
    draining: bool,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Conn {
        buf: BytesMut::new(),
        out: Vec::new(),
        spare: None,
        first: ctx.phase.exchanges(),
        closing: draining.then(|| Instant::now() + GRACE),
    };
    let stop = loop {
        match conn.exchange(io, ctx, limits).await {
            Ok(true) => {}
            Ok(false) => {
                // Normal end of a connection that does not persist: FIN,
                // lingering if the client may still send (`ClientIo`).
                let _ = io.shutdown().await;
                break Stop::Closed;
            }
            Err(stop) => break stop,
        }
    };
    match stop {
        Stop::Closed => Ended::Closed,
        Stop::Parked => Ended::Parked,
        Stop::Hyper(head, rest) => Ended::Hyper(head, rest),
        Stop::Failed(e) => {
            log_failure(ctx, &e);
            Ended::Closed
        }
    }
}

/// One awake connection's buffers and drain state.
struct Conn {
    /// Bytes read and not yet parsed.
    buf: BytesMut,
    /// The response head (and small body frames) on their way out.
    out: Vec<u8>,
    /// The last response's field map, emptied: the next request's.
    spare: Option<HeaderMap>,
    /// Exchanges when the connection woke: until one more starts, a request
    /// is on its way.
    first: u32,
    /// The connection closes after the exchange in progress; a request on
    /// its way may arrive until then.
    closing: Option<Instant>,
}

impl Conn {
    /// One exchange; `Ok(false)`: the connection closes after it.
    async fn exchange<S>(
        &mut self,
        io: &mut ClientIo<S>,
        ctx: &Arc<ConnCtx>,
        limits: Limits,
    ) -> Result<bool, Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let head = self.read_head(io, &ctx.phase, limits).await?;
        let phase = &ctx.phase;
        phase.head_scanned(head.raw);
        let framing = match head.body {
            BodyFraming::Empty => None,
            BodyFraming::Length(len) => Some(Framing::Length(len)),
            BodyFraming::Chunked => Some(Framing::Chunked(limits.chunked)),
        };
        let (feed, body) = match framing {
            Some(framing) => {
                let (feed, body) = Feed::new(framing);
                if !head.expect_continue {
                    // What of the body came with the head is ready at once
                    // (hyper's first chunk is too): it goes to the service
                    // with the head, and a service that answers before
                    // reading the body finds it there.
                    feed.take_from(&mut self.buf);
                }
                (Some(feed), Source::Client(body))
            }
            None => (None, Source::Empty),
        };
        // Where the service's side of an upgrade comes, if it switches.
        let (upgrade, mut upgraded) = if head.wants_upgrade {
            let (to_loop, from_send) = tokio::sync::oneshot::channel();
            (Some(to_loop), Some(from_send))
        } else {
            (None, None)
        };
        let body = Arrived {
            head: for_service(ctx, &head, feed.is_some()),
            body,
            upgrade,
        };
        phase.request_arrived(feed.is_some());
        let asked_head = head.parts.method == Method::HEAD;
        let connect = head.parts.method == Method::CONNECT;
        let http10 = head.parts.version == Version::HTTP_10;
        let head_trailers = head.trailers;
        let mut keep_alive = head.keep_alive && self.closing.is_none();
        let req = Request::from_parts(head.parts, body);
        // Room first, then the future written into it (see `ProxyService`).
        let exchange = Box::write(Box::new_uninit(), crate::engine::exchange(ctx.clone(), req));
        let mut exchange = Box::into_pin(exchange);
        // hyper's rule: only HTTP/1.1, only for a body to come.
        let owed = head.expect_continue && !http10 && feed.is_some();
        let mut watch = Client::new(&mut self.buf, feed, owed.then_some(&**phase));
        let mut res = std::future::poll_fn(|cx| {
            if let Poll::Ready(Ok(res)) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Ok(res));
            }
            // Interim responses (103) the exchange queued go out now.
            if let Poll::Ready(Err(e)) = Pin::new(&mut *io).poll_flush(cx) {
                return Poll::Ready(Err(Stop::Failed(e)));
            }
            watch
                .poll_gone(io, cx)
                .map(|e| Err(e.map_or(Stop::Closed, Stop::Failed)))
        })
        .await?;
        drop(exchange);
        keep_alive &= !phase.is_evicted();
        let asked = super::response::Asked {
            head: asked_head,
            keep_alive,
            http10,
            trailers: head_trailers,
            connect,
        };
        let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        watch.responding();
        let buffers = (&mut self.out, &mut self.spare);
        let lines = res.body_mut().take_lines();
        match send::response(io, (res, lines), asked, buffers, &mut watch).await {
            Ok(_) if switching => {
                // The service's side, if it switched: not when a decorator
                // answered `101` itself, or the body is not all read.
                let service = upgraded.as_mut().and_then(|s| s.try_recv().ok());
                if let Some(service) = service.filter(|_| watch.body_done(phase)) {
                    drop(watch);
                    self.tunnel(io, ctx, service).await;
                }
                Err(Stop::Closed)
            }
            // A body left unread closes the connection (the close lingers).
            Ok(persists) => Ok(persists && watch.body_done(phase)),
            Err(send::Failed::Io(e)) => Err(Stop::Failed(e)),
            Err(send::Failed::ClientGone) => Err(Stop::Closed),
            Err(other) => {
                tracing::debug!(client = %ctx.peer, error = %other, "response not sent whole; connection closed");
                Err(Stop::Closed)
            }
        }
    }

    /// Relays the upgraded connection both ways until it ends, beginning
    /// with what the client sent after its request.
    async fn tunnel<S>(&mut self, io: &mut ClientIo<S>, ctx: &ConnCtx, service: ServiceSide)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // HTTP's timeouts no longer apply, nor parking.
        ctx.phase.tunnel();
        let early = std::mem::take(&mut self.buf).freeze();
        // The tunnel's buffers are its own.
        (self.out, self.spare) = (Vec::new(), None);
        crate::tunnel::upgraded(io, early, service, ctx.peer).await;
        let _ = io.shutdown().await;
    }

    /// Reads until a whole head is in: parsed, or handed to hyper when the
    /// parser refuses it (hyper answers it as before).
    async fn read_head<S>(
        &mut self,
        io: &mut ClientIo<S>,
        phase: &ConnPhase,
        limits: Limits,
    ) -> Result<RequestHead, Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            if !self.buf.is_empty() {
                match head::parse_into(&mut self.buf, limits, &mut self.spare) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(_) => {
                        let read = std::mem::take(&mut self.buf).freeze();
                        return Err(Stop::Hyper(read, BytesMut::new()));
                    }
                }
            }
            let read = match self.closing {
                None => tokio::select! {
                    biased;
                    read = fill(io, &mut self.buf) => read,
                    () = phase.evicted() => {
                        if phase.exchanges() != self.first {
                            return Err(Stop::Closed);
                        }
                        // The request that woke the connection may still come.
                        self.closing = Some(Instant::now() + GRACE);
                        continue;
                    }
                },
                // Closing before this connection's first exchange (the only
                // time a closing connection reads a head): its grace.
                Some(until) => tokio::select! {
                    biased;
                    read = fill(io, &mut self.buf) => read,
                    () = tokio::time::sleep_until(until) => return Err(Stop::Closed),
                },
            };
            match read {
                Ok(0) if io.is_parked() && self.buf.is_empty() => return Err(Stop::Parked),
                Ok(0) => return Err(Stop::Closed),
                Ok(_) => {}
                Err(e) => return Err(Stop::Failed(e)),
            }
        }
    }
}

/// The head the service gets, made now from the client's bytes (`splice`)
/// if the head was planned so; `None` where only the field map's way can
/// frame its body (neither a length nor chunks). Made before the exchange,
/// whose future it would otherwise grow.
fn for_service(ctx: &ConnCtx, head: &RequestHead, body: bool) -> Option<Bytes> {
    let splice = head.splice.as_ref()?;
    if body && splice.length.is_none() && !splice.chunked {
        return None;
    }
    let target = head.parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let added = crate::splice::Added {
        service: ctx.shared.upstreams[0].authority(),
        client_ip: &ctx.forwarded_for,
    };
    Some(splice.encode(&head.wire, &head.parts.method, target, &added))
}

/// Logs (and counts) why a connection failed, as for hyper's connections.
fn log_failure(ctx: &ConnCtx, e: &io::Error) {
    let peer = ctx.peer;
    if io_inner::<HeaderTimeout>(e).is_some() {
        let connections = &ctx.shared.telemetry.connections;
        connections.refused(crate::guard::Refusal::HeaderTimeout);
        tracing::info!(client = %peer, status = 408, "request head too slow; connection closed");
    } else if let Some(why) = io_inner::<Stalled>(e) {
        tracing::info!(client = %peer, "{why}; connection closed");
    } else {
        tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
    }
}
