//! `sitio injector`, the admission webhook, over HTTPS with a test CA and
//! real `AdmissionReview` documents: a pod that asks, a namespace that opted
//! in, a numeric port (patched, with a warning), opted out, already injected,
//! a pod it cannot inject (allowed, with a warning), malformed reviews (400,
//! and it keeps serving), the certificate reloaded when its files change,
//! and `deploy/injector/` valid against the schemas.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::common::{curl, start_subcommand};
use crate::https_hooks::test_pki;
use crate::inject::validate;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn review(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "a1b2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": "shop", "object": pod},
    })
}

fn pod(annotation: Option<&str>, port: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [port]}]},
    });
    if let Some(a) = annotation {
        p["metadata"]["annotations"] = json!({"sitio.io/inject": a});
    }
    p
}

struct Injector {
    port: u16,
    _child: Child,
}

async fn start(dir: &Path) -> Injector {
    let (cert, key) = (dir.join("hook.pem"), dir.join("hook.key"));
    let args = [
        "injector",
        "--listen",
        "127.0.0.1:0",
        "--image",
        "reg.example/sitio:1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let (child, port) = start_subcommand(&args, "sitio injector is ready").await;
    Injector {
        port,
        _child: child,
    }
}

/// POSTs `body` to `path`: (HTTP status, body).
async fn post(dir: &Path, port: u16, path: &str, body: &str) -> (u16, String) {
    let ca = dir.join("ca.pem");
    let url = format!("https://localhost:{port}{path}");
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        &url,
    ])
    .await;
    assert!(ok, "curl {url}");
    let out = String::from_utf8(out).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The review's answer: (patch ops, warnings).
async fn mutate(dir: &Path, port: u16, path: &str, review: &Value) -> (Option<Value>, Vec<String>) {
    let (status, body) = post(dir, port, path, &review.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], "a1b2");
    assert_eq!(response["allowed"], true, "never blocks a pod");
    let patch = response["patch"].as_str().map(|p| {
        let json = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        serde_json::from_slice(&json).unwrap()
    });
    let warnings = response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (patch, warnings)
}

/// `pod` with the webhook's two operations applied.
fn patched(mut pod: Value, ops: &Value) -> Value {
    for op in ops.as_array().unwrap() {
        match (op["op"].as_str(), op["path"].as_str()) {
            (Some("replace"), Some("/spec")) => pod["spec"] = op["value"].clone(),
            (Some("add"), Some("/metadata/annotations")) => {
                pod["metadata"]["annotations"] = op["value"].clone()
            }
            other => panic!("unexpected operation {other:?}"),
        }
    }
    pod
}

fn fingerprint(port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_injects_pods_over_https_and_never_blocks_one() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    test_pki(dir);
    let injector = start(dir).await;
    let port = injector.port;

    // A pod that asks: the sidecar, the port swap, valid for 1.29 to 1.33.
    let asking = pod(
        Some("enabled"),
        json!({"name": "http", "containerPort": 8000}),
    );
    let (ops, warnings) = mutate(dir, port, "/mutate", &review(asking.clone())).await;
    let injected = patched(asking, &ops.expect("a patch"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let sidecar = &injected["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "sitio");
    assert_eq!(sidecar["image"], "reg.example/sitio:1");
    assert_eq!(sidecar["ports"][0]["name"], "http");
    assert_eq!(
        injected["spec"]["containers"][0]["ports"][0]["name"],
        "http-app"
    );
    validate(&serde_json::to_string(&injected).unwrap());
    // Already injected: left alone.
    let (ops, _) = mutate(dir, port, "/mutate", &review(injected)).await;
    assert!(ops.is_none());

    // Without the annotation: only where the namespace opted in.
    let plain = pod(None, json!({"name": "http", "containerPort": 8000}));
    assert!(
        mutate(dir, port, "/mutate", &review(plain.clone()))
            .await
            .0
            .is_none()
    );
    assert!(
        mutate(dir, port, "/mutate-namespace", &review(plain))
            .await
            .0
            .is_some()
    );
    let opted_out = pod(
        Some("disabled"),
        json!({"name": "http", "containerPort": 8000}),
    );
    assert!(
        mutate(dir, port, "/mutate-namespace", &review(opted_out))
            .await
            .0
            .is_none()
    );

    // A numeric port: injected, with a warning for the Service.
    let numeric = pod(Some("enabled"), json!({"containerPort": 8000}));
    let (ops, warnings) = mutate(dir, port, "/mutate", &review(numeric)).await;
    assert!(ops.is_some());
    assert!(
        warnings.iter().any(|w| w.contains("targetPort")),
        "{warnings:?}"
    );
    // Nothing to swap: allowed as it is, and said why.
    let mut portless = pod(Some("enabled"), json!({"containerPort": 1}));
    portless["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let (ops, warnings) = mutate(dir, port, "/mutate", &review(portless)).await;
    assert!(ops.is_none());
    assert!(
        warnings.iter().any(|w| w.contains("not injected")),
        "{warnings:?}"
    );

    // Malformed reviews get 400, and the webhook keeps serving.
    assert_eq!(post(dir, port, "/mutate", "{not json").await.0, 400);
    assert_eq!(
        post(dir, port, "/mutate", "{\"kind\": \"Pod\"}").await.0,
        400
    );
    let (ok, health) = curl(&[
        "--cacert",
        dir.join("ca.pem").to_str().unwrap(),
        &format!("https://localhost:{port}/healthz"),
    ])
    .await;
    assert!(ok && health == b"ok\n");

    // A client that never handshakes is dropped, and others are served meanwhile.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert_eq!(post(dir, port, "/mutate", "{}").await.0, 400);
    assert!(crate::common::closed_within(&mut idle, Duration::from_secs(15)).await);

    // A renewed certificate is served without a restart.
    let before = fingerprint(port);
    assert!(before.contains("Fingerprint"), "{before}");
    let renewed = tempfile::tempdir().unwrap();
    test_pki(renewed.path());
    // Signed by another test CA: only the served certificate matters here.
    std::fs::copy(renewed.path().join("hook.key"), dir.join("hook.key.new")).unwrap();
    std::fs::copy(renewed.path().join("hook.pem"), dir.join("hook.pem.new")).unwrap();
    std::fs::rename(dir.join("hook.key.new"), dir.join("hook.key")).unwrap();
    std::fs::rename(dir.join("hook.pem.new"), dir.join("hook.pem")).unwrap();
    let started = Instant::now();
    while fingerprint(port) == before {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the certificate was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn the_injector_manifests_validate() {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/deploy/injector")])
        .output()
        .expect("kubectl (the README's test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "failurePolicy: Ignore",
        "/mutate-namespace",
        "sitio.io/inject: disabled",
    ] {
        assert!(rendered.contains(needle), "{needle}");
    }
    validate(&rendered);
}
