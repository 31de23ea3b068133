//! Listening, accepting, serving each connection, and draining on shutdown.

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::admin::{self, AdminState};
use crate::config::{Config, OpaqueMode};
use crate::decorator::Decorators;
use crate::detect::{self, Protocol};
use crate::error::StartError;
use crate::guard::Refusal;
use crate::io::{ClientIo, ConnPhase, HeaderTimeout, Stalled, Timeouts};
use crate::proxy::{ConnCtx, ProxyService, Shared};
use crate::telemetry::{Connections, Routes, Telemetry, report};
use crate::tunnel;
use crate::upstream::{Settings, Upstream};

/// The sockets one sitio instance serves: traffic, and optionally the admin API.
pub struct Listeners {
    /// Where clients connect.
    pub traffic: TcpListener,
    /// Where the orchestrator probes health; `None` runs without admin server.
    pub admin: Option<TcpListener>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners").finish_non_exhaustive()
    }
}

impl Listeners {
    /// Binds `PORT` and `SITIO_ADMIN_PORT` on all interfaces (dual-stack IPv6
    /// where available, else IPv4).
    ///
    /// A port already in use stops startup (exit code 2, naming the
    /// variable), and so does `PORT` equal to `SITIO_ADMIN_PORT`: with
    /// `SO_REUSEPORT` the kernel would silently split traffic between the
    /// two. `SITIO_REUSE_PORT=on` opts into exactly that sharing for `PORT`,
    /// so a replacement process can take over during a rolling restart.
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        if config.port == config.admin_port && config.port != 0 {
            return Err(StartError::Config(format!(
                "PORT and SITIO_ADMIN_PORT are both {}: expected two different ports",
                config.port
            )));
        }
        let traffic = bind_all_interfaces(config.port, config.reuse_port)
            .map_err(|e| bind_error("PORT", config.port, e))?;
        let admin = bind_all_interfaces(config.admin_port, false)
            .map_err(|e| bind_error("SITIO_ADMIN_PORT", config.admin_port, e))?;
        Ok(Listeners {
            traffic,
            admin: Some(admin),
        })
    }
}

/// A port in use is a setting to change (exit code 2); other failures are not.
fn bind_error(variable: &str, port: u16, e: std::io::Error) -> StartError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        StartError::Config(format!(
            "{variable}: port {port} is already in use: expected a free port \
             (or SITIO_REUSE_PORT=on to share PORT with another sitio during a rolling restart)"
        ))
    } else {
        StartError::Io(format!("{variable}: cannot listen on port {port}"), e)
    }
}

fn bind_all_interfaces(port: u16, reuse_port: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let open = |domain: Domain, addr: SocketAddr| -> std::io::Result<Socket> {
        let s = Socket::new(domain, Type::STREAM, None)?;
        if domain == Domain::IPV6 {
            s.set_only_v6(false)?;
        }
        // SO_REUSEADDR only lets a restarted sitio bind past connections in
        // TIME_WAIT; on Linux it never lets two listeners share a port.
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&addr.into())?;
        Ok(s)
    };
    let socket = match open(
        Domain::IPV6,
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    ) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
        Err(_) => open(Domain::IPV4, SocketAddr::from(([0, 0, 0, 0], port)))?,
    };
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// What every connection of one instance shares.
pub(crate) type Prepared = (Arc<Shared>, Arc<Config>, Arc<http1::Builder>);

/// Builds what every connection of one instance shares.
pub(crate) fn prepare(
    config: Config,
    decorators: Decorators,
    tasks: tokio_util::task::TaskTracker,
) -> Result<Prepared, StartError> {
    let (decorators, telemetry) = crate::compose::around(&config, decorators)?;
    let upstreams = upstreams(&config, &decorators);
    // Patterns were validated when the configuration was parsed.
    let routes = Routes::new(&config.routes, config.max_routes).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "SITIO_ROUTES ignored");
        Routes::unpatterned(config.max_routes)
    });
    let shared = Arc::new(Shared {
        decorators,
        routes,
        telemetry,
        upstreams,
        tasks,
        connections: Arc::default(),
    });
    let mut http = http1::Builder::new();
    // Not `pipeline_flush(true)`: with it, hyper never flushes the 400/431 it
    // writes for a malformed head (the bad bytes stay in its read buffer, which
    // it takes for a pipelined request still to come).
    http.keep_alive(true)
        .max_buf_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    Ok((shared, Arc::new(config), Arc::new(http)))
}

/// The service (index 0), then the decorators' named upstreams, which take
/// the service's settings where they name none of their own.
fn upstreams(config: &Config, decorators: &Decorators) -> Box<[Arc<Upstream>]> {
    let shards = worker_count(config.workers);
    let service = Settings {
        name: "service".into(),
        host: config.target_host.clone(),
        port: config.target_port,
        connect_timeout: config.connect_timeout,
        response_timeout: config.upstream_timeout.0,
        retries: config.retries,
        idle_timeout: config.upstream_idle_timeout,
        max_idle_per_shard: crate::config::defaults::MAX_IDLE_PER_THREAD,
        shards,
    };
    let named = decorators.upstreams().iter().map(|t| {
        Upstream::new(Settings {
            name: t.name.clone(),
            host: t.host.clone(),
            port: t.port,
            connect_timeout: t.connect_timeout.unwrap_or(service.connect_timeout),
            response_timeout: t.response_timeout.or(service.response_timeout),
            ..service.clone()
        })
    });
    let named: Vec<_> = named.collect();
    std::iter::once(Upstream::new(service))
        .chain(named)
        .collect()
}

/// Runs sitio until `shutdown` resolves, then drains: stops accepting, reports
/// not-ready, lets in-flight exchanges finish within `SITIO_DRAIN_SECONDS`,
/// closes idle keep-alive connections, and returns.
///
/// This is the whole program: the binary only parses configuration, binds
/// [`Listeners`] and calls it; tests call it the same way.
pub async fn run(
    listeners: Listeners,
    config: Config,
    decorators: Decorators,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let tasks = tokio_util::task::TaskTracker::new();
    let (shared, config, http) = prepare(config, decorators, tasks.clone())?;

    let telemetry = shared.telemetry.clone();
    let admin_state = Arc::new(AdminState::new(
        telemetry.clone(),
        config.ready_requires_service,
    ));
    let mut background = spawn_background(&telemetry, config.stats_interval.0);
    if config.ready_requires_service {
        let watch = admin::watch_service(admin_state.clone(), shared.upstreams[0].clone());
        background.push(tokio::spawn(watch));
    }
    let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    let admin_task = listeners
        .admin
        .map(|l| tokio::spawn(admin::serve(l, admin_state.clone())));

    let listener = listeners.traffic;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            listen = %addr,
            admin = %admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            service = %format!("{}:{}", config.target_host, config.target_port),
            decorators = ?shared.decorators.names(),
            "sitio is ready"
        );
    }
    admin_state.ready.store(true, Ordering::Relaxed);

    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = Acceptor {
        shared: shared.clone(),
        config: config.clone(),
        http,
        stop: stop_rx,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        worker: 0,
        tasks: tasks.clone(),
    };
    shared
        .telemetry
        .connections
        .set_workers(worker_count(config.workers));
    let workers = crate::workers::start(&listener, worker_count(config.workers), &acceptor)?;
    acceptor.accept(&listener, shutdown).await;

    tracing::info!(
        in_flight = tasks.len(),
        "shutting down: draining connections"
    );
    admin_state.ready.store(false, Ordering::Relaxed);
    drop(listener);
    let _ = stop_tx.send(true);
    tasks.close();
    let grace = Duration::from_secs(config.drain_seconds);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "drain time (SITIO_DRAIN_SECONDS) elapsed with connections still open; closing them"
        );
    }
    workers.finish().await;
    if let Some(task) = admin_task {
        task.abort();
    }
    for task in background {
        task.abort();
    }
    tracing::info!("sitio stopped");
    Ok(())
}

/// `SITIO_WORKERS`, with 0 meaning one per CPU core.
pub(crate) fn worker_count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// What every accept loop of one instance shares: one per worker runs
/// [`Acceptor::accept`] on a listening socket of its own.
#[derive(Clone)]
pub(crate) struct Acceptor {
    shared: Arc<Shared>,
    config: Arc<Config>,
    http: Arc<http1::Builder>,
    /// Turns true when the drain begins: accept loops end, connections drain.
    pub(crate) stop: watch::Receiver<bool>,
    /// `SITIO_MAX_CONNECTIONS`, across all workers.
    slots: Arc<Semaphore>,
    /// This worker's number (for `sitio_worker_connections_total`).
    pub(crate) worker: usize,
    tasks: tokio_util::task::TaskTracker,
}

impl Acceptor {
    /// Accepts clients on `listener` and serves each in a task of the
    /// current runtime, until `shutdown` resolves.
    pub(crate) async fn accept(&self, listener: &TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
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
            self.spawn_connection(stream, peer, permit);
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
            let evicted = self.shared.connections.evict_longest_idle();
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
    ) {
        // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let open = self.shared.telemetry.connections.open();
        self.shared.telemetry.connections.accepted_by(self.worker);
        // Small writes (heads, last chunks) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (shared, config, http, stop) = (
            self.shared.clone(),
            self.config.clone(),
            self.http.clone(),
            self.stop.clone(),
        );
        self.tasks.spawn(async move {
            serve_connection(shared, config, http, stream, peer, stop).await;
            drop(open);
            drop(permit);
        });
    }
}

/// Serves one client connection: detects its protocol, then proxies HTTP/1
/// exchanges or tunnels the bytes. Generic over the stream so that it can be
/// driven in memory (fuzzing).
pub(crate) async fn serve_connection<S>(
    shared: Arc<Shared>,
    config: Arc<Config>,
    http: Arc<http1::Builder>,
    mut stream: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_deadline = Instant::now() + config.header_timeout;
    let connections = shared.telemetry.connections.clone();
    let Some((protocol, first)) = detect_protocol(&mut stream, &config, head_deadline, peer).await
    else {
        return;
    };
    connections.classified(protocol);
    if protocol != Protocol::Http1 {
        let (upstream, label) = (&shared.upstreams[0], protocol.label());
        return tunnel::opaque(stream, first, upstream, peer, label, &connections).await;
    }

    let phase = Arc::new(ConnPhase::default());
    let _listed = shared.connections.list(phase.clone());
    let ctx = Arc::new(ConnCtx {
        shared,
        phase: phase.clone(),
        peer,
        forwarded_for: crate::headers::ip_header_value(peer.ip()),
        interim_hook: crate::proxy::interim_hook(&phase),
    });
    let io = ClientIo::new(
        stream,
        first,
        phase.clone(),
        head_deadline,
        Timeouts {
            header: config.header_timeout,
            idle: config.idle_timeout,
            body: config.body_timeout,
            send: config.send_timeout,
        },
        ctx.clone(),
    );
    let service = ProxyService(ctx);
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    // `biased`: polled on every wake-up of the connection, so no random
    // branch order (a thread-local RNG draw each time); the connection first.
    let result = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        () = phase.evicted() => {
            // Idle at the connection cap: closed at once, or after the
            // exchange that began meanwhile.
            tracing::debug!(client = %peer, "idle keep-alive connection closed to admit a new client");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = stop.changed() => {
            // hyper closes a connection with no exchange at once; one accepted
            // just before the drain has its first request on the way, so it
            // gets a moment to arrive (then is answered and closed).
            let grace = Instant::now() + Duration::from_secs(1);
            let mut finished = None;
            while finished.is_none() && phase.exchanges() == 0 && Instant::now() < grace {
                tokio::select! {
                    r = conn.as_mut() => finished = Some(r),
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            match finished {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        log_connection_error(peer, &e, &connections);
    }
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

/// Refreshes process figures every second and, when asked, logs a summary.
fn spawn_background(
    telemetry: &Arc<Telemetry>,
    summary_every: Option<Duration>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let t = telemetry.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut trimmer = crate::memory::Trimmer::default();
        loop {
            tick.tick().await;
            t.process.refresh();
            if trimmer.tick(t.connections.open_now()) {
                tokio::task::spawn_blocking(crate::memory::release_free_memory);
            }
        }
    }));
    for task in telemetry
        .reports
        .iter()
        .filter_map(|r| r.clone().background())
    {
        tasks.push(tokio::spawn(task));
    }
    if let Some(every) = summary_every {
        let t = telemetry.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(table) = report::summary_table(&t, 20) {
                    tracing::info!(target: "sitio::stats", "requests so far:\n{table}");
                }
            }
        }));
    }
    tasks
}

fn log_connection_error(peer: SocketAddr, e: &hyper::Error, connections: &Connections) {
    if e.is_parse_too_large() {
        connections.refused(Refusal::HeadTooLarge);
        tracing::warn!(client = %peer, error = %e, status = 431, "refused request: head too large");
    } else if e.is_parse() || e.is_parse_version_h2() {
        connections.refused(Refusal::Malformed);
        tracing::warn!(client = %peer, error = %e, status = 400, "refused malformed request");
    } else if io_cause::<HeaderTimeout>(e).is_some() {
        connections.refused(Refusal::HeaderTimeout);
        tracing::info!(client = %peer, status = 408, "request head too slow; connection closed");
    } else if let Some(why) = io_cause::<Stalled>(e) {
        tracing::info!(client = %peer, "{why}; connection closed");
    } else {
        tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
    }
}

/// The `T` that caused `e`: hyper wraps IO errors, which wrap sitio's own.
fn io_cause<T: std::error::Error + 'static>(e: &hyper::Error) -> Option<&T> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(found) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<T>())
        {
            return Some(found);
        }
        source = err.source();
    }
    None
}
