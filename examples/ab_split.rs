//! A/B testing: `SPLIT_PERCENT` percent of requests go to a second service,
//! "b" on `127.0.0.1:B_PORT`, through sitio's own upstream machinery (its
//! pool, timeouts, request bodies, error pages, statistics); the rest go to the
//! service on `TARGET_PORT` as usual. `/stats` shows both under `upstreams`,
//! `/metrics` as `sitio_upstream_requests_total{upstream=...}`, the access log
//! names the upstream of each request.
//!
//! ```sh
//! python3 -m http.server 8087 &                      # A, the service
//! python3 -m http.server 8088 &                      # B
//! SPLIT_PERCENT=20 B_PORT=8088 cargo run --example ab_split
//! curl -s localhost:9901/stats | jq .upstreams
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use sitio::http::{HeaderValue, request, response};
use sitio::{Action, Decorator, Decorators, Exchange, StartError, Target};

/// Sends `percent` of requests to the upstream `b`, spread evenly: exactly
/// `percent` of every 100 consecutive requests.
struct AbSplit {
    percent: u64,
    seen: AtomicU64,
}

impl Decorator for AbSplit {
    type State = ();

    fn name(&self) -> &'static str {
        "ab_split"
    }

    fn on_request(&self, _: &mut request::Parts, (): &mut (), ex: &mut Exchange) -> Action<'_> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if (n + 1) * self.percent / 100 > n * self.percent / 100 {
            ex.set_upstream("b");
        }
        Action::Continue
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        (): &mut (),
        ex: &mut Exchange,
    ) -> Action<'_> {
        // Lets a client (and a test) see which variant answered.
        let variant = if ex.upstream() == "b" { "b" } else { "a" };
        head.headers
            .insert("x-variant", HeaderValue::from_static(variant));
        Action::Continue
    }
}

/// An env var's number, or a message naming it and what it accepts.
fn number<T: std::str::FromStr>(
    name: &str,
    accepts: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, StartError> {
    let raw = std::env::var(name)
        .map_err(|_| StartError::Config(format!("{name}: not set (expected {accepts})")))?;
    raw.trim()
        .parse()
        .ok()
        .filter(|v| ok(v))
        .ok_or_else(|| StartError::Config(format!("{name}: expected {accepts}, got {raw:?}")))
}

/// The stock sitio (every setting, `--help`, logging, exit codes) plus the
/// split; a bad `SPLIT_PERCENT` or `B_PORT` stops it with exit code 2.
fn main() -> std::process::ExitCode {
    sitio::main(|_config| {
        let percent = number::<u64>("SPLIT_PERCENT", "a percentage from 0 to 100", |p| *p <= 100)?;
        let port = number::<u16>("B_PORT", "a port from 1 to 65535", |p| *p > 0)?;
        Ok(Decorators::builder()
            .upstream(Target::new("b", "127.0.0.1", port))
            .with(AbSplit {
                percent,
                seen: AtomicU64::new(0),
            })
            .build())
    })
}
