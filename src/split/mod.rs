//! A/B testing that tells which side is worse (the seed's "A/B testing as a
//! way to detect implementation failures and performance problems"): a share
//! of requests goes to variants of the service, each a named upstream of the
//! engine (its own pool, timeouts, retries, figures); `/stats`, `/metrics`
//! and the dashboard compare the sides per route.
//!
//! - `settings`: `SITIO_SPLIT*`;
//! - `guard`: the last minute per side, and when a variant counts as worse.

mod guard;
mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderName, HeaderValue, request, response};
use serde_json::{Value, json};

pub use settings::{SplitSettings, Sticky, Variant, Variants};

use crate::decorator::{Action, Decorator, Exchange, Target};
use crate::resilience::Notifier;
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;
use guard::{Rule, Window};

/// The request header that picks a variant (`SITIO_SPLIT_HEADER=on`), and
/// the response header that names the side that answered.
static VARIANT_HEADER: HeaderName = HeaderName::from_static("sitio-variant");
const COOKIE_NAME: &str = "sitio-variant";
/// A share is drawn as a number below this (percent with two decimals).
const SCALE: u32 = 10_000;

/// One side: the service (index 0) or a variant.
struct Side {
    name: String,
    /// Upper bound (exclusive) of its draw, in [`SCALE`] units.
    until: u32,
    /// `sitio-variant: NAME` and the cookie's value, as a header.
    header: HeaderValue,
    cookie: HeaderValue,
    /// Sent back to the service by the guard.
    tripped: AtomicBool,
    window: Window,
    trips: AtomicU64,
}

/// The configured split: its sides, how clients stick, the guard.
pub struct Splitter {
    /// The service first, then the variants.
    sides: Vec<Side>,
    sticky: Sticky,
    by_header: bool,
    guard: Option<Rule>,
    notifier: Option<Arc<Notifier>>,
    epoch: std::time::Instant,
}

impl std::fmt::Debug for Splitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter").finish_non_exhaustive()
    }
}

impl Splitter {
    /// The split `settings` describe (`None` without variants); the guard
    /// tells `notifier` when it trips.
    pub fn new(settings: &SplitSettings, notifier: Option<Arc<Notifier>>) -> Option<Self> {
        if settings.split.0.is_empty() {
            return None;
        }
        let mut sides = Vec::with_capacity(settings.split.0.len() + 1);
        let mut bound = 0u32;
        let shares = settings
            .split
            .0
            .iter()
            .map(|v| (v.name.as_str(), v.percent));
        let variant_total: u32 = settings
            .split
            .0
            .iter()
            .map(|v| (v.percent * 100.0).round() as u32)
            .sum();
        // The service takes what the variants leave, drawn first.
        for (name, percent) in std::iter::once(("service", 0.0)).chain(shares) {
            bound += match name {
                "service" => SCALE.saturating_sub(variant_total),
                _ => (percent * 100.0).round() as u32,
            };
            sides.push(Side {
                name: name.to_owned(),
                until: bound,
                header: HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("?")),
                cookie: HeaderValue::from_str(&format!(
                    "{COOKIE_NAME}={name}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"
                ))
                .unwrap_or(HeaderValue::from_static("")),
                tripped: AtomicBool::new(false),
                window: Window::default(),
                trips: AtomicU64::new(0),
            });
        }
        Some(Splitter {
            sides,
            sticky: settings.split_sticky,
            by_header: settings.split_header,
            guard: settings.split_guard.then_some(Rule {
                factor: settings.split_guard_factor,
                min_requests: u64::from(settings.split_guard_min),
            }),
            notifier,
            epoch: crate::clock::now(),
        })
    }

    /// The named upstreams the variants are.
    pub fn targets(settings: &SplitSettings) -> impl Iterator<Item = Target> + '_ {
        settings
            .split
            .0
            .iter()
            .map(|v| Target::new(&v.name, &v.host, v.port))
    }

    fn side(&self, name: &[u8]) -> Option<usize> {
        self.sides.iter().position(|s| s.name.as_bytes() == name)
    }

    /// The side a request asked for: the header (when allowed), else the cookie.
    fn asked(&self, head: &request::Parts) -> Option<(usize, Asked)> {
        if self.by_header
            && let Some(i) = head
                .headers
                .get(&VARIANT_HEADER)
                .and_then(|v| self.side(v.as_bytes().trim_ascii()))
        {
            return Some((i, Asked::Header));
        }
        if self.sticky == Sticky::Cookie {
            let from_cookie = head
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
                .find_map(|name| self.side(name.trim().as_bytes()));
            return from_cookie.map(|i| (i, Asked::Cookie));
        }
        None
    }

    fn draw(&self) -> usize {
        let n = fastrand::u32(0..SCALE);
        self.sides.iter().position(|s| n < s.until).unwrap_or(0)
    }

    fn now(&self) -> u64 {
        crate::clock::since(self.epoch).as_secs()
    }

    /// Counts the exchange for the guard, and trips it if `side` is now worse.
    fn judge(&self, side: usize, failed: bool) {
        let Some(rule) = self.guard else { return };
        let now = self.now();
        let Some(s) = self.sides.get(side) else {
            return;
        };
        s.window.record(now, failed);
        if side == 0 || !failed || s.tripped.load(Ordering::Relaxed) {
            return;
        }
        let (variant, service) = (s.window.totals(now), self.sides[0].window.totals(now));
        if rule.trips(variant, service) && !s.tripped.swap(true, Ordering::Relaxed) {
            s.trips.fetch_add(1, Ordering::Relaxed);
            let rate = |(n, f): (u64, u64)| {
                if n == 0 {
                    0.0
                } else {
                    100.0 * f as f64 / n as f64
                }
            };
            let detail = format!(
                "the A/B guard sent all traffic back to the service: {}'s error rate was {:.1}% \
                 ({} of {}) against the service's {:.1}% over the last minute",
                s.name,
                rate(variant),
                variant.1,
                variant.0,
                rate(service)
            );
            tracing::warn!(target: "sitio::split", variant = s.name, "{detail}");
            if let Some(n) = &self.notifier {
                n.announce("split_guard_tripped", &s.name, detail);
            }
        }
    }
}

/// How a request named its side.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Header,
    Cookie,
}

/// The decorator that applies a [`Splitter`].
pub struct Split(pub Arc<Splitter>);

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split").finish_non_exhaustive()
    }
}

/// Which side an exchange went to, and whether its answer sets the cookie.
#[derive(Debug, Default, Clone, Copy)]
pub struct Turn {
    side: usize,
    set_cookie: bool,
}

impl Decorator for Split {
    type State = Turn;

    fn name(&self) -> &'static str {
        "split"
    }

    fn on_request(
        &self,
        head: &mut request::Parts,
        turn: &mut Turn,
        ex: &mut Exchange,
    ) -> Action<'_> {
        let s = &*self.0;
        let asked = s.asked(head);
        let mut side = asked.map_or_else(|| s.draw(), |(side, _)| side);
        if s.sides[side].tripped.load(Ordering::Relaxed) {
            side = 0;
        }
        head.headers.remove(&VARIANT_HEADER);
        turn.side = side;
        // A new cookie when the client has none for this side; a side picked
        // by the header (a tester's choice) sets none.
        turn.set_cookie = s.sticky == Sticky::Cookie
            && match asked {
                Some((_, Asked::Header)) => false,
                Some((cookie, Asked::Cookie)) => cookie != side,
                None => true,
            };
        if side != 0 {
            ex.set_upstream(&s.sides[side].name);
        }
        Action::Continue
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        turn: &mut Turn,
        _: &mut Exchange,
    ) -> Action<'_> {
        let side = &self.0.sides[turn.side];
        head.headers
            .insert(VARIANT_HEADER.clone(), side.header.clone());
        if turn.set_cookie {
            head.headers.append(SET_COOKIE, side.cookie.clone());
        }
        Action::Continue
    }

    fn on_complete(&self, turn: &mut Turn, ex: &Exchange) {
        if self.0.guard.is_none() || !ex.request_hook_ran() {
            return;
        }
        self.0.judge(turn.side, ex.service_failed());
    }
}

impl Report for Splitter {
    fn section(&self) -> &'static str {
        "split"
    }

    fn stats(&self) -> Value {
        let now = self.now();
        let sides: Vec<Value> = self
            .sides
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let lower = if i == 0 { 0 } else { self.sides[i - 1].until };
                let (requests, failures) = s.window.totals(now);
                json!({
                    "upstream": s.name,
                    "percent": f64::from(s.until - lower) / 100.0,
                    "tripped": s.tripped.load(Ordering::Relaxed),
                    "last_minute": {"requests": requests, "failures": failures},
                })
            })
            .collect();
        json!({
            "sticky": matches!(self.sticky, Sticky::Cookie),
            "guard": self.guard.map(|g| json!({"factor": g.factor, "min_requests": g.min_requests})),
            "sides": sides,
        })
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        family(
            out,
            "sitio_split_tripped",
            "gauge",
            "1 when the A/B guard sent a variant's traffic back to the service.",
        );
        for s in &self.sides[1..] {
            let _ = writeln!(
                out,
                "sitio_split_tripped{{upstream=\"{}\"}} {}",
                s.name,
                u8::from(s.tripped.load(Ordering::Relaxed))
            );
        }
    }
}
