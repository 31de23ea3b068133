//! The order of every decorator sitio runs, in one place (tower's onion rule:
//! the first is the outermost, it sees the request first and the response
//! last):
//!
//! ```text
//!  client
//!   1. statistics and tap   sees every exchange, whoever answers it
//!   2. access log           logs what the client got
//!   3. your decorators      in the order you added them
//!   4. error pages          SITIO_ERROR_PAGE_*; your decorators see (and may override) them
//!   5. rate limits          SITIO_RATE_LIMIT*; its 429 gets the error pages (SITIO_ERROR_PAGE_429)
//!   6. auth                 SITIO_AUTH_*; after the rate limit, so a flood of bad tokens
//!                           costs no signature checks beyond the limit; its 401 gets the pages
//!   7. A/B split            SITIO_SPLIT*; only authenticated requests reach a variant, and
//!                           everything inside works per variant (the upstream is chosen here)
//!   8. fault injection      SITIO_FAULT_*; nothing inside masks its faults
//!   9. stale copies         SITIO_STALE_ON_ERROR; masks the breaker's and the service's errors
//!  10. circuit breaker      SITIO_BREAKER_*; its 503s reach everything outside like any answer
//!  11. crash notifications  SITIO_NOTIFY_*; judges the service's own answers
//!  service
//! ```
//!
//! Layers 2 and 4 come from [`stock`] (what the binary and `sitio::main` run);
//! a caller of [`crate::run`] passes its own chain for layers 2 to 4. Layers 1
//! and 5 to 11 are added by [`around`] from the configuration.

use std::sync::Arc;

use crate::auth::{Auth, Authenticate};
use crate::config::Config;
use crate::decorator::{AccessLog, Decorators, ErrorPages};
use crate::error::StartError;
use crate::resilience::{
    Breaker, CircuitBreaker, FaultInjection, Notifier, NotifyOnCrash, RateLimit, RateLimiter,
    StaleCache, StaleOnError,
};
use crate::split::{Split, Splitter};

/// Clients (or routes) a rate limit remembers at most: 100k keys, a few MiB.
const RATE_LIMIT_KEYS: usize = 100_000;
use crate::telemetry::{Recorder, Report, Telemetry};

/// Layers 2 to 4: the access log, `user`, and the error pages, as configured.
pub(crate) fn stock(config: &Config, user: Decorators) -> Result<Decorators, StartError> {
    let mut pages = ErrorPages::new();
    for (target, path) in config.error_page_files() {
        let html = std::fs::read(path).map_err(|e| {
            StartError::Config(format!(
                "{}: cannot read error page {}: {e} (expected a readable HTML file)",
                target.variable(),
                path.display()
            ))
        })?;
        pages = pages.page(target, html);
    }
    let mut chain = user;
    if !pages.is_empty() {
        chain = chain.wrapping(pages);
    }
    if config.access_log {
        chain = chain.wrapped_in(AccessLog);
    }
    Ok(chain)
}

/// The whole chain around `inner` (layers 2 to 4), and the telemetry that
/// reports on the built-ins it added.
pub(crate) fn around(
    config: &Config,
    inner: Decorators,
) -> Result<(Decorators, Arc<Telemetry>), StartError> {
    let mut chain = inner;
    let notifier = notifier(config);
    let limiter = RateLimiter::from_settings(&config.rate_limit, RATE_LIMIT_KEYS).map(Arc::new);
    if let Some(l) = &limiter {
        chain = chain.wrapping(RateLimit(l.clone()));
    }
    let auth = Auth::new(&config.auth, config.ca_file.as_ref()).map(Arc::new);
    if let Some(a) = &auth {
        chain = chain.wrapping(Authenticate(a.clone()));
    }
    let splitter = Splitter::new(&config.split, notifier.clone()).map(Arc::new);
    if let Some(s) = &splitter {
        for target in Splitter::targets(&config.split) {
            chain = chain
                .with_target(target)
                .map_err(|e| StartError::Config(format!("SITIO_SPLIT: {e}")))?;
        }
        chain = chain.wrapping(Split(s.clone()));
    }
    if let Some(faults) = FaultInjection::from_settings(&config.faults) {
        chain = chain.wrapping(faults);
    }
    let stale = StaleCache::from_settings(&config.stale).map(Arc::new);
    if let Some(cache) = &stale {
        chain = chain.wrapping(StaleOnError(cache.clone()));
    }
    let breaker = Breaker::from_settings(&config.breaker)
        .map(|b| Arc::new(b.with_upstreams(chain.upstreams().iter().map(|t| t.name.as_str()))));
    if let Some(b) = &breaker {
        chain = chain.wrapping(CircuitBreaker(b.clone()));
    }
    if let Some(n) = &notifier {
        chain = chain.wrapping(NotifyOnCrash(n.clone()));
    }
    let mut reports: Vec<Arc<dyn Report>> = Vec::new();
    reports.extend(limiter.map(|l| l as Arc<dyn Report>));
    reports.extend(auth.map(|a| a as Arc<dyn Report>));
    reports.extend(splitter.map(|s| s as Arc<dyn Report>));
    reports.extend(breaker.map(|b| b as Arc<dyn Report>));
    reports.extend(notifier.map(|n| n as Arc<dyn Report>));
    reports.extend(stale.map(|c| c as Arc<dyn Report>));
    let telemetry = Telemetry::new(config.stats, config.max_routes, reports);
    if let Some(stats) = &telemetry.stats {
        if !chain.upstreams().is_empty() {
            stats.track_upstreams();
        }
        chain = chain.wrapped_in(Recorder {
            stats: stats.clone(),
            tap: telemetry.tap.clone(),
        });
    }
    Ok((chain, telemetry))
}

/// Layer 11's notifier, when a webhook or mail is configured.
fn notifier(config: &Config) -> Option<Arc<Notifier>> {
    let service = format!("{}:{}", config.target_host, config.target_port);
    Notifier::from_settings(&config.notify, service, config.ca_file.as_ref()).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decorator::{Action, on_status};

    #[test]
    fn the_layers_are_in_the_documented_order() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("404.html");
        std::fs::write(&page, "<h1>gone</h1>").unwrap();
        let config = Config {
            error_page_404: Some(page),
            faults: crate::resilience::faults::FaultSettings {
                fault_abort: crate::resilience::faults::parse_abort("1%:503").ok(),
                ..Default::default()
            },
            stale: crate::resilience::stale::StaleSettings {
                stale_on_error: true,
                ..Default::default()
            },
            breaker: crate::resilience::breaker::BreakerSettings {
                breaker_failures: 3,
                ..Default::default()
            },
            notify: crate::resilience::notify::NotifySettings {
                notify_url: Some("http://127.0.0.1:9/hook".parse().unwrap()),
                ..Default::default()
            },
            rate_limit: crate::resilience::rate_limit::RateLimitSettings {
                rate_limit: crate::resilience::rate_limit::parse_limit("10/s").ok(),
                ..Default::default()
            },
            split: crate::split::SplitSettings {
                split: crate::split::Variants(vec![crate::split::Variant {
                    name: "canary".into(),
                    host: "127.0.0.1".into(),
                    port: 9,
                    percent: 10.0,
                }]),
                ..Default::default()
            },
            auth: crate::auth::AuthSettings {
                auth_jwks_url: Some("http://127.0.0.1:9/certs".parse().unwrap()),
                ..Default::default()
            },
            ..Config::default()
        };
        let user = Decorators::builder()
            .with(on_status(404, |_, _| Action::Continue))
            .build();
        let (chain, _) = around(&config, stock(&config, user).unwrap()).unwrap();
        let names = chain.names();
        let position = |needle: &str| {
            names
                .iter()
                .position(|n| n.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in {names:?}"))
        };
        let order = [
            "stats",
            "access_log",
            "on_status",
            "error_pages",
            "rate_limit",
            "auth",
            "split",
            "fault",
            "stale",
            "breaker",
            "notify",
        ]
        .map(position);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert_eq!(names.len(), 11, "{names:?}");
    }
}
