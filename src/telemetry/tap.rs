//! The tap: a live feed of completed exchanges (the seed's network profiler).
//! Bounded: a slow reader loses events (counted), it never slows traffic, and
//! nothing is built for the feed while nobody listens.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::decorator::Exchange;

/// How many events a reader may fall behind before it loses some.
const BACKLOG: usize = 1024;

/// Fans completed exchanges out to tap readers.
pub struct TapHub {
    tx: broadcast::Sender<Bytes>,
    dropped: AtomicU64,
}

impl Default for TapHub {
    fn default() -> Self {
        TapHub {
            tx: broadcast::channel(BACKLOG).0,
            dropped: AtomicU64::new(0),
        }
    }
}

const STATIC_EXTENSIONS: &[&str] = &[
    "css", "js", "mjs", "png", "jpg", "jpeg", "gif", "svg", "ico", "webp", "avif", "woff", "woff2",
    "ttf", "map", "txt", "pdf", "mp4", "webm", "html", "htm", "json", "xml", "wasm",
];

/// True when the path names a file by a common static extension.
pub fn is_static(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    last.rsplit_once('.').is_some_and(|(_, ext)| {
        STATIC_EXTENSIONS
            .iter()
            .any(|s| ext.eq_ignore_ascii_case(s))
    })
}

impl TapHub {
    /// Publishes `ex` to current readers, if any.
    pub(crate) fn publish(&self, ex: &Exchange) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let event = serde_json::json!({
            "time_ms": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "method": ex.method.as_str(),
            "path": ex.path(),
            "route": ex.route.as_str(),
            "status": ex.status.map_or(0, |s| s.as_u16()),
            "latency_ms": ex.latency().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            "bytes_out": ex.bytes_out,
            "bytes_in": ex.bytes_in,
            "static": is_static(ex.path()),
            "error": ex.error.map(|e| e.as_str()),
            "client": ex.client_addr.ip().to_string(),
        });
        let _ = self.tx.send(Bytes::from(event.to_string()));
    }

    /// A new reader.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.tx.subscribe()
    }

    /// Records events a slow reader lost.
    pub fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Events lost by slow readers so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Readers connected now.
    pub fn readers(&self) -> usize {
        self.tx.receiver_count()
    }
}
