//! Notifications over https (Slack's incoming webhooks are https only): the
//! stock binary posts to a real TLS receiver whose certificate a test CA
//! signed (`SITIO_CA_FILE`); without that CA the certificate is refused and
//! logged; an unreadable CA file stops startup with exit code 2.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::*;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA and a certificate for localhost/127.0.0.1 signed by it, in `dir`.
pub(crate) fn test_pki(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sitio test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "hook.key",
                "-out",
                "hook.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "hook.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "hook.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_notifications_reach_an_https_webhook_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    test_pki(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/backends/https_hook.py");
    let mut hook = Command::new("python3")
        .arg("-u")
        .arg(script)
        .arg(dir.path().join("hook.pem"))
        .arg(dir.path().join("hook.key"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hook.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let hook_port: u16 = first.strip_prefix("PORT ").unwrap().parse().unwrap();
    let url = format!("https://localhost:{hook_port}/hook");
    let ca = dir.path().join("ca.pem");
    let service = Steerable::start(0).await;
    service.set_mode(500).await;

    let (mut child, port, _, _) = start_binary(
        service.port,
        &[
            ("SITIO_NOTIFY_URL", &url),
            ("SITIO_CA_FILE", ca.to_str().unwrap()),
        ],
    )
    .await;
    let sitio = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let res = raw_request(sitio, b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(res.status, 500);
    let event = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the event arrives over https")
        .unwrap()
        .unwrap();
    let event: serde_json::Value =
        serde_json::from_str(event.strip_prefix("EVENT ").unwrap()).unwrap();
    assert_eq!(
        (event["event"].as_str(), event["status"].as_u64()),
        (Some("service_error"), Some(500))
    );
    child.kill().await.unwrap();

    // The same receiver, but sitio does not know its CA: refused, and said why.
    let (mut child, port, _, logged) =
        start_binary(service.port, &[("SITIO_NOTIFY_URL", &url)]).await;
    let sitio = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    raw_request(sitio, b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let refused = loop {
        let found = logged.lock().unwrap().iter().find_map(|l| {
            (l["message"] == "notification not delivered").then(|| l["error"].to_string())
        });
        if let Some(error) = found {
            break error;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refusal logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused.to_ascii_lowercase().contains("certificate"),
        "{refused}"
    );
    let none = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await;
    assert!(none.is_err(), "nothing reached the receiver: {none:?}");
    child.kill().await.unwrap();

    let bad = Command::new(SITIO)
        .env_clear()
        .env("SITIO_CA_FILE", dir.path().join("missing.pem"))
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SITIO_CA_FILE"));
}
