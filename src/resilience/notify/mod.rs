//! Notify on crash (the seed's `service.on('http:500', header => send_mail())`):
//! a webhook hears when the service answers 5xx, becomes unreachable, and
//! recovers. Events are grouped per route and kind (one per interval, later
//! ones folded into a count) and sent off the request path from a bounded
//! queue with retries; a dead webhook never slows traffic, lost events are
//! counted.

mod mail;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

pub use mail::{MailSettings, Mailboxes, Password, Relay, Security};
pub use webhook::NotifyFormat;

use crate::decorator::{Decorator, Exchange};
use crate::error::{Blame, ErrorKind};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;
use mail::Mail;
use webhook::Webhook;

/// The notification settings (`SITIO_NOTIFY_*`), flattened into [`crate::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct NotifySettings {
    /// Webhook (http:// or https://) told when the service answers 5xx, becomes unreachable, recovers.
    #[arg(long, global = true, env = "SITIO_NOTIFY_URL", value_name = "SITIO_NOTIFY_URL", value_parser = parse_url)]
    pub notify_url: Option<http::Uri>,

    /// At most one notification per route and kind this often; later ones are folded.
    #[arg(long, global = true, env = "SITIO_NOTIFY_INTERVAL", value_name = "SITIO_NOTIFY_INTERVAL",
          default_value = "30s", value_parser = crate::units::parse_duration)]
    pub notify_interval: Duration,

    /// Notification body: `json` (sitio's event) or `slack` (incoming-webhook text).
    #[arg(long, global = true, env = "SITIO_NOTIFY_FORMAT", value_name = "SITIO_NOTIFY_FORMAT", value_enum,
          default_value_t = NotifyFormat::Json)]
    pub notify_format: NotifyFormat,

    /// Crash mail, `SITIO_NOTIFY_SMTP*` and `SITIO_NOTIFY_MAIL_*`.
    #[command(flatten)]
    pub mail: MailSettings,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            notify_url: None,
            notify_interval: Duration::from_secs(30),
            notify_format: NotifyFormat::Json,
            mail: MailSettings::default(),
        }
    }
}

fn parse_url(s: &str) -> Result<http::Uri, String> {
    crate::units::parse_http_url(s, "https://hooks.slack.com/services/...")
}

/// Events waiting to be sent before new ones are dropped.
const QUEUE: usize = 256;
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
struct Event {
    kind: &'static str,
    event: &'static str,
    method: String,
    route: String,
    status: Option<u16>,
    latency_ms: f64,
    at: SystemTime,
    /// The upstream concerned (`service`, or an A/B variant).
    upstream: String,
    /// What happened, when the event is not about one request (the A/B guard).
    detail: Option<String>,
}

/// Who is telling: the pod (or host) and the service it decorates.
struct Origin {
    host: String,
    service: String,
}

impl Origin {
    /// What happened, in a few words (the mail's subject).
    fn what(e: &Event) -> String {
        let what = match (&e.detail, e.event, e.status) {
            (Some(detail), _, _) => return detail.clone(),
            (None, "service_recovered", _) => "the service is reachable again".to_owned(),
            (None, _, Some(s)) => format!("{} {} answered {s}", e.method, e.route),
            (None, _, None) => format!("{} {} failed: {}", e.method, e.route, e.kind),
        };
        match e.upstream.as_str() {
            "service" => what,
            upstream => format!("{what} (upstream {upstream})"),
        }
    }

    /// One line saying what happened (Slack's text, the mail's first line).
    fn summary(&self, e: &Event, folded: u64) -> String {
        let what = Origin::what(e);
        let folded = if folded > 0 {
            format!(" ({folded} more like it since the last message)")
        } else {
            String::new()
        };
        format!("sitio on {} ({}): {what}{folded}", self.host, self.service)
    }
}

/// Where events go.
enum Sink {
    Webhook(Webhook),
    Mail(Mail),
}

/// One channel and what happened to its events.
struct Channel {
    sink: Sink,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Channel {
    fn new(sink: Sink) -> Self {
        Channel {
            sink,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn name(&self) -> &'static str {
        match self.sink {
            Sink::Webhook(_) => "webhook",
            Sink::Mail(_) => "mail",
        }
    }

    async fn send(&self, origin: &Origin, event: &Event, folded: u64) -> Result<(), String> {
        match &self.sink {
            Sink::Webhook(w) => w.send(origin, event, folded).await,
            Sink::Mail(m) => m.send(origin, event, folded).await,
        }
    }

    /// Sends with retries and backoff; a channel that stays down is counted, not waited for.
    async fn deliver(&self, origin: &Origin, event: &Event, folded: u64) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.send(origin, event, folded).await {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        channel = self.name(),
                        attempt,
                        error,
                        "notification not delivered"
                    )
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where notifications go (a webhook, mail, or both), and what happened to them.
pub struct Notifier {
    origin: Origin,
    channels: Vec<Channel>,
    interval: Duration,
    tx: mpsc::Sender<Event>,
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
    down: AtomicBool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier about the service at `service`, with no channel yet.
    pub fn new(interval: Duration, service: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map_or_else(|| "unknown".to_owned(), |h| h.trim().to_owned());
        Notifier {
            origin: Origin { host, service },
            channels: Vec::new(),
            interval,
            tx,
            rx: Mutex::new(Some(rx)),
            down: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// The notifier `settings` describe, about the service at `service`
    /// (`None` when no channel is configured); https channels trust the
    /// public roots and `ca_file`'s CAs.
    pub fn from_settings(
        settings: &NotifySettings,
        service: String,
        ca_file: Option<&crate::tls::CaFile>,
    ) -> Option<Self> {
        let mut notifier = Notifier::new(settings.notify_interval, service);
        if let Some(url) = &settings.notify_url {
            notifier.add_webhook(url.clone(), settings.notify_format, ca_file);
        }
        if let Err(e) = notifier.add_mail(&settings.mail, ca_file) {
            // The settings were checked at startup; this is a relay TLS setup failure.
            tracing::error!(error = e, "crash mail is off");
        }
        notifier.has_channels().then_some(notifier)
    }

    /// Also posts to the webhook `url`; an https one is checked against the
    /// public roots and `ca_file`'s CAs.
    pub fn add_webhook(
        &mut self,
        url: http::Uri,
        format: NotifyFormat,
        ca_file: Option<&crate::tls::CaFile>,
    ) {
        let hook = Webhook::new(url, format, ca_file);
        self.channels.push(Channel::new(Sink::Webhook(hook)));
    }

    /// Also mails as `settings` say (nothing without `SITIO_NOTIFY_SMTP`); the
    /// error names the setting that cannot work.
    pub fn add_mail(
        &mut self,
        settings: &MailSettings,
        ca_file: Option<&crate::tls::CaFile>,
    ) -> Result<(), String> {
        if let Some(mail) = Mail::new(settings, ca_file)? {
            self.channels.push(Channel::new(Sink::Mail(mail)));
        }
        Ok(())
    }

    /// True when events have somewhere to go.
    pub fn has_channels(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Per channel (`webhook`, `mail`): events delivered, given up after
    /// retries, and dropped because the queue was full.
    pub fn counts(&self) -> Vec<(&'static str, [(&'static str, u64); 3])> {
        let dropped = self.dropped.load(Ordering::Relaxed);
        self.channels
            .iter()
            .map(|c| {
                let counts = [
                    ("sent", c.sent.load(Ordering::Relaxed)),
                    ("failed", c.failed.load(Ordering::Relaxed)),
                    ("dropped", dropped),
                ];
                (c.name(), counts)
            })
            .collect()
    }

    /// An event that is not about one request (the A/B guard tripping), about `upstream`.
    pub(crate) fn announce(&self, event: &'static str, upstream: &str, detail: String) {
        self.enqueue(Event {
            kind: event,
            event,
            method: String::new(),
            route: String::new(),
            status: None,
            latency_ms: 0.0,
            at: SystemTime::now(),
            upstream: upstream.to_owned(),
            detail: Some(detail),
        });
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
        let mut groups: HashMap<(String, &'static str, String), (Instant, u64, Event)> =
            HashMap::new();
        let mut tick = tokio::time::interval(self.interval.min(Duration::from_secs(1)));
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    let key = (event.route.clone(), event.kind, event.upstream.clone());
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

    /// Every channel at once: a slow relay does not hold the webhook back.
    async fn deliver(&self, event: &Event, folded: u64) {
        let sends = self
            .channels
            .iter()
            .map(|c| c.deliver(&self.origin, event, folded));
        futures_util::future::join_all(sends).await;
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut out = String::with_capacity(24);
    crate::log::civil_time(&mut out, d.as_secs());
    out.push_str(&format!(".{:03}Z", d.subsec_millis()));
    out
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
    const ON_REQUEST: bool = false;
    const ON_RESPONSE: bool = false;
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
            upstream: ex.upstream().to_owned(),
            detail: None,
        };
        // Judged by the service's own answer, whatever the client got.
        if let Some(kind) = ex.error().filter(|k| unreachable_kind(*k)) {
            n.down.store(true, Ordering::Relaxed);
            n.enqueue(event("service_unreachable", kind.as_str()));
        } else if let Some(status) = ex.service_status() {
            if status.is_server_error() {
                n.enqueue(event("service_error", status_kind(status.as_u16())));
            } else if let Some(code) = ex
                .grpc_status()
                .filter(|c| crate::grpc::is_server_error(*c))
            {
                // A gRPC failure travels in an HTTP 200: the code says it all.
                let mut e = event("service_error", crate::grpc::event_kind(code));
                e.status = None;
                n.enqueue(e);
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
        let channels = self.counts().into_iter().map(|(name, counts)| {
            let counts = counts.map(|(k, v)| (k.to_owned(), serde_json::json!(v)));
            (
                name.to_owned(),
                serde_json::Value::Object(counts.into_iter().collect()),
            )
        });
        serde_json::Value::Object(channels.collect())
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        family(
            out,
            "sitio_notify_events_total",
            "counter",
            "Crash notifications by channel and outcome.",
        );
        for (channel, counts) in self.counts() {
            for (result, count) in counts {
                let _ = writeln!(
                    out,
                    "sitio_notify_events_total{{channel=\"{channel}\",result=\"{result}\"}} {count}"
                );
            }
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
