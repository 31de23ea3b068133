//! The circuit breaker: after `SITIO_BREAKER_FAILURES` consecutive failures of
//! the service, sitio answers 503 at once for `SITIO_BREAKER_COOLDOWN`, then
//! lets one probe through (half-open): success closes the circuit, failure
//! opens it again. While closed, a request costs one atomic load. Each
//! upstream (the service, every named one such as an A/B variant) has a
//! circuit of its own: a failing canary does not cut the service off.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use http::request;

use crate::decorator::{Action, Decorator, Exchange};
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;

/// The circuit breaker's settings (`SITIO_BREAKER_*`), flattened into [`crate::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct BreakerSettings {
    /// Consecutive service failures that open the circuit breaker (0: no breaker).
    #[arg(
        long,
        global = true,
        env = "SITIO_BREAKER_FAILURES",
        value_name = "SITIO_BREAKER_FAILURES",
        default_value_t = 0
    )]
    pub breaker_failures: u32,

    /// How long an open circuit refuses requests before letting a probe through.
    #[arg(long, global = true, env = "SITIO_BREAKER_COOLDOWN", value_name = "SITIO_BREAKER_COOLDOWN",
          default_value = "5s", value_parser = crate::units::parse_duration)]
    pub breaker_cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            breaker_failures: 0,
            breaker_cooldown: Duration::from_secs(5),
        }
    }
}

/// The circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// The cool-down ended: the next request is a probe.
    HalfOpen,
}

impl CircuitState {
    /// A lower-case name for JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// One upstream's circuit.
#[derive(Default)]
struct Circuit {
    consecutive: AtomicU32,
    /// Milliseconds since the breaker's epoch until which the circuit is open; 0 = closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    opened: AtomicU64,
}

/// Shared breaker state (one per sitio instance): a circuit per upstream.
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    service: Circuit,
    /// Named upstreams' circuits.
    named: Box<[(CompactString, Circuit)]>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").finish_non_exhaustive()
    }
}

/// What the breaker knows of one exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct Turn {
    /// This exchange is the half-open probe.
    probe: bool,
    /// Refused while open: the service was not asked.
    refused: bool,
}

impl Breaker {
    /// The breaker `settings` describe (`None` when `SITIO_BREAKER_FAILURES` is 0).
    pub fn from_settings(settings: &BreakerSettings) -> Option<Self> {
        (settings.breaker_failures > 0)
            .then(|| Breaker::new(settings.breaker_failures, settings.breaker_cooldown))
    }

    /// A breaker opening after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            epoch: crate::clock::now(),
            service: Circuit::default(),
            named: Box::new([]),
        }
    }

    /// The same breaker, with a circuit for each named upstream too.
    pub fn with_upstreams<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.named = names
            .into_iter()
            .map(|n| (CompactString::from(n), Circuit::default()))
            .collect();
        self
    }

    fn now_ms(&self) -> u64 {
        crate::clock::since(self.epoch).as_millis() as u64 + 1
    }

    /// The circuit of `upstream` (an unknown name: the service's).
    fn circuit(&self, upstream: &str) -> &Circuit {
        if upstream == crate::decorator::SERVICE {
            return &self.service;
        }
        self.named
            .iter()
            .find(|(n, _)| n == upstream)
            .map_or(&self.service, |(_, c)| c)
    }

    fn state_of(&self, c: &Circuit) -> CircuitState {
        match c.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if self.now_ms() < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// The service's circuit now.
    pub fn state(&self) -> CircuitState {
        self.state_of(&self.service)
    }

    /// The circuit of a named upstream (the service's for `service` or an unknown name).
    pub fn upstream_state(&self, upstream: &str) -> CircuitState {
        self.state_of(self.circuit(upstream))
    }

    /// Failures of the service in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.service.consecutive.load(Ordering::Relaxed)
    }

    /// How often the service's circuit opened.
    pub fn opened_total(&self) -> u64 {
        self.service.opened.load(Ordering::Relaxed)
    }

    fn open(&self, c: &Circuit, upstream: &str, why: &str) {
        c.open_until.store(
            self.now_ms() + self.cooldown.as_millis() as u64,
            Ordering::Release,
        );
        c.probing.store(false, Ordering::Release);
        c.opened.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(cooldown = ?self.cooldown, upstream, "circuit opened: {why}");
    }

    fn close(&self, c: &Circuit, upstream: &str) {
        c.consecutive.store(0, Ordering::Relaxed);
        c.open_until.store(0, Ordering::Release);
        c.probing.store(false, Ordering::Release);
        tracing::info!(upstream, "circuit closed: the probe succeeded");
    }

    /// Every circuit with its upstream's name, the service first.
    fn circuits(&self) -> impl Iterator<Item = (&str, &Circuit)> {
        std::iter::once((crate::decorator::SERVICE, &self.service))
            .chain(self.named.iter().map(|(n, c)| (n.as_str(), c)))
    }
}

/// The decorator that applies a [`Breaker`].
pub struct CircuitBreaker(pub std::sync::Arc<Breaker>);

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").finish_non_exhaustive()
    }
}

impl Decorator for CircuitBreaker {
    type State = Turn;
    const ON_RESPONSE: bool = false;

    fn name(&self) -> &'static str {
        "circuit_breaker"
    }

    fn on_request(&self, _: &mut request::Parts, turn: &mut Turn, ex: &mut Exchange) -> Action<'_> {
        let b = &self.0;
        let c = b.circuit(ex.upstream());
        let until = c.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Action::Continue;
        }
        let now = b.now_ms();
        if now >= until
            && c.probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            turn.probe = true;
            return Action::Continue;
        }
        turn.refused = true;
        let wait = std::time::Duration::from_millis(until.saturating_sub(now));
        let err = ProxyError::new(ErrorKind::CircuitOpen, "circuit open");
        Action::Fail(err.with_retry_after(wait))
    }

    fn on_complete(&self, turn: &mut Turn, ex: &Exchange) {
        if turn.refused || !ex.request_hook_ran() {
            return;
        }
        let b = &self.0;
        let upstream = ex.upstream();
        let c = b.circuit(upstream);
        // The service's own answer: a 5xx masked later (stale copy, error
        // page) is still a failure of the service.
        let failed = ex.service_failed();
        if failed {
            if turn.probe {
                b.open(c, upstream, "the probe failed");
            } else {
                let n = c.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= b.threshold && c.open_until.load(Ordering::Acquire) == 0 {
                    b.open(c, upstream, &format!("{n} consecutive failures"));
                }
            }
        } else if turn.probe {
            b.close(c, upstream);
        } else if c.consecutive.load(Ordering::Relaxed) != 0 {
            // Written only after a failure, so a healthy service costs no store.
            c.consecutive.store(0, Ordering::Relaxed);
        }
    }
}

impl Report for Breaker {
    fn section(&self) -> &'static str {
        "circuit"
    }

    fn stats(&self) -> serde_json::Value {
        let one = |c: &Circuit| {
            serde_json::json!({
                "state": self.state_of(c).as_str(),
                "consecutive_failures": c.consecutive.load(Ordering::Relaxed),
                "opened_total": c.opened.load(Ordering::Relaxed),
            })
        };
        let mut doc = one(&self.service);
        if !self.named.is_empty() {
            let named: serde_json::Map<String, serde_json::Value> = self
                .named
                .iter()
                .map(|(n, c)| (n.to_string(), one(c)))
                .collect();
            doc["upstreams"] = serde_json::Value::Object(named);
        }
        doc
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        // With named upstreams every series says whose circuit it is.
        let label = |name: &str| {
            if self.named.is_empty() {
                String::new()
            } else {
                format!(",upstream=\"{name}\"")
            }
        };
        family(
            out,
            "sitio_circuit_state",
            "gauge",
            "Circuit breaker state (1 for the current one).",
        );
        for (name, c) in self.circuits() {
            let now = self.state_of(c);
            for state in [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ] {
                let _ = writeln!(
                    out,
                    "sitio_circuit_state{{state=\"{}\"{}}} {}",
                    state.as_str(),
                    label(name),
                    u8::from(state == now)
                );
            }
        }
        family(
            out,
            "sitio_circuit_opened_total",
            "counter",
            "Times the circuit breaker opened.",
        );
        for (name, c) in self.circuits() {
            let opened = c.opened.load(Ordering::Relaxed);
            match label(name).strip_prefix(',') {
                Some(l) => {
                    let _ = writeln!(out, "sitio_circuit_opened_total{{{l}}} {opened}");
                }
                None => {
                    let _ = writeln!(out, "sitio_circuit_opened_total {opened}");
                }
            }
        }
    }
}
