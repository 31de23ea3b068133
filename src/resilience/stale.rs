//! Stale on error (Istio's trick): the last good response of each GET URL is
//! kept, within a byte budget (LRU) and a per-response cap, and served instead
//! of a 5xx or an unreachable service, marked with `Age` and `sitio-stale`.
//!
//! Only this decorator buffers bodies, and only of responses it may store;
//! the cache is split into shards by URL so no single lock serves all cores.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, request, response};

use crate::body::Body;
use crate::decorator::{Action, BodyFilter, Decorator, Exchange};
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;

const SHARDS: usize = 16;
static SITIO_STALE: header::HeaderName = header::HeaderName::from_static("sitio-stale");

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    stale_if_error: Option<Duration>,
    size: usize,
}

struct Shard {
    lru: lru::LruCache<String, Arc<Entry>>,
    bytes: usize,
}

/// The stale copies' settings (`SITIO_STALE_*`), flattened into [`crate::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct StaleSettings {
    /// Serve the last good copy of a GET URL when the service fails (on|off).
    #[arg(long, global = true, env = "SITIO_STALE_ON_ERROR", value_name = "SITIO_STALE_ON_ERROR",
          default_value = "off", value_parser = crate::units::parse_switch, action = clap::ArgAction::Set)]
    pub stale_on_error: bool,

    /// Memory for stale copies, e.g. 64MiB.
    #[arg(long, global = true, env = "SITIO_STALE_CACHE_BYTES", value_name = "SITIO_STALE_CACHE_BYTES",
          default_value = "64MiB", value_parser = crate::units::parse_bytes)]
    pub stale_cache_bytes: usize,

    /// Largest response kept as a stale copy, e.g. 1MiB.
    #[arg(long, global = true, env = "SITIO_STALE_MAX_OBJECT", value_name = "SITIO_STALE_MAX_OBJECT",
          default_value = "1MiB", value_parser = crate::units::parse_bytes)]
    pub stale_max_object: usize,

    /// Also keep answers to requests with Authorization or cookies (on|off).
    #[arg(long, global = true, env = "SITIO_STALE_PRIVATE", value_name = "SITIO_STALE_PRIVATE",
          default_value = "off", value_parser = crate::units::parse_switch, action = clap::ArgAction::Set)]
    pub stale_private: bool,
}

impl Default for StaleSettings {
    fn default() -> Self {
        StaleSettings {
            stale_on_error: false,
            stale_cache_bytes: 64 << 20,
            stale_max_object: 1 << 20,
            stale_private: false,
        }
    }
}

/// The cache of last good responses.
pub struct StaleCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
    max_object: usize,
    private: bool,
    hasher: std::collections::hash_map::RandomState,
    served: AtomicU64,
}

impl std::fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleCache").finish_non_exhaustive()
    }
}

impl StaleCache {
    /// A cache of at most `budget` bytes, storing responses up to `max_object`
    /// bytes; `private` also stores answers to requests with credentials.
    /// The cache `settings` describe (`None` unless `SITIO_STALE_ON_ERROR=on`).
    pub fn from_settings(settings: &StaleSettings) -> Option<Self> {
        settings.stale_on_error.then(|| {
            StaleCache::new(
                settings.stale_cache_bytes,
                settings.stale_max_object,
                settings.stale_private,
            )
        })
    }

    /// A cache of `budget` bytes keeping answers up to `max_object` bytes.
    pub fn new(budget: usize, max_object: usize, private: bool) -> Self {
        let shard_budget = (budget / SHARDS).max(1);
        StaleCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: lru::LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            shard_budget,
            max_object: max_object.min(shard_budget),
            private,
            hasher: Default::default(),
            served: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.shard(key).lru.get(key).cloned()
    }

    fn put(&self, key: String, entry: Entry) {
        let mut shard = self.shard(&key);
        let size = entry.size;
        if let Some(old) = shard.lru.put(key, Arc::new(entry)) {
            shard.bytes -= old.size;
        }
        shard.bytes += size;
        while shard.bytes > self.shard_budget {
            match shard.lru.pop_lru() {
                Some((_, evicted)) => shard.bytes -= evicted.size,
                None => break,
            }
        }
    }

    /// Stale copies served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Bytes and entries held now.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(b, n), s| {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            (b + s.bytes, n + s.lru.len())
        })
    }
}

/// Copies a storable response's body as it passes, and stores the whole
/// response once the body ended cleanly. It never changes the bytes.
struct Capture {
    cache: Arc<StaleCache>,
    key: String,
    status: StatusCode,
    headers: HeaderMap,
    stale_if_error: Option<Duration>,
    body: BytesMut,
    too_big: bool,
}

impl BodyFilter for Capture {
    fn on_chunk(&mut self, chunk: &mut Bytes) {
        if self.too_big {
            return;
        }
        if self.body.len() + chunk.len() > self.cache.max_object {
            self.too_big = true;
            self.body = BytesMut::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    fn on_end(&mut self) -> Option<Bytes> {
        if self.too_big {
            return None;
        }
        let body = std::mem::take(&mut self.body).freeze();
        let key = std::mem::take(&mut self.key);
        let headers = std::mem::take(&mut self.headers);
        let size = body.len()
            + key.len()
            + headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum::<usize>();
        self.cache.put(
            key,
            Entry {
                status: self.status,
                headers,
                body,
                stored: crate::clock::now(),
                stale_if_error: self.stale_if_error,
                size,
            },
        );
        None
    }

    fn keeps_length(&self) -> bool {
        true
    }
}

/// The decorator serving from a [`StaleCache`].
pub struct StaleOnError(pub Arc<StaleCache>);

impl std::fmt::Debug for StaleOnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleOnError").finish_non_exhaustive()
    }
}

/// `Cache-Control` directives that matter here: (may store, stale-if-error).
fn cache_control(headers: &HeaderMap) -> (bool, Option<Duration>) {
    let mut storable = true;
    let mut stale_if_error = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            let d = directive.trim().to_ascii_lowercase();
            if d == "no-store" || d == "private" {
                storable = false;
            } else if let Some(secs) = d.strip_prefix("stale-if-error=") {
                stale_if_error = secs.trim_matches('"').parse().ok().map(Duration::from_secs);
            }
        }
    }
    (storable, stale_if_error)
}

impl StaleOnError {
    fn stale_response(&self, entry: &Entry, reason: &'static str) -> Option<Response<Body>> {
        let age = crate::clock::since(entry.stored);
        if entry.stale_if_error.is_some_and(|limit| age > limit) {
            return None; // the service said how stale it may be served
        }
        let mut res = Response::new(Body::full(entry.body.clone()));
        *res.status_mut() = entry.status;
        *res.headers_mut() = entry.headers.clone();
        let h = res.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
        h.insert(SITIO_STALE.clone(), HeaderValue::from_static(reason));
        self.0.served.fetch_add(1, Ordering::Relaxed);
        Some(res)
    }

    fn cached_for(&self, key: &str, reason: &'static str) -> Option<Response<Body>> {
        let entry = self.0.get(key)?;
        self.stale_response(&entry, reason)
    }
}

impl Decorator for StaleOnError {
    /// The cache key of a GET that may be served stale.
    type State = Option<String>;

    fn name(&self) -> &'static str {
        "stale_on_error"
    }

    fn on_request(
        &self,
        head: &mut request::Parts,
        key: &mut Option<String>,
        ex: &mut Exchange,
    ) -> Action<'_> {
        if head.method != Method::GET {
            return Action::Continue;
        }
        let credentials = head.headers.contains_key(header::AUTHORIZATION)
            || head.headers.contains_key(header::COOKIE);
        if credentials && !self.0.private {
            return Action::Continue;
        }
        let host = head
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        // Per upstream: an A/B variant's failure is never masked with the
        // service's copy, nor the other way round.
        *key = Some(format!("{}\n{host}\n{target}", ex.upstream()));
        Action::Continue
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        key: &mut Option<String>,
        ex: &mut Exchange,
    ) -> Action<'_> {
        let Some(key) = key.as_deref() else {
            return Action::Continue;
        };
        if head.status.is_server_error() {
            let reason = if ex.error() == Some(ErrorKind::CircuitOpen) {
                "circuit-open"
            } else {
                "service-5xx"
            };
            return match self.cached_for(key, reason) {
                Some(res) => Action::Respond(res),
                None => Action::Continue,
            };
        }
        let (storable, stale_if_error) = cache_control(&head.headers);
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let shareable = self.0.private || !head.headers.contains_key(header::SET_COOKIE);
        let vary_all = head
            .headers
            .get(header::VARY)
            .is_some_and(|v| v.as_bytes() == b"*");
        if head.status == StatusCode::OK
            && storable
            && shareable
            && !vary_all
            && declared.is_none_or(|n| n <= self.0.max_object)
        {
            ex.filter_response_body(Capture {
                cache: self.0.clone(),
                key: key.to_owned(),
                status: head.status,
                headers: head.headers.clone(),
                stale_if_error,
                body: BytesMut::new(),
                too_big: false,
            });
        }
        Action::Continue
    }

    fn on_error(
        &self,
        err: &ProxyError,
        key: &mut Option<String>,
        _: &mut Exchange,
    ) -> Option<Response<Body>> {
        if err.kind().blame() != crate::error::Blame::Upstream {
            return None; // the client's or a decorator's doing: no copy hides it
        }
        self.cached_for(key.as_deref()?, err.kind().as_str())
    }
}

impl Report for StaleCache {
    fn section(&self) -> &'static str {
        "stale"
    }

    fn stats(&self) -> serde_json::Value {
        let (bytes, entries) = self.usage();
        serde_json::json!({"served": self.served(), "bytes": bytes, "entries": entries})
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (bytes, entries) = self.usage();
        family(
            out,
            "sitio_stale_served_total",
            "counter",
            "Stale copies served instead of errors.",
        );
        let _ = writeln!(out, "sitio_stale_served_total {}", self.served());
        family(
            out,
            "sitio_stale_cache_bytes",
            "gauge",
            "Bytes held as stale copies.",
        );
        let _ = writeln!(out, "sitio_stale_cache_bytes {bytes}");
        family(
            out,
            "sitio_stale_cache_entries",
            "gauge",
            "URLs held as stale copies.",
        );
        let _ = writeln!(out, "sitio_stale_cache_entries {entries}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: usize) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![0; size]),
            stored: Instant::now(),
            stale_if_error: None,
            size,
        }
    }

    #[test]
    fn the_cache_keeps_to_its_budget_least_recently_used_first() {
        let cache = StaleCache::new(SHARDS * 1000, 600, false);
        for i in 0..200 {
            cache.put(format!("k{i}"), entry(400));
        }
        let (bytes, entries) = cache.usage();
        assert!(bytes <= SHARDS * 1000, "{bytes}");
        assert!((SHARDS..=2 * SHARDS).contains(&entries), "{entries}");
        assert!(cache.get("k199").is_some(), "the newest stays");
        assert!(cache.get("k0").is_none(), "the oldest went");
    }

    #[test]
    fn cache_control_is_honoured() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, stale-if-error=30"),
        );
        assert_eq!(cache_control(&h), (true, Some(Duration::from_secs(30))));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        assert!(!cache_control(&h).0);
    }
}
