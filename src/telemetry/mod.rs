//! Telemetry: per-endpoint statistics, connection counters, the live tap and
//! process figures, shown by `/stats`, `/metrics`, `/tap` and the dashboard.

pub mod process;
pub mod prometheus;
pub mod report;
pub mod routes;
pub mod stats;
pub mod tap;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use crate::decorator::{Decorator, Exchange};
use crate::detect::Protocol;
use crate::guard::Refusal;

pub use routes::Routes;
pub use stats::StatsHub;
pub use tap::TapHub;

/// Connection counters; touched once per connection, never per request.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicU64,
    /// Idle keep-alive connections parked without hyper's buffers.
    parked: AtomicU64,
    http1: AtomicU64,
    opaque: AtomicU64,
    h2c: AtomicU64,
    tls: AtomicU64,
    /// Refused requests, by [`Refusal`] in the order of [`Refusal::ALL`].
    refused: [AtomicU64; Refusal::ALL.len()],
    opaque_bytes_in: AtomicU64,
    opaque_bytes_out: AtomicU64,
    /// Clients accepted by each worker (`SITIO_WORKERS`); the last slot
    /// also counts workers beyond it.
    accepted: [AtomicU64; WORKERS_SHOWN],
    workers: AtomicUsize,
}

/// Workers reported one by one in `/stats` and `/metrics`.
const WORKERS_SHOWN: usize = 32;

impl Connections {
    /// Counts a connection as open until the guard drops.
    pub(crate) fn open(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// Counts a connection by the protocol it was found to speak.
    pub(crate) fn classified(&self, protocol: Protocol) {
        let counter = match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Opaque => &self.opaque,
            Protocol::Http2PriorKnowledge => &self.h2c,
            Protocol::Tls => &self.tls,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// How many workers accept clients (reported from 0 to `n - 1`).
    pub(crate) fn set_workers(&self, n: usize) {
        self.workers.store(n, Ordering::Relaxed);
    }

    /// Counts a client accepted by `worker`.
    pub(crate) fn accepted_by(&self, worker: usize) {
        self.accepted[worker.min(WORKERS_SHOWN - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Clients accepted so far by each worker, worker 0 first.
    pub fn per_worker(&self) -> Vec<u64> {
        let n = self.workers.load(Ordering::Relaxed).clamp(1, WORKERS_SHOWN);
        self.accepted[..n]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Adds a closed tunnel's bytes.
    pub(crate) fn tunnelled(&self, bytes_in: u64, bytes_out: u64) {
        self.opaque_bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.opaque_bytes_out
            .fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open_now(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a connection as parked (idle, no buffers) until the guard drops.
    pub(crate) fn parked(self: &Arc<Self>) -> ParkedConnection {
        self.parked.fetch_add(1, Ordering::Relaxed);
        ParkedConnection(self.clone())
    }

    /// Idle keep-alive connections parked now (included in [`Connections::open_now`]).
    pub fn parked_now(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    /// Connections accepted so far, by protocol label.
    pub fn totals(&self) -> [(&'static str, u64); 4] {
        [
            (Protocol::Http1, &self.http1),
            (Protocol::Opaque, &self.opaque),
            (Protocol::Http2PriorKnowledge, &self.h2c),
            (Protocol::Tls, &self.tls),
        ]
        .map(|(p, n)| (p.label(), n.load(Ordering::Relaxed)))
    }

    /// Connections tunnelled to the service untouched, by why they were:
    /// a TLS ClientHello, or another protocol's first line. (HTTP/2 clients
    /// are served, not tunnelled.)
    pub fn tunnels(&self) -> [(&'static str, u64); 2] {
        [
            ("tls", self.tls.load(Ordering::Relaxed)),
            ("not-http", self.opaque.load(Ordering::Relaxed)),
        ]
    }

    /// Counts a refused request (or request head).
    pub(crate) fn refused(&self, why: Refusal) {
        // `ALL` lists the kinds in declaration order, so the discriminant is the index.
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refused requests so far, by reason label.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (r.label(), n.load(Ordering::Relaxed)))
    }

    /// Bytes through opaque tunnels: (from clients, to clients).
    pub fn tunnel_bytes(&self) -> (u64, u64) {
        (
            self.opaque_bytes_in.load(Ordering::Relaxed),
            self.opaque_bytes_out.load(Ordering::Relaxed),
        )
    }
}

/// Keeps a connection counted as open.
pub(crate) struct OpenConnection(Arc<Connections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps a connection counted as parked while it lives.
pub(crate) struct ParkedConnection(Arc<Connections>);

impl Drop for ParkedConnection {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A built-in decorator's own figures, so that telemetry needs to know no
/// built-in: its `/stats` section, its `/metrics` families, and the
/// background work it needs while sitio runs.
pub(crate) trait Report: Send + Sync {
    /// The key of its `/stats` section (e.g. `circuit`).
    fn section(&self) -> &'static str;
    /// Its `/stats` section.
    fn stats(&self) -> serde_json::Value;
    /// Appends its Prometheus families (see [`prometheus::family`]).
    fn metrics(&self, out: &mut String);
    /// A task to run in the background while sitio runs, if it needs one.
    fn background(
        self: Arc<Self>,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        None
    }
}

/// Everything the admin server reports, for one sitio instance.
pub struct Telemetry {
    /// Per-endpoint statistics, when `SITIO_STATS` is on.
    pub stats: Option<Arc<StatsHub>>,
    /// Connection counters.
    pub connections: Arc<Connections>,
    /// The live request feed.
    pub tap: Arc<TapHub>,
    /// Process and host figures, refreshed in the background.
    pub process: Arc<process::Sampler>,
    /// The most distinct routes counted before `{other}`.
    pub max_routes: usize,
    /// The built-ins that report figures of their own (breaker, notifications,
    /// stale copies...), each through [`Report`].
    pub(crate) reports: Vec<Arc<dyn Report>>,
    started: Instant,
    started_wall: SystemTime,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    pub(crate) fn new(
        stats_on: bool,
        max_routes: usize,
        reports: Vec<Arc<dyn Report>>,
    ) -> Arc<Self> {
        Arc::new(Telemetry {
            reports,
            stats: stats_on.then(Arc::default),
            connections: Arc::default(),
            tap: Arc::default(),
            process: Arc::default(),
            max_routes,
            started: Instant::now(),
            started_wall: SystemTime::now(),
        })
    }

    /// Seconds since this instance started.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Unix time this instance started.
    pub fn start_time_unix(&self) -> f64 {
        self.started_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// The built-in decorator that feeds statistics and the tap; sitio puts it
/// outermost so it sees every exchange, including those others answer.
/// Public so that tests and benchmarks can run the chain sitio runs.
pub struct Recorder {
    pub(crate) stats: Arc<StatsHub>,
    pub(crate) tap: Arc<TapHub>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder feeding `stats` and `tap`.
    pub fn new(stats: Arc<StatsHub>, tap: Arc<TapHub>) -> Self {
        Recorder { stats, tap }
    }
}

impl Decorator for Recorder {
    type State = ();
    // Counts and times exchanges; reads no head, so heads can pass as bytes.
    const ON_REQUEST: bool = false;
    const ON_RESPONSE: bool = false;
    fn name(&self) -> &'static str {
        "stats"
    }

    fn on_start(&self, (): &mut (), ex: &Exchange) {
        self.stats.started(ex);
    }

    fn on_complete(&self, (): &mut (), ex: &Exchange) {
        self.stats.completed(ex, true);
        self.tap.publish(ex);
    }
}
