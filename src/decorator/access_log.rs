//! One log line per exchange, through `tracing` (target `sitio::access`).

use super::{Decorator, Exchange};

/// Logs every completed exchange at INFO on the `sitio::access` target; the
/// subscriber decides between text and JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct AccessLog;

impl Decorator for AccessLog {
    type State = ();
    fn name(&self) -> &'static str {
        "access_log"
    }

    fn on_complete(&self, (): &mut (), ex: &Exchange) {
        let latency_us = ex.latency().map_or(0, |d| d.as_micros() as u64);
        let ttfb_us = ex.time_to_first_byte().map_or(0, |d| d.as_micros() as u64);
        tracing::info!(
            target: "sitio::access",
            client = %ex.client_addr,
            method = %ex.method,
            path = ex.path(),
            version = ?ex.version,
            status = ex.status.map_or(0, |s| s.as_u16()),
            latency_us,
            ttfb_us,
            bytes_in = ex.bytes_in,
            bytes_out = ex.bytes_out,
            error = ex.error.map_or("", |e| e.as_str()),
            upstream = ex.upstream(),
            upgraded = ex.upgraded,
        );
    }
}
