//! One log line per exchange, through `tracing` (target `sitio::access`).

use super::{Decorator, Exchange};

/// Logs every completed exchange at INFO on the `sitio::access` target; the
/// subscriber decides between text and JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct AccessLog;

impl Decorator for AccessLog {
    type State = ();
    const ON_REQUEST: bool = false;
    const ON_RESPONSE: bool = false;
    fn name(&self) -> &'static str {
        "access_log"
    }

    fn on_complete(&self, (): &mut (), ex: &Exchange) {
        let latency_us = ex.latency().map_or(0, |d| d.as_micros() as u64);
        let ttfb_us = ex.time_to_first_byte().map_or(0, |d| d.as_micros() as u64);
        // The same fields, in the same order, as the `tracing` event below.
        let direct = crate::log::access(|f| {
            f.display("client", ex.client_addr);
            f.display("method", &ex.method);
            f.display("path", ex.path());
            f.display("version", version_name(ex.version));
            f.u64("status", ex.status.map_or(0, |s| u64::from(s.as_u16())));
            f.u64("latency_us", latency_us);
            f.u64("ttfb_us", ttfb_us);
            f.u64("bytes_in", ex.bytes_in);
            f.u64("bytes_out", ex.bytes_out);
            if let Some(e) = ex.error {
                f.str("error", e.as_str());
            }
            if let Some(u) = ex.upstream.as_deref() {
                f.str("upstream", u);
            }
            f.bool("upgraded", ex.upgraded);
        });
        if direct {
            return;
        }
        tracing::info!(
            target: "sitio::access",
            client = %ex.client_addr,
            method = %ex.method,
            // Display, not Debug: a request-target holds no character to
            // escape (the parser refused those), and escaping costs per byte.
            path = %ex.path(),
            version = %version_name(ex.version),
            status = ex.status.map_or(0, |s| s.as_u16()),
            latency_us,
            ttfb_us,
            bytes_in = ex.bytes_in,
            bytes_out = ex.bytes_out,
            // Fields only when they say something: each costs hundreds of
            // instructions a line (callgrind), and most exchanges have no error
            // and go to the service.
            error = ex.error.map(|e| e.as_str()),
            upstream = ex.upstream.as_deref(),
            upgraded = ex.upgraded,
        );
    }
}

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
