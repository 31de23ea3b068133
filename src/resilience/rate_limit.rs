//! Rate limits: `SITIO_RATE_LIMIT=100/s` per client address (or `route:` per
//! route, `global:` for all), with a burst (`SITIO_RATE_LIMIT_BURST`). Over the
//! limit a request gets 429 with `Retry-After` and the IETF `RateLimit` and
//! `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers), which
//! every answer carries while limits are on.
//!
//! The algorithm is GCRA (the generic cell rate algorithm, a token bucket in
//! one number): each key keeps only its "theoretical arrival time". The global
//! limit is one atomic updated by compare-and-swap; per-key limits live in
//! sharded LRU maps, so no lock is shared by all cores and many client
//! addresses cost bounded memory (the least recently seen are forgotten, which
//! only ever errs towards letting a request through).

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, request, response};

use crate::body::Body;
use crate::decorator::{Action, Decorator, Exchange};
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;

/// What one limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each client address (the peer, or `X-Forwarded-For` behind trusted proxies).
    Client,
    /// Each route (as statistics fold paths).
    Route,
    /// All requests together.
    Global,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Route => "route",
            Scope::Global => "global",
        }
    }
}

/// `SITIO_RATE_LIMIT`: `[client:|route:|global:]N/s` (or `/m`, `/h`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// What requests are counted by.
    pub scope: Scope,
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The window the rate is stated in.
    pub per: Duration,
}

/// The rate limit's settings, flattened into [`crate::Config`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RateLimitSettings {
    /// Limit requests, e.g. `100/s` per client address, `route:600/m` per route,
    /// `global:1000/s` for all (429 with Retry-After beyond it).
    #[arg(long, global = true, env = "SITIO_RATE_LIMIT", value_name = "SITIO_RATE_LIMIT",
          value_parser = parse_limit)]
    pub rate_limit: Option<Limit>,

    /// Requests a client may send at once above the rate (default: the limit's count).
    #[arg(long, global = true, env = "SITIO_RATE_LIMIT_BURST", value_name = "SITIO_RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// Proxies whose `X-Forwarded-For` names the client for rate limits, e.g. `10.0.0.0/8,::1`.
    #[arg(long, global = true, env = "SITIO_TRUSTED_PROXIES", value_name = "SITIO_TRUSTED_PROXIES",
          default_value = "", hide_default_value = true, value_parser = parse_trusted)]
    pub trusted_proxies: TrustedProxies,
}

/// `SITIO_TRUSTED_PROXIES`: the address blocks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(pub Vec<Cidr>);

fn parse_trusted(s: &str) -> Result<TrustedProxies, String> {
    parse_cidrs(s).map(TrustedProxies)
}

/// Parses `SITIO_RATE_LIMIT`.
pub fn parse_limit(s: &str) -> Result<Limit, String> {
    let err = || {
        format!(
            "expected [client:|route:|global:]N/s (or /m, /h) such as 100/s or route:600/m, got {s:?}"
        )
    };
    let t = s.trim();
    let (scope, rate) = match t.split_once(':') {
        Some(("client", r)) => (Scope::Client, r),
        Some(("route", r)) => (Scope::Route, r),
        Some(("global", r)) => (Scope::Global, r),
        Some(_) => return Err(err()),
        None => (Scope::Client, t),
    };
    let (n, unit) = rate.split_once('/').ok_or_else(err)?;
    let requests: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(err)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(err()),
    };
    Ok(Limit {
        scope,
        requests,
        per,
    })
}

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (ip >> shift)
    }
}

/// Parses `SITIO_TRUSTED_PROXIES`: comma-separated addresses or blocks.
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (addr, bits) = p.split_once('/').unwrap_or((p, ""));
            let net: IpAddr = addr.parse().map_err(|_| {
                format!("expected addresses or blocks such as 10.0.0.0/8,::1, got {p:?}")
            })?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() {
                max
            } else {
                bits.parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("expected a prefix length up to {max} in {p:?}"))?
            };
            Ok(Cidr { net, bits })
        })
        .collect()
}

const SHARDS: usize = 32;
static RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATE_LIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

#[derive(Hash, PartialEq, Eq)]
enum Key {
    Ip(IpAddr),
    Route(CompactString),
}

/// The limiter one sitio instance shares (and reports on).
pub struct RateLimiter {
    limit: Limit,
    /// Nanoseconds between two requests at the limit's rate.
    interval: u64,
    /// How far ahead of now a key's arrival time may run (the burst).
    tolerance: u64,
    epoch: Instant,
    global: AtomicU64,
    shards: Vec<Mutex<lru::LruCache<Key, u64>>>,
    hasher: foldhash::fast::RandomState,
    trusted: Vec<Cidr>,
    limited: AtomicU64,
    policy: HeaderValue,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// What the limiter decided for one request (the state of [`RateLimit`]).
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    allowed: bool,
    /// Requests left in the current window.
    remaining: u64,
    /// Seconds until the quota is whole again (allowed) or until a request
    /// would pass (refused).
    reset_secs: u64,
}

impl RateLimiter {
    /// A limiter for `limit`, allowing bursts of `burst` requests (default:
    /// the limit's count), remembering at most `max_keys` clients or routes,
    /// reading `X-Forwarded-For` only from peers in `trusted`.
    /// The limiter `settings` describe (`None` without `SITIO_RATE_LIMIT`),
    /// remembering at most `max_keys` clients or routes.
    pub fn from_settings(settings: &RateLimitSettings, max_keys: usize) -> Option<Self> {
        let limit = settings.rate_limit?;
        Some(RateLimiter::new(
            limit,
            settings.rate_limit_burst,
            max_keys,
            settings.trusted_proxies.0.clone(),
        ))
    }

    /// A limiter of `limit` with `burst` (default: the limit's count).
    pub fn new(limit: Limit, burst: Option<u32>, max_keys: usize, trusted: Vec<Cidr>) -> Self {
        let interval = (limit.per.as_nanos() / u128::from(limit.requests)).max(1) as u64;
        let burst = u64::from(burst.unwrap_or(limit.requests).max(1));
        let per_shard = std::num::NonZeroUsize::new((max_keys / SHARDS).max(16))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        let policy = format!("\"sitio\";q={};w={}", limit.requests, limit.per.as_secs());
        RateLimiter {
            limit,
            interval,
            tolerance: interval * (burst - 1),
            epoch: crate::clock::now(),
            global: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(lru::LruCache::new(per_shard)))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            trusted,
            limited: AtomicU64::new(0),
            policy: HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("\"sitio\"")),
        }
    }

    /// Requests refused so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    fn now_ns(&self) -> u64 {
        crate::clock::since(self.epoch).as_nanos() as u64
    }

    /// GCRA on one arrival time: the new one, and the verdict.
    fn judge(&self, tat: u64, now: u64) -> (u64, Verdict) {
        let start = tat.max(now);
        let next = start + self.interval;
        let ahead = next - now; // how far the key runs ahead of now
        let limit = self.tolerance + self.interval;
        if ahead > limit {
            let wait = ahead - limit;
            let verdict = Verdict {
                allowed: false,
                remaining: 0,
                reset_secs: wait.div_ceil(1_000_000_000).max(1),
            };
            return (tat, verdict);
        }
        let verdict = Verdict {
            allowed: true,
            remaining: (limit - ahead) / self.interval,
            reset_secs: ahead.div_ceil(1_000_000_000),
        };
        (next, verdict)
    }

    fn check(&self, key: Option<Key>) -> Verdict {
        let now = self.now_ns();
        let Some(key) = key else {
            // Global: one arrival time for everyone, updated without a lock.
            let mut tat = self.global.load(Ordering::Relaxed);
            loop {
                let (next, verdict) = self.judge(tat, now);
                if !verdict.allowed {
                    return verdict;
                }
                match self.global.compare_exchange_weak(
                    tat,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return verdict,
                    Err(current) => tat = current,
                }
            }
        };
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = map.get(&key).copied().unwrap_or(0);
        let (next, verdict) = self.judge(tat, now);
        if verdict.allowed {
            map.put(key, next);
        }
        verdict
    }

    /// The address a request counts against: the peer, or behind trusted
    /// proxies the nearest untrusted address of `X-Forwarded-For`.
    fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        // Nearest hop first, without collecting the list (no allocation).
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.rsplit(','))
            .map(str::trim);
        let mut client = peer;
        for hop in hops {
            let Ok(ip) = hop.parse::<IpAddr>() else { break };
            client = ip;
            if !trusted(ip) {
                break;
            }
        }
        client
    }

    fn headers(&self, h: &mut HeaderMap, v: Verdict) {
        h.insert(RATE_LIMIT_POLICY.clone(), self.policy.clone());
        let value = format!("\"sitio\";r={};t={}", v.remaining, v.reset_secs);
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(RATE_LIMIT.clone(), value);
        }
    }
}

/// The decorator that applies a [`RateLimiter`].
#[derive(Debug)]
pub struct RateLimit(pub std::sync::Arc<RateLimiter>);

impl Decorator for RateLimit {
    /// The verdict, echoed on the response.
    type State = Option<Verdict>;

    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn on_request(
        &self,
        head: &mut request::Parts,
        verdict: &mut Option<Verdict>,
        ex: &mut Exchange,
    ) -> Action<'_> {
        let limiter = &self.0;
        let key = match limiter.limit.scope {
            Scope::Client => Some(Key::Ip(
                limiter.client_of(ex.client_addr().ip(), &head.headers),
            )),
            Scope::Route => Some(Key::Route(CompactString::from(ex.route()))),
            Scope::Global => None,
        };
        let v = limiter.check(key);
        *verdict = Some(v);
        if v.allowed {
            return Action::Continue;
        }
        limiter.limited.fetch_add(1, Ordering::Relaxed);
        let err = ProxyError::refused(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests: the rate limit is reached; retry after the time given.",
        );
        Action::Fail(err.with_retry_after(Duration::from_secs(v.reset_secs)))
    }

    fn on_error(
        &self,
        err: &ProxyError,
        verdict: &mut Option<Verdict>,
        ex: &mut Exchange,
    ) -> Option<Response<Body>> {
        let v = verdict.filter(|v| !v.allowed)?;
        if err.kind() != ErrorKind::Refused {
            return None;
        }
        let mut res = crate::rescue::failure_for(err, ex);
        // Its own response hook does not run on its own refusal.
        self.0.headers(res.headers_mut(), v);
        Some(res)
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        verdict: &mut Option<Verdict>,
        _: &mut Exchange,
    ) -> Action<'_> {
        if let Some(v) = *verdict {
            self.0.headers(&mut head.headers, v);
        }
        Action::Continue
    }
}

impl Report for RateLimiter {
    fn section(&self) -> &'static str {
        "rate_limit"
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "scope": self.limit.scope.as_str(),
            "requests": self.limit.requests,
            "per_s": self.limit.per.as_secs(),
            "limited": self.limited(),
        })
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        family(
            out,
            "sitio_rate_limited_total",
            "counter",
            "Requests refused with 429 by SITIO_RATE_LIMIT.",
        );
        let _ = writeln!(out, "sitio_rate_limited_total {}", self.limited());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_nonsense() {
        let l = parse_limit("100/s").unwrap();
        assert_eq!(
            (l.scope, l.requests, l.per),
            (Scope::Client, 100, Duration::from_secs(1))
        );
        assert_eq!(parse_limit("route:600/m").unwrap().scope, Scope::Route);
        assert_eq!(
            parse_limit("global:5/h").unwrap().per,
            Duration::from_secs(3600)
        );
        for bad in ["100", "0/s", "ten/s", "100/d", "user:1/s"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        let nets = parse_cidrs("10.0.0.0/8, ::1,192.168.1.7").unwrap();
        assert!(nets[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!nets[0].contains("11.1.2.3".parse().unwrap()));
        assert!(nets[1].contains("::1".parse().unwrap()));
        assert!(nets[2].contains("::ffff:192.168.1.7".parse().unwrap()));
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("ten").is_err());
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted = parse_cidrs("10.0.0.0/8,127.0.0.1").unwrap();
        let limiter = RateLimiter::new(parse_limit("1/s").unwrap(), None, 100, trusted);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.9, 10.1.1.1"),
        );
        assert_eq!(
            limiter.client_of(peer, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        assert_eq!(
            limiter.client_of(peer, &h),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let outsider: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(
            limiter.client_of(outsider, &h),
            outsider,
            "its own word is not believed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_its_burst_then_its_rate() {
        let limit = parse_limit("global:10/s").unwrap();
        let limiter = RateLimiter::new(limit, Some(5), 1000, Vec::new());
        let allowed = (0..20).filter(|_| limiter.check(None).allowed).count();
        assert_eq!(allowed, 5, "the burst");
        tokio::time::advance(Duration::from_millis(300)).await;
        let allowed = (0..20).filter(|_| limiter.check(None).allowed).count();
        assert_eq!(allowed, 3, "10/s for 0.3 s");
        let refused = limiter.check(None);
        assert!(!refused.allowed && refused.reset_secs == 1);
    }
}
