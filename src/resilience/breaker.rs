//! The circuit breaker: after `SITIO_BREAKER_FAILURES` consecutive failures of
//! the service, sitio answers 503 at once for `SITIO_BREAKER_COOLDOWN`, then
//! lets one probe through (half-open): success closes the circuit, failure
//! opens it again. While closed, a request costs one atomic load.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::request;

use crate::decorator::{Action, Decorator, Exchange};
use crate::error::{Blame, ErrorKind, ProxyError};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;

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

/// Shared breaker state (one per sitio instance).
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    consecutive: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit is open; 0 = closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    opened: AtomicU64,
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
    /// A breaker opening after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            epoch: crate::clock::now(),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        crate::clock::since(self.epoch).as_millis() as u64 + 1
    }

    /// The state now.
    pub fn state(&self) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if self.now_ms() < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// Consecutive failures seen while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Times the circuit opened.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn open(&self, why: &str) {
        self.open_until.store(
            self.now_ms() + self.cooldown.as_millis() as u64,
            Ordering::Release,
        );
        self.probing.store(false, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(cooldown = ?self.cooldown, "circuit opened: {why}");
    }

    fn close(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
        tracing::info!("circuit closed: the probe succeeded");
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

    fn name(&self) -> &'static str {
        "circuit_breaker"
    }

    fn on_request(&self, _: &mut request::Parts, turn: &mut Turn, _: &mut Exchange) -> Action<'_> {
        let b = &self.0;
        let until = b.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Action::Continue;
        }
        let now = b.now_ms();
        if now >= until
            && b.probing
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
        // The service's own answer: a 5xx masked later (stale copy, error
        // page) is still a failure of the service.
        let failed = ex.error().is_some_and(|e| e.blame() == Blame::Upstream)
            || ex.service_status().is_some_and(|s| s.is_server_error());
        if failed {
            if turn.probe {
                b.open("the probe failed");
            } else {
                let n = b.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= b.threshold && b.open_until.load(Ordering::Acquire) == 0 {
                    b.open(&format!("{n} consecutive failures"));
                }
            }
        } else if turn.probe {
            b.close();
        } else if b.consecutive.load(Ordering::Relaxed) != 0 {
            // Written only after a failure, so a healthy service costs no store.
            b.consecutive.store(0, Ordering::Relaxed);
        }
    }
}

impl Report for Breaker {
    fn section(&self) -> &'static str {
        "circuit"
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state().as_str(),
            "consecutive_failures": self.consecutive_failures(),
            "opened_total": self.opened_total(),
        })
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        family(
            out,
            "sitio_circuit_state",
            "gauge",
            "Circuit breaker state (1 for the current one).",
        );
        let now = self.state();
        for state in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            let _ = writeln!(
                out,
                "sitio_circuit_state{{state=\"{}\"}} {}",
                state.as_str(),
                u8::from(state == now)
            );
        }
        family(
            out,
            "sitio_circuit_opened_total",
            "counter",
            "Times the circuit breaker opened.",
        );
        let _ = writeln!(out, "sitio_circuit_opened_total {}", self.opened_total());
    }
}
