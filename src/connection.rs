//! One client connection from accept to close: the accept loop every worker
//! runs (admission at the connection cap included), protocol detection, and
//! serving HTTP/1, HTTP/2 or a tunnel; errors logged and counted.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::config::{Config, OpaqueMode};
use crate::detect::{self, Protocol};
use crate::guard::Refusal;
use crate::io::{ClientIo, ConnPhase, HeaderTimeout, Parked, Stalled, Timeouts};
use crate::lot::{Lot, Resume};
use crate::proxy::{ConnCtx, ProxyService, Shared};
use crate::telemetry::Connections;
use crate::tunnel;
use bytes::Bytes;

/// What every connection of one instance shares.
pub(crate) type Prepared = (Arc<Shared>, Arc<Config>, Arc<http1::Builder>);

/// What every accept loop of one instance shares: one per worker runs
/// [`Acceptor::accept`] on a listening socket of its own.
#[derive(Clone)]
pub(crate) struct Acceptor {
    /// What every connection it accepts is served with.
    pub(crate) instance: Instance,
    /// `SITIO_MAX_CONNECTIONS`, across all workers.
    slots: Arc<Semaphore>,
    /// This worker's number (for `sitio_worker_connections_total`).
    pub(crate) worker: usize,
    tasks: tokio_util::task::TaskTracker,
}

impl Acceptor {
    /// Worker 0's acceptor; the others are its clones with their number.
    pub(crate) fn new(
        (shared, config, http): Prepared,
        stop: watch::Receiver<bool>,
        tasks: tokio_util::task::TaskTracker,
    ) -> Self {
        Acceptor {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            instance: Instance {
                shared,
                config,
                http,
                stop,
                own_http1: true,
            },
            worker: 0,
            tasks,
        }
    }

    /// Accepts clients on `listener` and serves each in a task of the
    /// current runtime, until `shutdown` resolves.
    pub(crate) async fn accept(&self, listener: &TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // This worker's parked sockets; without one (no epoll set to be had)
        // each parked connection waits in its own task.
        let i = &self.instance;
        let lot = Lot::start(i.clone(), &i.shared.connections, i.stop.clone())
            .inspect_err(
                |e| tracing::warn!(error = %e, "no parking lot; idle clients keep their tasks"),
            )
            .ok();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(permit) = self.admit(&mut shutdown).await else {
                break;
            };
            self.spawn_connection(stream, peer, permit, lot.clone());
        }
    }

    /// A slot for a newly accepted client. At `SITIO_MAX_CONNECTIONS` the
    /// longest-idle keep-alive client makes room; while every client is busy
    /// the new one waits, and a client that turns idle meanwhile makes room
    /// then. `None` on shutdown.
    async fn admit(
        &self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        loop {
            let evicted = self.instance.shared.connections.evict_longest_idle();
            // An evicted client frees its slot within moments; without one,
            // look again for a client that has turned idle.
            let wait = Duration::from_millis(if evicted { 500 } else { 50 });
            tokio::select! {
                p = self.slots.clone().acquire_owned() => return p.ok(),
                () = tokio::time::sleep(wait) => {}
                () = shutdown.as_mut() => return None,
            }
        }
    }

    /// Serves an accepted client in its own task, counted as open until it ends.
    fn spawn_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        lot: Option<Arc<ParkingLot>>,
    ) {
        // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let connections = &self.instance.shared.telemetry.connections;
        let accepted = Accepted {
            _open: connections.open(),
            _slot: permit,
            lot,
        };
        connections.accepted_by(self.worker);
        // Small writes (heads, last chunks) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let conn = (self.instance.clone(), Some(accepted));
        self.tasks.spawn(serve_connection(conn, stream, peer));
    }
}

/// Serves one client connection: detects its protocol, then proxies HTTP/1
/// exchanges or tunnels the bytes. Generic over the stream so that it can be
/// driven in memory (fuzzing).
///
/// An idle keep-alive client is parked in its worker's lot (`lot`), and
/// its task ends; a stream that is not a socket waits in its task, whose
/// future holds only [`Http1Client`], the stream and the wait. Everything
/// that lives only for a while (detection, hyper's connection, an HTTP/2
/// connection, a tunnel) is boxed and freed when it ends.
pub(crate) fn serve_connection<S: ClientStream>(
    conn: Conn,
    stream: S,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    serve_http1_client(Box::pin(start(conn, stream, peer)))
}

/// What every connection of the instance is served with, and the drain
/// signal; a worker's lot keeps it once for all its parked clients.
#[derive(Clone)]
pub(crate) struct Instance {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Arc<Config>,
    pub(crate) http: Arc<http1::Builder>,
    /// Turns true when the drain begins: accept loops end, connections drain.
    pub(crate) stop: watch::Receiver<bool>,
    /// sitio's own HTTP/1 server side (`h1::serve`) takes what it serves;
    /// off, hyper's serves everything (the fuzz driver's reference).
    pub(crate) own_http1: bool,
}

/// What serves a connection: the instance, and where an accepted one
/// belongs (`None` in memory).
pub(crate) type Conn = (Instance, Option<Accepted>);

/// What an accepted connection holds until it closes: its place in the open
/// count and its slot under `SITIO_MAX_CONNECTIONS`, and its worker's lot.
pub(crate) struct Accepted {
    _open: crate::telemetry::OpenConnection,
    _slot: tokio::sync::OwnedSemaphorePermit,
    lot: Option<Arc<ParkingLot>>,
}

/// A client's stream: a socket, or bytes in memory (fuzzing).
pub(crate) trait ClientStream:
    AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static
{
    /// The socket, to park it in the lot: `Err` with the stream when it is
    /// not one, `Ok(None)` when it could not be taken from Tokio.
    fn into_socket(self) -> Result<Option<std::net::TcpStream>, Self>;
}

impl ClientStream for tokio::net::TcpStream {
    fn into_socket(self) -> Result<Option<std::net::TcpStream>, Self> {
        Ok(self.into_std().ok())
    }
}

impl ClientStream for tokio::io::DuplexStream {
    fn into_socket(self) -> Result<Option<std::net::TcpStream>, Self> {
        Err(self)
    }
}

/// Detects the client's protocol and serves HTTP/2 and tunnels to the end;
/// an HTTP/1 client is returned with its first hyper connection, to be run
/// by [`Http1Client::run`].
async fn start<S: ClientStream>(
    (instance, accepted): Conn,
    mut stream: S,
    peer: SocketAddr,
) -> Option<(Http1Client, Awake<S>)> {
    let Instance {
        shared,
        config,
        stop,
        ..
    } = &instance;
    let head_deadline = Instant::now() + config.header_timeout;
    let connections = &shared.telemetry.connections;
    let (protocol, first) = detect_protocol(&mut stream, config, head_deadline, peer).await?;
    connections.classified(protocol);
    if protocol == Protocol::Http2PriorKnowledge {
        crate::h2c::serve(stream, first, shared.clone(), config, peer, stop).await;
        return None;
    }
    if protocol != Protocol::Http1 {
        let (upstream, label) = (&shared.upstreams[0], protocol.label());
        tunnel::opaque(stream, first, upstream, peer, label, connections).await;
        return None;
    }
    let client = Http1Client::new((instance, accepted), peer, ConnPhase::default());
    let io = ClientIo::new(
        stream,
        first,
        client.ctx.phase.clone(),
        head_deadline,
        client.timeouts(),
        client.ctx.clone(),
    );
    let awake = client.awake(io);
    Some((client, awake))
}

/// One hyper connection's work (see [`serve_awake`]), boxed.
type Awake<S> = Pin<Box<dyn Future<Output = Option<Parked<S>>> + Send>>;

/// An HTTP/1 client connection between its hyper connections: what it
/// keeps while parked, in its worker's lot (or in its task's future, for a
/// stream that is not a socket).
struct Http1Client {
    ctx: Arc<ConnCtx>,
    http: Arc<http1::Builder>,
    config: Arc<Config>,
    /// Read, not waited on, while parked: the drain evicts parked
    /// connections through the idle registry (`server::run`).
    stop: watch::Receiver<bool>,
    own_http1: bool,
    _listed: Option<crate::idle::Listed>,
    accepted: Option<Accepted>,
}

/// The lot of one worker's parked HTTP/1 clients.
pub(crate) type ParkingLot = Lot<ParkedClient>;

/// An HTTP/1 client parked in its worker's lot, counted as parked: only
/// what its connection's state is rebuilt from when it resumes.
pub(crate) struct ParkedClient {
    peer: SocketAddr,
    /// When its last exchange finished (`io::clock` nanoseconds).
    idle_since: u64,
    exchanges: u32,
    /// Its lot taken out (see `Resume::resume`).
    accepted: Option<Accepted>,
    _counted: crate::telemetry::ParkedConnection,
}

impl ParkedClient {
    /// What is left of `client` once parked (its state is dropped: the
    /// registry lists the lot in its stead).
    fn of(client: Http1Client) -> Self {
        let mut client = client;
        let phase = &client.ctx.phase;
        ParkedClient {
            peer: client.ctx.peer,
            idle_since: phase.last_finished(),
            exchanges: phase.exchanges(),
            accepted: client.accepted.take(),
            _counted: client.ctx.shared.telemetry.connections.parked(),
        }
    }
}

impl Resume for ParkedClient {
    type Home = Instance;

    fn idle_since(&self) -> u64 {
        self.idle_since
    }

    fn resume(self, socket: std::net::TcpStream, first: Bytes, lot: &Arc<ParkingLot>) {
        let mut accepted = self.accepted;
        if let Some(accepted) = &mut accepted {
            accepted.lot = Some(lot.clone());
        }
        let phase = ConnPhase::resumed(self.exchanges, self.idle_since);
        let client = Http1Client::new((lot.home().clone(), accepted), self.peer, phase);
        // Runs in the lot's task, on the worker's runtime.
        let Ok(stream) = tokio::net::TcpStream::from_std(socket) else {
            return;
        };
        let io = ClientIo::resume(
            Parked::new(stream),
            first,
            client.ctx.phase.clone(),
            client.timeouts(),
            client.ctx.clone(),
        );
        let awake = client.awake(io);
        let tasks = client.ctx.shared.tasks.clone();
        tasks.spawn(serve_http1_client(Box::pin(std::future::ready(Some((
            client, awake,
        ))))));
    }
}

impl Http1Client {
    /// A client's state, listed in the idle registry.
    fn new((instance, accepted): Conn, peer: SocketAddr, phase: ConnPhase) -> Self {
        let Instance {
            shared,
            config,
            http,
            stop,
            own_http1,
        } = instance;
        let phase = Arc::new(phase);
        let listed = shared.connections.list(phase.clone());
        let ctx = Arc::new(ConnCtx {
            shared,
            phase,
            peer,
            forwarded_for: crate::headers::ip_header_value(peer.ip()),
            response_timer: crate::deadline::Reused::default(),
        });
        Http1Client {
            ctx,
            http,
            config,
            stop,
            own_http1,
            _listed: listed,
            accepted,
        }
    }

    fn timeouts(&self) -> Timeouts {
        let config = &self.config;
        Timeouts {
            header: config.header_timeout,
            idle: config.idle_timeout,
            body: config.body_timeout,
            send: config.send_timeout,
        }
    }

    fn awake<S: ClientStream>(&self, io: ClientIo<S>) -> Awake<S> {
        let (http, ctx, stop) = (self.http.clone(), self.ctx.clone(), self.stop.clone());
        let own = self.own_http1.then(|| {
            let shared = &ctx.shared;
            crate::h1::head::Limits {
                // Heads may go on as bytes: nothing may change them on the
                // way, and the service speaks HTTP/1.
                splice: !shared.decorators.has_request_hooks()
                    && shared.target_protocol != crate::config::TargetProtocol::H2c,
                ..crate::h1::head::Limits::of(&self.config)
            }
        });
        Box::pin(async move { serve_awake(io, own, &http, &ctx, stop).await })
    }
}

/// Serves an HTTP/1 client hyper connection after hyper connection, parked
/// in between (see `io::PARK_AFTER`), until it closes or the idle timeout,
/// the connection cap or the drain ends it. A free function of the boxed
/// start, not a method: the locals it keeps across a wait are all the
/// parked task holds (a method's `self` would be kept twice).
async fn serve_http1_client<S: ClientStream>(
    start: Pin<Box<impl Future<Output = Option<(Http1Client, Awake<S>)>>>>,
) {
    // `.await` takes the box by value: freed once the start is over.
    let Some((mut client, mut awake)) = start.await else {
        return;
    };
    loop {
        let Some(parked) = awake.await else {
            return;
        };
        // A drain that begins after this check closes the lot, or evicts the
        // connection waiting in its task (it is idle).
        if *client.stop.borrow() {
            return;
        }
        // Taken from the client while it is parked (see `Resume::resume`).
        let lot = client.accepted.as_mut().and_then(|a| a.lot.take());
        let parked = match lot {
            Some(lot) => match parked.into_stream().into_socket() {
                Ok(Some(socket)) => {
                    // The task ends here; the lot resumes the client in a
                    // new one. Refused (the drain began), it is closed.
                    let _ = lot.park(socket, ParkedClient::of(client));
                    return;
                }
                Ok(None) => return,
                Err(stream) => {
                    if let Some(accepted) = &mut client.accepted {
                        accepted.lot = Some(lot);
                    }
                    Parked::new(stream)
                }
            },
            None => parked,
        };
        let Some((parked, first)) = wait_parked(parked, &client).await else {
            return;
        };
        let phase = client.ctx.phase.clone();
        let io = ClientIo::resume(parked, first, phase, client.timeouts(), client.ctx.clone());
        awake = client.awake(io);
    }
}

/// A parked connection waiting in its own task (no lot, or a stream that is
/// not a socket): the next request's first bytes, or `None` when the client
/// closed or the connection was evicted.
async fn wait_parked<S: ClientStream>(
    mut parked: Parked<S>,
    client: &Http1Client,
) -> Option<(Parked<S>, Bytes)> {
    let phase = &client.ctx.phase;
    let _parked = phase.park(&client.ctx.shared.telemetry.connections);
    let first = tokio::select! {
        biased;
        first = parked.wait() => first,
        () = phase.evicted() => None,
    };
    first.map(|first| (parked, first))
}

/// Serves the client with one hyper connection until it closes (`None`) or
/// turns idle long enough to be parked: then what is left of it, without
/// anything of hyper's (its buffers, its service).
async fn serve_awake<S: ClientStream>(
    io: ClientIo<S>,
    own: Option<crate::h1::head::Limits>,
    http: &http1::Builder,
    ctx: &Arc<ConnCtx>,
    stop: watch::Receiver<bool>,
) -> Option<Parked<S>> {
    let mut io = io;
    if let Some(limits) = own {
        let draining = *stop.borrow();
        io.read_heads_itself();
        match crate::h1::serve(&mut io, ctx, limits, draining).await {
            crate::h1::Ended::Closed => return None,
            crate::h1::Ended::Parked => return io.into_parked(),
            crate::h1::Ended::Hyper(head, rest) => io.unread(head, &rest),
        }
    }
    let mut conn = http
        .serve_connection(TokioIo::new(io), ProxyService(ctx.clone()))
        .with_upgrades();
    let connections = &ctx.shared.telemetry.connections;
    if let Err(e) = serve_http1(Pin::new(&mut conn), &ctx.phase, &stop, ctx.peer).await {
        log_connection_error(ctx.peer, &e, connections);
        return None;
    }
    // hyper is done: the client closed, the connection was upgraded (the
    // tunnel has it), or it was parked (`io::PARK_AFTER`). A parked
    // connection with bytes in hyper's buffer (a pipelined head) cannot be
    // parked: `ClientIo` never parks then, so this is the close it reads as.
    let parts = conn.into_parts()?;
    if !parts.read_buf.is_empty() {
        return None;
    }
    parts.io.into_inner().into_parked()
}

/// hyper's HTTP/1 connection over a client's stream.
type Http1Conn<S> = http1::UpgradeableConnection<TokioIo<ClientIo<S>>, ProxyService>;

/// Runs one hyper connection until it ends, closing it gracefully when the
/// connection cap evicts it or the drain begins (or had begun: a parked
/// connection woken by its next request during the drain).
async fn serve_http1<S>(
    mut conn: Pin<&mut Http1Conn<S>>,
    phase: &ConnPhase,
    stop: &watch::Receiver<bool>,
    peer: SocketAddr,
) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Until this hyper connection starts an exchange, a request is on its
    // way: a new client's first, or the one whose bytes woke it.
    let before = phase.exchanges();
    if !*stop.borrow() {
        // `biased`: polled on every wake-up of the connection, so no random
        // branch order (a thread-local RNG draw each time); the connection first.
        // The drain, too, is told through `phase` (see
        // `idle::Evictable::drain`): the connection was listed before the
        // look at `stop` above.
        tokio::select! {
            biased;
            r = conn.as_mut() => return r,
            () = phase.evicted() => {
                if !phase.is_draining() {
                    tracing::debug!(client = %peer, "idle keep-alive connection closed to admit a new client");
                }
            }
        }
    }
    // hyper closes a connection with no exchange at once; one with its
    // request on the way gets a moment for it to arrive (then it is answered
    // and closed); one in an exchange is closed after it.
    let grace = Instant::now() + Duration::from_secs(1);
    while phase.exchanges() == before && Instant::now() < grace {
        tokio::select! {
            r = conn.as_mut() => return r,
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Reads until the first bytes say which protocol the client speaks (see
/// `detect`); with `SITIO_OPAQUE=off` everything is HTTP/1 at once. Returns
/// `None` when the client closed, or sent nothing but blank lines within the
/// header timeout.
async fn detect_protocol<S: AsyncRead + Unpin>(
    stream: &mut S,
    config: &Config,
    head_deadline: Instant,
    peer: SocketAddr,
) -> Option<(Protocol, bytes::Bytes)> {
    if config.opaque == OpaqueMode::Off {
        return Some((Protocol::Http1, bytes::Bytes::new()));
    }
    let mut first = BytesMut::with_capacity(1024);
    loop {
        if let Some(p) = detect::classify(&first) {
            return Some((p, first.freeze()));
        }
        tokio::select! {
            read = stream.read_buf(&mut first) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            // Not cut short by a drain: the client connected before it began
            // and its request is on the way; the header timeout bounds this.
            () = tokio::time::sleep_until(head_deadline) => {
                if first.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    tracing::debug!(client = %peer, "connection sent nothing in time; closed");
                    return None;
                }
                // An undecided start by the deadline is judged as HTTP: the
                // parser refuses what it cannot read (400), and the head
                // timeout, already due, answers an incomplete one (408),
                // counted and logged like any other.
                return Some((Protocol::Http1, first.freeze()));
            }
        }
    }
}

fn log_connection_error(peer: SocketAddr, e: &hyper::Error, connections: &Connections) {
    if e.is_parse_too_large() {
        connections.refused(Refusal::HeadTooLarge);
        tracing::warn!(client = %peer, error = %e, status = 431, "refused request: head too large");
    } else if e.is_parse() || e.is_parse_version_h2() {
        connections.refused(Refusal::Malformed);
        tracing::warn!(client = %peer, error = %e, status = 400, "refused malformed request");
    } else if crate::error::cause::<HeaderTimeout>(e).is_some() {
        connections.refused(Refusal::HeaderTimeout);
        tracing::info!(client = %peer, status = 408, "request head too slow; connection closed");
    } else if let Some(why) = crate::error::cause::<Stalled>(e) {
        tracing::info!(client = %peer, "{why}; connection closed");
    } else {
        tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
    }
}
