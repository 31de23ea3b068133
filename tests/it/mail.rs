//! Crash mail (`SITIO_NOTIFY_SMTP`, the seed's `send_mail()`), from env vars
//! alone in the stock binary, received by a real SMTP server (aiosmtpd,
//! `tests/backends/smtp_sink.py`): the same events, grouping and recovery
//! messages as the webhook, with credentials, and over STARTTLS with a
//! private CA (refused, and counted, without it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::https_hooks::test_pki;

/// The next mail the sink receives after the `seen` first ones.
async fn mail_after(sink: &Script, seen: usize) -> Value {
    let started = Instant::now();
    loop {
        if let Some(line) = sink.printed("MAIL ").get(seen) {
            return serde_json::from_str(line.strip_prefix("MAIL ").unwrap()).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no mail #{seen}: {:?}",
            sink.lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(port: u16, path: &str) -> u16 {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    raw_request(SocketAddr::from(([127, 0, 0, 1], port)), raw.as_bytes())
        .await
        .map_or(0, |r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_mailed_grouped_and_its_recovery_too() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let sink = Script::start("smtp_sink.py", &["--auth", "sitio:s3cret"]).await;
    let mut service = Steerable::start(0).await;
    service.set_mode(500).await;
    let relay = format!("smtp://127.0.0.1:{}", sink.port);
    let (mut child, port, _, _) = start_binary(
        service.port,
        &[
            ("SITIO_NOTIFY_SMTP", &relay),
            (
                "SITIO_NOTIFY_MAIL_TO",
                "oncall@example.com, Ops <ops@example.com>",
            ),
            ("SITIO_NOTIFY_MAIL_FROM", "sitio <sitio@shop.example>"),
            ("SITIO_NOTIFY_SMTP_USER", "sitio"),
            ("SITIO_NOTIFY_SMTP_PASSWORD_FILE", secret.to_str().unwrap()),
            ("SITIO_NOTIFY_INTERVAL", "1s"),
            ("POD_NAME", "shop-7f9c"),
        ],
    )
    .await;

    for _ in 0..3 {
        assert_eq!(get(port, "/orders/42").await, 500);
    }
    let first = mail_after(&sink, 0).await;
    assert_eq!(first["from"], "sitio@shop.example");
    assert_eq!(
        first["to"],
        serde_json::json!(["oncall@example.com", "ops@example.com"])
    );
    assert_eq!(first["user"], "sitio");
    let subject = first["subject"].as_str().unwrap();
    assert!(
        subject.contains("shop-7f9c") && subject.contains("GET /orders/{id} answered 500"),
        "{subject}"
    );
    let body = first["body"].as_str().unwrap();
    assert!(body.contains("event:    service_error"), "{body}");
    // The two others were folded into one later message.
    let folded = mail_after(&sink, 1).await;
    let body = folded["body"].as_str().unwrap();
    assert!(body.contains("2 more like it"), "{body}");

    // An outage, then the recovery.
    service.kill().await;
    assert_eq!(get(port, "/orders/42").await, 502);
    let down = mail_after(&sink, 2).await;
    assert!(
        down["subject"]
            .as_str()
            .unwrap()
            .contains("failed: connect-refused"),
        "{down}"
    );
    let healthy = Steerable::start(service.port).await;
    assert_eq!(get(port, "/orders/42").await, 200);
    let up = mail_after(&sink, 3).await;
    assert!(
        up["subject"]
            .as_str()
            .unwrap()
            .contains("the service is reachable again"),
        "{up}"
    );
    drop(healthy);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_over_starttls_to_a_relay_of_a_private_ca_and_not_to_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    test_pki(dir.path());
    let (cert, key) = (dir.path().join("hook.pem"), dir.path().join("hook.key"));
    let sink = Script::start(
        "smtp_sink.py",
        &["--starttls", cert.to_str().unwrap(), key.to_str().unwrap()],
    )
    .await;
    let service = Steerable::start(0).await;
    service.set_mode(503).await;
    let relay = format!("smtp://localhost:{}?tls=starttls", sink.port);
    let ca = dir.path().join("ca.pem");
    let settings = [
        ("SITIO_NOTIFY_SMTP", relay.as_str()),
        ("SITIO_NOTIFY_MAIL_TO", "oncall@example.com"),
    ];
    let with_ca = [&settings[..], &[("SITIO_CA_FILE", ca.to_str().unwrap())]].concat();
    let (mut child, port, _, _) = start_binary(service.port, &with_ca).await;
    assert_eq!(get(port, "/pay").await, 503);
    let mail = mail_after(&sink, 0).await;
    assert_eq!(mail["tls"], true, "{mail}");
    assert!(mail["subject"].as_str().unwrap().contains("answered 503"));
    child.kill().await.unwrap();

    // Without the CA, the relay's certificate is refused: counted, logged, no mail.
    let (mut child, port, admin, logged) = start_binary(service.port, &settings).await;
    assert_eq!(get(port, "/pay").await, 503);
    let started = Instant::now();
    loop {
        let (_, metrics) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).await;
        let metrics = String::from_utf8(metrics).unwrap();
        if metrics.contains("sitio_notify_events_total{channel=\"mail\",result=\"failed\"} 1") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = logged
        .lock()
        .unwrap()
        .iter()
        .find(|l| l["message"] == "notification not delivered")
        .map(|l| l["error"].to_string())
        .unwrap_or_default();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert_eq!(sink.printed("MAIL ").len(), 1);
    child.kill().await.unwrap();
}
