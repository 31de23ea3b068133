//! Per-endpoint statistics recorded per worker thread and merged on read, so
//! the request path never takes a lock another core holds: each thread
//! records into its own shard (its mutex is only ever contended by a reader
//! merging shards for `/stats` or `/metrics`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use compact_str::CompactString;
// Keys are (method, route) with routes bounded by SITIO_MAX_ROUTES, so the
// fast seeded hash is safe; SipHash was a visible share of each request.
use foldhash::HashMap;
use hdrhistogram::Histogram;
use http::Method;
use indexmap::IndexMap;

use crate::decorator::Exchange;
use crate::error::ErrorKind;

/// Latencies are recorded in microseconds, clamped to this range.
const MAX_MICROS: u64 = 60_000_000;

fn new_histogram() -> Histogram<u32> {
    // Two significant digits: 1% precision, a few KiB per histogram. The
    // arguments are constants that hdrhistogram accepts (1 <= low, high >= 2 *
    // low, sigfig <= 5), so this cannot fail at run time.
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("constant, valid histogram bounds")
}

/// Counters and distributions of one (method, route).
#[derive(Clone)]
pub struct Endpoint {
    /// Completed exchanges.
    pub hits: u64,
    /// Completed exchanges by status code.
    pub status: BTreeMap<u16, u64>,
    /// Completed gRPC calls by `grpc-status` (empty for other exchanges).
    pub grpc: BTreeMap<u16, u64>,
    /// Request head to last response byte, in µs.
    pub latency: Histogram<u32>,
    /// Request head to response head, in µs.
    pub ttfb: Histogram<u32>,
    /// Sum of latencies in µs (exact, for means and Prometheus sums).
    pub latency_sum_us: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Exchanges started and not yet complete.
    pub in_flight: i64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

impl Endpoint {
    fn new() -> Self {
        Endpoint {
            hits: 0,
            status: BTreeMap::new(),
            grpc: BTreeMap::new(),
            latency: new_histogram(),
            ttfb: new_histogram(),
            latency_sum_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            in_flight: 0,
        }
    }

    /// One completed exchange, answered with `status`.
    fn record(&mut self, status: Option<http::StatusCode>, latency: u64, ttfb: u64, ex: &Exchange) {
        self.hits += 1;
        if let Some(status) = status {
            *self.status.entry(status.as_u16()).or_default() += 1;
        }
        if let Some(code) = ex.grpc_status {
            *self.grpc.entry(code).or_default() += 1;
        }
        self.latency.saturating_record(latency);
        self.ttfb.saturating_record(ttfb);
        self.latency_sum_us += latency;
        self.bytes_in += ex.bytes_in;
        self.bytes_out += ex.bytes_out;
    }

    fn merge(&mut self, other: &Endpoint) {
        self.hits += other.hits;
        for (code, n) in &other.status {
            *self.status.entry(*code).or_default() += n;
        }
        for (code, n) in &other.grpc {
            *self.grpc.entry(*code).or_default() += n;
        }
        let _ = self.latency.add(&other.latency);
        let _ = self.ttfb.add(&other.ttfb);
        self.latency_sum_us += other.latency_sum_us;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.in_flight += other.in_flight;
    }

    /// Exchanges answered with a 5xx status, and gRPC calls that ended with
    /// a status whose HTTP equivalent is one (see [`crate::grpc::is_server_error`]).
    pub fn server_errors(&self) -> u64 {
        let http: u64 = self.status.range(500..600).map(|(_, n)| n).sum();
        let grpc: u64 = self
            .grpc
            .iter()
            .filter(|(code, _)| crate::grpc::is_server_error(**code))
            .map(|(_, n)| n)
            .sum();
        http + grpc
    }
}

type Key = (Method, CompactString);
/// (method, route, upstream).
type VariantKey = (Method, CompactString, CompactString);

#[derive(Default)]
struct Shard {
    endpoints: IndexMap<Key, Endpoint, foldhash::fast::RandomState>,
    /// The endpoint looked up last: an exchange's completion finds the one
    /// its start found without hashing its key again (the next exchange on
    /// this thread usually starts after it completed).
    last: Option<usize>,
    /// Per route and upstream, when named upstreams exist (A/B variants).
    variants: HashMap<VariantKey, Endpoint>,
    upstream_errors: HashMap<ErrorKind, u64>,
    /// Per upstream (the service, or one a decorator routed to).
    upstreams: HashMap<CompactString, Endpoint>,
}

/// All shards of one sitio instance.
pub struct StatsHub {
    id: u64,
    /// Per-upstream figures are kept only when decorators route to named
    /// upstreams; with the service alone they would repeat the totals.
    by_upstream: std::sync::atomic::AtomicBool,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
}

impl std::fmt::Debug for StatsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHub").finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's shard of each live hub. Weak, so a hub that is gone (a
    /// sitio instance stopped; tests and fuzzing make many) leaves nothing.
    static LOCAL: RefCell<Vec<(u64, Weak<Mutex<Shard>>)>> = const { RefCell::new(Vec::new()) };
}

impl Default for StatsHub {
    fn default() -> Self {
        StatsHub {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            by_upstream: std::sync::atomic::AtomicBool::new(false),
            shards: Mutex::new(Vec::new()),
        }
    }
}

/// A merged view of all shards at one moment.
pub struct Snapshot {
    /// Per (method, route), sorted by route then method.
    pub endpoints: Vec<(Method, CompactString, Endpoint)>,
    /// Failures reaching the service, by kind.
    pub upstream_errors: BTreeMap<&'static str, u64>,
    /// Per upstream, by name: exchanges, the upstream's statuses, latency;
    /// empty unless decorators registered named upstreams.
    pub upstreams: Vec<(CompactString, Endpoint)>,
    /// Per (method, route, upstream the exchange was sent to or meant for),
    /// sorted like `endpoints`; empty unless named upstreams exist. What the
    /// client got, like `endpoints`, split by upstream (A/B comparisons).
    pub variants: Vec<(Method, CompactString, CompactString, Endpoint)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Completed exchanges over all endpoints.
    pub fn requests_total(&self) -> u64 {
        self.endpoints.iter().map(|(_, _, e)| e.hits).sum()
    }
}

impl StatsHub {
    fn with_shard<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            let found = local
                .iter()
                .find(|(id, _)| *id == self.id)
                .and_then(|(_, shard)| shard.upgrade());
            let shard = match found {
                Some(shard) => shard,
                None => {
                    local.retain(|(_, shard)| shard.strong_count() > 0);
                    let shard = Arc::new(Mutex::new(Shard::default()));
                    lock(&self.shards).push(shard.clone());
                    local.push((self.id, Arc::downgrade(&shard)));
                    shard
                }
            };
            drop(local);
            let mut guard = lock(&shard);
            f(&mut guard)
        })
    }

    /// Keeps per-upstream figures from now on (see `Snapshot::upstreams`).
    pub(crate) fn track_upstreams(&self) {
        self.by_upstream.store(true, Ordering::Relaxed);
    }

    /// An exchange started (its request hooks ran).
    pub fn started(&self, ex: &Exchange) {
        self.with_shard(|s| endpoint(s, ex).in_flight += 1);
    }

    /// An exchange completed; `was_started` tells whether [`StatsHub::started`] saw it.
    pub fn completed(&self, ex: &Exchange, was_started: bool) {
        let latency = micros(ex.latency());
        let ttfb = micros(ex.time_to_first_byte());
        self.with_shard(|s| {
            if let Some(kind) = ex.error
                && kind.blame() == crate::Blame::Upstream
            {
                *s.upstream_errors.entry(kind).or_default() += 1;
            }
            let e = endpoint(s, ex);
            e.record(ex.status, latency, ttfb, ex);
            if was_started {
                e.in_flight -= 1;
            }
            if self.by_upstream.load(Ordering::Relaxed) {
                let upstream = CompactString::from(ex.upstream());
                if reached_upstream(ex) {
                    s.upstreams
                        .entry(upstream.clone())
                        .or_insert_with(Endpoint::new)
                        .record(ex.service_status, latency, ttfb, ex);
                }
                s.variants
                    .entry((ex.method.clone(), ex.route.clone(), upstream))
                    .or_insert_with(Endpoint::new)
                    .record(ex.status, latency, ttfb, ex);
            }
        });
    }

    /// Merges every shard.
    pub fn snapshot(&self) -> Snapshot {
        let shards: Vec<_> = lock(&self.shards).clone();
        let mut endpoints: HashMap<Key, Endpoint> = HashMap::default();
        let mut upstreams: BTreeMap<CompactString, Endpoint> = BTreeMap::new();
        let mut variants: BTreeMap<(CompactString, Method, CompactString), Endpoint> =
            BTreeMap::new();
        let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
        for shard in shards {
            let shard = lock(&shard);
            for (key, e) in &shard.endpoints {
                endpoints
                    .entry(key.clone())
                    .or_insert_with(Endpoint::new)
                    .merge(e);
            }
            for (kind, n) in &shard.upstream_errors {
                *errors.entry(kind.as_str()).or_default() += n;
            }
            for ((method, route, upstream), e) in &shard.variants {
                variants
                    .entry((route.clone(), method.clone(), upstream.clone()))
                    .or_insert_with(Endpoint::new)
                    .merge(e);
            }
            for (name, e) in &shard.upstreams {
                upstreams
                    .entry(name.clone())
                    .or_insert_with(Endpoint::new)
                    .merge(e);
            }
        }
        let mut endpoints: Vec<_> = endpoints.into_iter().map(|((m, r), e)| (m, r, e)).collect();
        endpoints.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        Snapshot {
            endpoints,
            upstream_errors: errors,
            upstreams: upstreams.into_iter().collect(),
            variants: variants
                .into_iter()
                .map(|((route, method, upstream), e)| (method, route, upstream, e))
                .collect(),
        }
    }
}

/// True when the exchange was sent to an upstream (it answered or failed),
/// not answered by a decorator or refused before.
fn reached_upstream(ex: &Exchange) -> bool {
    ex.upstream_fixed
        && (ex.service_status.is_some()
            || ex.error.is_some_and(|k| {
                k.blame() == crate::Blame::Upstream && k != ErrorKind::CircuitOpen
            }))
}

fn endpoint<'s>(s: &'s mut Shard, ex: &Exchange) -> &'s mut Endpoint {
    let last = s.last.filter(|&i| {
        s.endpoints
            .get_index(i)
            .is_some_and(|((method, route), _)| *method == ex.method && *route == ex.route)
    });
    let i = match last {
        Some(i) => i,
        None => {
            // Standard methods and routes up to 24 bytes clone without allocating.
            let key = (ex.method.clone(), ex.route.clone());
            let entry = s.endpoints.entry(key);
            let i = entry.index();
            entry.or_insert_with(Endpoint::new);
            s.last = Some(i);
            i
        }
    };
    // `i` is in the map: found there or just inserted.
    &mut s.endpoints[i]
}

fn micros(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| (d.as_micros() as u64).clamp(1, MAX_MICROS))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::StatsHub;
    use crate::decorator::Exchange;

    fn exchange(method: &str, route: &str) -> Exchange {
        let (head, ()) = http::Request::builder()
            .method(method)
            .uri(route)
            .body(())
            .unwrap()
            .into_parts();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        Exchange::new(&head, route.into(), addr, std::time::Instant::now())
    }

    /// Exchanges that overlap, and one endpoint after another: each is
    /// counted on its own endpoint (the last one looked up is found again
    /// without a lookup only if it is the exchange's).
    #[test]
    fn each_exchange_is_counted_on_its_endpoint_in_any_order() {
        let hub = StatsHub::default();
        let (a, b, c) = (
            exchange("GET", "/a"),
            exchange("GET", "/b"),
            exchange("POST", "/a"),
        );
        hub.started(&a);
        hub.started(&b);
        hub.completed(&a, true);
        hub.started(&c);
        hub.completed(&c, true);
        hub.completed(&b, true);
        hub.started(&a);
        hub.completed(&a, true);
        let counts: Vec<(String, String, u64, i64)> = hub
            .snapshot()
            .endpoints
            .into_iter()
            .map(|(m, r, e)| (m.to_string(), r.to_string(), e.hits, e.in_flight))
            .collect();
        assert_eq!(
            counts,
            [
                ("GET".into(), "/a".into(), 2, 0),
                ("POST".into(), "/a".into(), 1, 0),
                ("GET".into(), "/b".into(), 1, 0),
            ]
        );
    }
}
