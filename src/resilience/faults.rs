//! Fault injection, as Istio offers it, for testing how a service's callers
//! cope: `SITIO_FAULT_DELAY="10%:200ms"` delays a share of requests,
//! `SITIO_FAULT_ABORT="5%:503"` answers a share with an error instead of the
//! service, optionally only on `SITIO_FAULT_ROUTES` patterns.

use std::cell::Cell;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, request, response};

use crate::body::Body;
use crate::decorator::{Action, Decorator, Exchange};
use crate::error::{ErrorKind, ProxyError};
use crate::response as build;
use crate::telemetry::routes::Patterns;

/// A share of requests, from `"NN%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share(f64);

fn parse_share(s: &str) -> Result<Share, String> {
    let pct: f64 = s
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse().ok())
        .filter(|p: &f64| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("expected a share such as 10% (0% to 100%), got {s:?}"))?;
    Ok(Share(pct / 100.0))
}

/// Fault injection's settings (`SITIO_FAULT_*`), flattened into [`crate::Config`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultSettings {
    /// Delay a share of requests, e.g. `10%:200ms` (fault injection).
    #[arg(long, global = true, env = "SITIO_FAULT_DELAY", value_name = "SITIO_FAULT_DELAY",
          value_parser = parse_delay)]
    pub fault_delay: Option<(Share, Duration)>,

    /// Answer a share of requests with an error, e.g. `5%:503` (fault injection).
    #[arg(long, global = true, env = "SITIO_FAULT_ABORT", value_name = "SITIO_FAULT_ABORT",
          value_parser = parse_abort)]
    pub fault_abort: Option<(Share, http::StatusCode)>,

    /// Inject faults only on these route patterns, e.g. `/api/*` (default: all).
    #[arg(long, global = true, env = "SITIO_FAULT_ROUTES", value_name = "SITIO_FAULT_ROUTES", default_value = "", hide_default_value = true,
          value_parser = crate::telemetry::routes::parse_routes)]
    pub fault_routes: String,
}

/// `SITIO_FAULT_DELAY`: a share and a delay, e.g. `10%:200ms`.
pub fn parse_delay(s: &str) -> Result<(Share, Duration), String> {
    let (share, delay) = s
        .split_once(':')
        .ok_or_else(|| format!("expected SHARE:DELAY such as 10%:200ms, got {s:?}"))?;
    Ok((parse_share(share)?, crate::units::parse_duration(delay)?))
}

/// `SITIO_FAULT_ABORT`: a share and a status, e.g. `5%:503`.
pub fn parse_abort(s: &str) -> Result<(Share, StatusCode), String> {
    let (share, status) = s
        .split_once(':')
        .ok_or_else(|| format!("expected SHARE:STATUS such as 5%:503, got {s:?}"))?;
    let status = status
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|c| (400..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("expected an error status from 400 to 599, got {status:?}"))?;
    Ok((parse_share(share)?, status))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let here = &t as *const u64 as u64;
    (t ^ here.rotate_left(32)) | 1
}

/// True with probability `share` (xorshift: cheap, per thread, no lock).
fn roll(share: Share) -> bool {
    if share.0 <= 0.0 {
        return false;
    }
    if share.0 >= 1.0 {
        return true;
    }
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < share.0
    })
}

/// Injects configured delays and aborts.
#[derive(Debug, Clone)]
pub struct FaultInjection {
    /// Share of requests delayed, and by how much.
    pub delay: Option<(Share, Duration)>,
    /// Share of requests aborted, and with which status.
    pub abort: Option<(Share, StatusCode)>,
    /// Only these routes (all when empty).
    pub routes: Patterns,
}

impl FaultInjection {
    /// The faults `settings` describe (`None` without a delay or an abort).
    pub fn from_settings(settings: &FaultSettings) -> Option<Self> {
        if settings.fault_delay.is_none() && settings.fault_abort.is_none() {
            return None;
        }
        Some(FaultInjection {
            delay: settings.fault_delay,
            abort: settings.fault_abort,
            // Validated when the settings were parsed.
            routes: Patterns::parse(&settings.fault_routes).unwrap_or_default(),
        })
    }
}

/// What fault injection did to one exchange.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Nothing.
    #[default]
    Nothing,
    /// Delayed the request, so its response says so.
    Delayed,
    /// Answered instead of the service.
    Aborted,
}

impl Decorator for FaultInjection {
    type State = Injected;

    fn name(&self) -> &'static str {
        "fault_injection"
    }

    fn on_request<'a>(
        &'a self,
        _: &'a mut request::Parts,
        injected: &'a mut Injected,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        if !self.routes.is_empty() && !self.routes.matches(ex.path()) {
            return Action::Continue;
        }
        if let Some((share, status)) = self.abort
            && roll(share)
        {
            *injected = Injected::Aborted;
            let err = ProxyError::new(
                ErrorKind::FaultInjected,
                "fault injected by sitio (SITIO_FAULT_ABORT)",
            );
            return Action::Fail(err.with_status(status));
        }
        if let Some((share, delay)) = self.delay
            && roll(share)
        {
            *injected = Injected::Delayed;
            // An ordinary wait: the exchange's task sleeps, no thread does.
            return Action::wait(async move {
                tokio::time::sleep(delay).await;
                Action::Continue
            });
        }
        Action::Continue
    }

    fn on_error(
        &self,
        err: &ProxyError,
        injected: &mut Injected,
        _: &mut Exchange,
    ) -> Option<Response<Body>> {
        if *injected != Injected::Aborted {
            return None;
        }
        // What a failing service would send: a short text, not sitio's page.
        let mut res = build::text(
            err.status().as_u16(),
            "fault injected by sitio (SITIO_FAULT_ABORT)\n",
        );
        res.headers_mut()
            .insert("sitio-fault", HeaderValue::from_static("abort"));
        Some(res)
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        injected: &mut Injected,
        _: &mut Exchange,
    ) -> Action<'_> {
        if *injected == Injected::Delayed {
            head.headers
                .insert("sitio-fault", HeaderValue::from_static("delay"));
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_delay("10%:200ms").unwrap(),
            (Share(0.1), Duration::from_millis(200))
        );
        assert_eq!(
            parse_abort("5%:503").unwrap(),
            (Share(0.05), StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(parse_abort("5%:200").is_err());
        assert!(parse_abort("150%:503").is_err());
        assert!(parse_delay("10:200ms").is_err());
        assert!(parse_delay("10%").is_err());
    }

    #[test]
    fn rolls_follow_the_share() {
        let hits = (0..100_000).filter(|_| roll(Share(0.25))).count();
        assert!((23_000..27_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| roll(Share(0.0))));
        assert!((0..1000).all(|_| roll(Share(1.0))));
    }
}
