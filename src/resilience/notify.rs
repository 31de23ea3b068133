//! Notify on crash (the seed's `service.on('http:500', header => send_mail())`):
//! a webhook hears when the service answers 5xx, becomes unreachable, and
//! recovers. Events are grouped per route and kind (one per interval, later
//! ones folded into a count) and sent off the request path from a bounded
//! queue with retries; a dead webhook never slows traffic, lost events are
//! counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Uri;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::decorator::{Decorator, Exchange};
use crate::error::{Blame, ErrorKind};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;

/// Events waiting to be sent before new ones are dropped.
const QUEUE: usize = 256;
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A webhook's answer is read (so its connection ends cleanly), not kept.
const ANSWER_LIMIT: usize = 64 << 10;

/// The shape of the webhook body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum NotifyFormat {
    /// sitio's JSON event.
    #[default]
    Json,
    /// A Slack-compatible incoming-webhook message (`{"text": ...}`).
    Slack,
}

#[derive(Debug, Clone)]
struct Event {
    kind: &'static str,
    event: &'static str,
    method: String,
    route: String,
    status: Option<u16>,
    latency_ms: f64,
    at: SystemTime,
}

/// Where notifications go, and what happened to them.
pub struct Notifier {
    url: Uri,
    format: NotifyFormat,
    interval: Duration,
    service: String,
    host: String,
    /// For an https webhook.
    tls: Option<tokio_rustls::TlsConnector>,
    tx: mpsc::Sender<Event>,
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
    down: AtomicBool,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier posting to `url` about the service at `service`; an https
    /// `url` is checked against the public roots (and `SITIO_CA_FILE`'s CAs:
    /// see [`Notifier::trusting`]).
    pub fn new(url: Uri, format: NotifyFormat, interval: Duration, service: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map_or_else(|| "unknown".to_owned(), |h| h.trim().to_owned());
        let tls = (url.scheme_str() == Some("https")).then(|| crate::tls::connector(None));
        Notifier {
            tls,
            url,
            format,
            interval,
            service,
            host,
            tx,
            rx: Mutex::new(Some(rx)),
            down: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The same notifier, also trusting the CAs of `ca_file` for an https webhook.
    pub fn trusting(mut self, ca_file: Option<&crate::tls::CaFile>) -> Self {
        if self.tls.is_some() {
            self.tls = Some(crate::tls::connector(ca_file));
        }
        self
    }

    /// Events delivered, given up after retries, and dropped because the queue was full.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("sent", self.sent.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
            ("dropped", self.dropped.load(Ordering::Relaxed)),
        ]
    }

    fn enqueue(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends queued events until the task is aborted. Call once.
    pub async fn run(self: Arc<Self>) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        // Per (route, kind): when its window opened, and what was folded since.
        let mut groups: HashMap<(String, &'static str), (Instant, u64, Event)> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval.min(Duration::from_secs(1)));
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    let key = (event.route.clone(), event.kind);
                    let now = crate::clock::now();
                    match groups.get_mut(&key) {
                        Some((opened, folded, last)) if now.duration_since(*opened) < self.interval => {
                            *folded += 1;
                            *last = event;
                        }
                        _ => {
                            self.deliver(&event, 0).await;
                            groups.insert(key, (now, 0, event));
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = crate::clock::now();
                    let due: Vec<_> = groups
                        .iter()
                        .filter(|(_, (opened, _, _))| now.duration_since(*opened) >= self.interval)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in due {
                        if let Some((_, folded, last)) = groups.remove(&key)
                            && folded > 0
                        {
                            self.deliver(&last, folded).await;
                        }
                    }
                }
            }
        }
    }

    fn body(&self, e: &Event, folded: u64) -> Value {
        match self.format {
            NotifyFormat::Json => json!({
                "event": e.event,
                "kind": e.kind,
                "host": self.host,
                "service": self.service,
                "method": e.method,
                "route": e.route,
                "status": e.status,
                "latency_ms": (e.latency_ms * 100.0).round() / 100.0,
                "time": rfc3339(e.at),
                "folded": folded,
            }),
            NotifyFormat::Slack => {
                let what = match e.event {
                    "service_recovered" => "the service is reachable again".to_owned(),
                    _ => match e.status {
                        Some(s) => format!("{} {} answered {s}", e.method, e.route),
                        None => format!("{} {} failed: {}", e.method, e.route, e.kind),
                    },
                };
                let folded = if folded > 0 {
                    format!(" ({folded} more like it since the last message)")
                } else {
                    String::new()
                };
                json!({"text": format!("sitio on {} ({}): {what}{folded}", self.host, self.service)})
            }
        }
    }

    async fn deliver(&self, event: &Event, folded: u64) {
        let body = Bytes::from(self.body(event, folded).to_string());
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                crate::client::request(
                    &self.url,
                    self.tls.as_ref(),
                    http::Method::POST,
                    Some(("application/json", body.clone())),
                    ANSWER_LIMIT,
                ),
            )
            .await
            .map(|r| r.map(|answer| answer.status))
            {
                Ok(Ok(status)) if status.is_success() => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(Ok(status)) => {
                    tracing::warn!(attempt, %status, "notify webhook refused the event")
                }
                Ok(Err(e)) => tracing::warn!(attempt, error = %e, "notify webhook unreachable"),
                Err(_) => tracing::warn!(attempt, "notify webhook timed out"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The decorator that feeds a [`Notifier`].
pub struct NotifyOnCrash(pub Arc<Notifier>);

impl std::fmt::Debug for NotifyOnCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyOnCrash").finish_non_exhaustive()
    }
}

fn unreachable_kind(kind: ErrorKind) -> bool {
    kind.blame() == Blame::Upstream && kind != ErrorKind::CircuitOpen
}

impl Decorator for NotifyOnCrash {
    type State = ();
    fn name(&self) -> &'static str {
        "notify_on_crash"
    }

    fn on_complete(&self, (): &mut (), ex: &Exchange) {
        let n = &self.0;
        let event = |event: &'static str, kind: &'static str| Event {
            kind,
            event,
            method: ex.method().to_string(),
            route: ex.route().to_string(),
            status: ex.service_status().map(|s| s.as_u16()),
            latency_ms: ex.latency().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            at: SystemTime::now(),
        };
        // Judged by the service's own answer, whatever the client got.
        if let Some(kind) = ex.error().filter(|k| unreachable_kind(*k)) {
            n.down.store(true, Ordering::Relaxed);
            n.enqueue(event("service_unreachable", kind.as_str()));
        } else if let Some(status) = ex.service_status() {
            if status.is_server_error() {
                n.enqueue(event("service_error", status_kind(status.as_u16())));
            } else if n.down.load(Ordering::Relaxed) && n.down.swap(false, Ordering::Relaxed) {
                // One relaxed load on success; the swap only after an outage.
                n.enqueue(event("service_recovered", "recovered"));
            }
        }
    }
}

impl Report for Notifier {
    fn section(&self) -> &'static str {
        "notify"
    }

    fn stats(&self) -> serde_json::Value {
        let counts = self
            .counts()
            .map(|(k, v)| (k.to_owned(), serde_json::json!(v)));
        serde_json::Value::Object(counts.into_iter().collect())
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        family(
            out,
            "sitio_notify_events_total",
            "counter",
            "Crash notifications by outcome.",
        );
        for (result, count) in self.counts() {
            let _ = writeln!(
                out,
                "sitio_notify_events_total{{result=\"{result}\"}} {count}"
            );
        }
    }

    fn background(
        self: Arc<Self>,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        Some(Box::pin(self.run()))
    }
}

fn status_kind(status: u16) -> &'static str {
    const KINDS: [&str; 12] = [
        "http-500", "http-501", "http-502", "http-503", "http-504", "http-505", "http-506",
        "http-507", "http-508", "http-5xx", "http-510", "http-511",
    ];
    KINDS
        .get(usize::from(status.saturating_sub(500)))
        .copied()
        .unwrap_or("http-5xx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_348_800_123);
        assert_eq!(rfc3339(t), "2026-11-22T12:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
