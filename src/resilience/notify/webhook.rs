//! The webhook channel: one POST per event, sitio's JSON or Slack's text.

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use serde_json::{Value, json};

use super::{Event, Origin, rfc3339};

/// A webhook's answer is read (so its connection ends cleanly), not kept.
const ANSWER_LIMIT: usize = 64 << 10;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shape of the webhook body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum NotifyFormat {
    /// sitio's JSON event.
    #[default]
    Json,
    /// A Slack-compatible incoming-webhook message (`{"text": ...}`).
    Slack,
}

pub(super) struct Webhook {
    url: Uri,
    format: NotifyFormat,
    /// For an https webhook.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Webhook {
    pub(super) fn new(
        url: Uri,
        format: NotifyFormat,
        ca_file: Option<&crate::tls::CaFile>,
    ) -> Self {
        let tls = (url.scheme_str() == Some("https")).then(|| crate::tls::connector(ca_file));
        Webhook { url, format, tls }
    }

    /// One attempt to deliver.
    pub(super) async fn send(&self, origin: &Origin, e: &Event, folded: u64) -> Result<(), String> {
        let body = Bytes::from(self.body(origin, e, folded).to_string());
        let attempt = crate::client::request(
            &self.url,
            self.tls.as_ref(),
            http::Method::POST,
            Some(("application/json", body)),
            ANSWER_LIMIT,
        );
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(answer)) if answer.status.is_success() => Ok(()),
            Ok(Ok(answer)) => Err(format!("the webhook answered {}", answer.status)),
            Ok(Err(e)) => Err(format!("the webhook is unreachable: {e}")),
            Err(_) => Err("the webhook timed out".to_owned()),
        }
    }

    fn body(&self, origin: &Origin, e: &Event, folded: u64) -> Value {
        match self.format {
            NotifyFormat::Json => json!({
                "event": e.event,
                "kind": e.kind,
                "host": origin.host,
                "service": origin.service,
                "method": e.method,
                "route": e.route,
                "status": e.status,
                "latency_ms": (e.latency_ms * 100.0).round() / 100.0,
                "time": rfc3339(e.at),
                "folded": folded,
                "upstream": e.upstream,
                "detail": e.detail,
            }),
            NotifyFormat::Slack => json!({"text": origin.summary(e, folded)}),
        }
    }
}
