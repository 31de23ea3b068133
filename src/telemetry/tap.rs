//! The tap: a live feed of completed exchanges (the seed's network profiler).
//! Bounded: a slow reader loses events (counted), it never slows traffic, and
//! nothing is built for the feed while nobody listens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::decorator::Exchange;

/// How many events a reader may fall behind before it loses some.
const BACKLOG: usize = 1024;
/// SSE comment sent when the tap is quiet, so proxies and browsers keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Fans completed exchanges out to tap readers.
pub struct TapHub {
    tx: broadcast::Sender<Bytes>,
    dropped: AtomicU64,
    /// Readers connected now. Kept here because every exchange asks, and
    /// `broadcast::Sender::receiver_count` takes the channel's lock, one
    /// that all cores would share.
    readers: AtomicUsize,
}

impl std::fmt::Debug for TapHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapHub").finish_non_exhaustive()
    }
}

/// Counts a reader as connected until its feed is dropped.
struct Reading(Arc<TapHub>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for TapHub {
    fn default() -> Self {
        TapHub {
            tx: broadcast::channel(BACKLOG).0,
            dropped: AtomicU64::new(0),
            readers: AtomicUsize::new(0),
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
        if self.readers.load(Ordering::Relaxed) == 0 {
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

    /// A new reader's feed: SSE (`data: {json}`) or NDJSON, ending after
    /// `limit` events when given. Events the reader is too slow for are
    /// skipped and counted in [`TapHub::dropped`].
    pub fn stream(
        self: &Arc<Self>,
        ndjson: bool,
        limit: Option<u64>,
    ) -> impl Stream<Item = Bytes> + Send + 'static {
        // An SSE client reconnects when a stream ends; a limited tap is done,
        // so it tells the browser to wait a day before trying again.
        let retry: &'static [u8] = match (ndjson, limit) {
            (true, _) => b"",
            (false, Some(_)) => b"retry: 86400000\n\n",
            (false, None) => b"retry: 2000\n\n",
        };
        let preamble =
            futures_util::stream::iter((!retry.is_empty()).then(|| Bytes::from_static(retry)));
        let hub = self.clone();
        self.readers.fetch_add(1, Ordering::Relaxed);
        let reading = Reading(self.clone());
        let state = (self.tx.subscribe(), limit, reading);
        let events = futures_util::stream::unfold(state, move |(mut rx, left, reading)| {
            let hub = hub.clone();
            async move {
                if left == Some(0) {
                    return None;
                }
                loop {
                    let chunk = match tokio::time::timeout(HEARTBEAT, rx.recv()).await {
                        Ok(Ok(event)) if ndjson => [&event[..], b"\n"].concat(),
                        Ok(Ok(event)) => [b"data: ", &event[..], b"\n\n"].concat(),
                        Ok(Err(RecvError::Lagged(n))) => {
                            hub.dropped.fetch_add(n, Ordering::Relaxed);
                            continue;
                        }
                        Ok(Err(RecvError::Closed)) => return None,
                        Err(_) if ndjson => continue,
                        Err(_) => b": still here\n\n".to_vec(),
                    };
                    let is_event = !chunk.starts_with(b":");
                    let left = left.map(|n| n - u64::from(is_event));
                    return Some((Bytes::from(chunk), (rx, left, reading)));
                }
            }
        });
        futures_util::StreamExt::chain(preamble, events)
    }

    /// Events lost by slow readers so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Readers connected now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn exchange(path: &str) -> Exchange {
        let head = http::Request::get(path).body(()).unwrap().into_parts().0;
        let mut ex = Exchange::new(
            &head,
            path.into(),
            "127.0.0.1:1".parse().unwrap(),
            std::time::Instant::now(),
        );
        ex.status = Some(http::StatusCode::OK);
        ex
    }

    #[tokio::test]
    async fn a_slow_reader_loses_events_and_they_are_counted() {
        let hub = Arc::new(TapHub::default());
        let feed = hub.stream(true, Some(1));
        futures_util::pin_mut!(feed);
        for i in 0..(BACKLOG + 100) {
            hub.publish(&exchange(&format!("/e/{i}")));
        }
        let first = feed.next().await.unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"path\":\"/e/100\""));
        assert_eq!(hub.dropped(), 100);
        assert!(feed.next().await.is_none(), "limit reached");
    }

    #[tokio::test]
    async fn readers_are_counted_while_their_feed_lives() {
        let hub = Arc::new(TapHub::default());
        let first = hub.stream(true, None);
        let second = hub.stream(false, Some(1));
        assert_eq!(hub.readers(), 2);
        drop(first);
        assert_eq!(hub.readers(), 1);
        futures_util::pin_mut!(second);
        hub.publish(&exchange("/seen"));
        assert!(second.next().await.is_some(), "the retry preamble");
        assert!(second.next().await.is_some(), "the one event");
        assert!(second.next().await.is_none());
        assert_eq!(hub.readers(), 0, "a feed that ended is no reader");
    }

    #[test]
    fn nothing_is_built_without_readers_and_statics_are_recognised() {
        let hub = TapHub::default();
        hub.publish(&exchange("/x"));
        assert_eq!(hub.readers(), 0);
        assert!(is_static("/css/site.CSS"));
        assert!(!is_static("/api/users/42"));
    }
}
