//! Listening, accepting, serving each connection, and draining on shutdown.

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::server::conn::http1;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::connection::{Acceptor, Prepared};
use crate::decorator::Decorators;
use crate::error::StartError;
use crate::proxy::Shared;
use crate::telemetry::{Routes, Telemetry, report};
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
        target_protocol: config.target_protocol,
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
    let mut background = spawn_background(
        &telemetry,
        shared.upstreams.clone(),
        config.stats_interval.0,
    );
    background.push(tokio::spawn(sweep_parked(
        shared.connections.clone(),
        config.idle_timeout,
    )));
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
    let acceptor = Acceptor::new(
        (shared.clone(), config.clone(), http),
        stop_rx,
        tasks.clone(),
    );
    let count = worker_count(config.workers);
    shared.telemetry.connections.set_workers(count);
    let mut workers = crate::workers::start(&listener, count, &acceptor)?;
    acceptor.accept(&listener, shutdown).await;

    tracing::info!(
        in_flight = tasks.len(),
        "shutting down: draining connections"
    );
    admin_state.ready.store(false, Ordering::Relaxed);
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection is told here (see `idle::Evictable::drain`); one that
    // is listed after this looks at the flag.
    shared.connections.drain();
    let grace = Duration::from_secs(config.drain_seconds);
    let drained = async {
        workers.stopped_accepting().await;
        tasks.close();
        tasks.wait().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
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

/// Ends parked connections at the idle timeout (they have no timer of
/// their own, see `io::Parked`), within a tenth of it (at most a second, at
/// least 10 ms) after it.
async fn sweep_parked(connections: Arc<crate::idle::Registry>, idle_timeout: Duration) {
    let every = (idle_timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::io::clock(std::time::Instant::now());
        let idle = u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        connections.evict_expired(now.saturating_sub(idle));
    }
}

/// Every second refreshes process figures, tidies the idle service
/// connections and gives memory back after load; when asked, logs a summary.
fn spawn_background(
    telemetry: &Arc<Telemetry>,
    upstreams: Box<[Arc<crate::upstream::Upstream>]>,
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
            let now = std::time::Instant::now();
            for upstream in &upstreams {
                upstream.sweep_idle(now);
            }
            // Parked connections hold no buffers: what is busy is the rest.
            let (open, parked) = (t.connections.open_now(), t.connections.parked_now());
            let busy = open.saturating_sub(parked);
            if trimmer.tick(busy, open, parked) {
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
