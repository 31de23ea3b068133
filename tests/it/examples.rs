//! The examples are custom binaries built on `sitio::main`: each must behave
//! exactly like the stock binary (settings, `--help`, logging, exit codes,
//! built-ins) plus its decorator, against a real service process.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::common::*;

/// An example binary, built now: `cargo test` builds the examples, but
/// `cargo test --test it` does not, and a stale one would be tested.
pub(crate) fn example(name: &str) -> PathBuf {
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .status()
        .unwrap();
    assert!(built.success(), "cargo build --example {name}");
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(path.exists(), "{} (built by cargo test)", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_binary_behaves_like_the_stock_one_plus_its_decorator() {
    let bin = example("override_404");
    let help = Command::new(&bin).arg("--help").output().await.unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "--help is not an error: {help:?}");
    for var in [
        "PORT",
        "SITIO_ERROR_PAGE_5XX",
        "SITIO_ACCESS_LOG",
        "SITIO_WORKERS",
        "SITIO_OPAQUE",
    ] {
        assert!(
            text.contains(&format!("env: {var}=")),
            "{var} in --help:\n{text}"
        );
    }
    let version = Command::new(&bin).arg("--version").output().await.unwrap();
    assert!(
        version.status.success() && String::from_utf8_lossy(&version.stdout).starts_with("sitio ")
    );
    let bad = Command::new(&bin)
        .env("SITIO_HEADER_TIMEOUT", "soon")
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SITIO_HEADER_TIMEOUT"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("here.txt"), "here\n").unwrap();
    let service = PythonServer::start(dir.path(), &[]).await;
    let page = dir.path().join("5xx.html");
    std::fs::write(&page, "<h1>down</h1>").unwrap();
    let page = page.to_str().unwrap().to_owned();
    let (mut child, port, _, logged) = start_program(
        &bin,
        service.port,
        &[("SITIO_WORKERS", "1"), ("SITIO_ERROR_PAGE_5XX", &page)],
    )
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let nope = raw_request(addr, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(nope.status, 404);
    assert!(String::from_utf8_lossy(&nope.body).contains("Look Somewhere Else"));
    let here = raw_request(addr, b"GET /here.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!((here.status, here.body.as_slice()), (200, &b"here\n"[..]));
    drop(service);
    let down = raw_request(addr, b"GET /here.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(down.status, 502);
    assert_eq!(down.body, b"<h1>down</h1>", "SITIO_ERROR_PAGE_5XX applies");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = logged.lock().unwrap().clone();
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "sitio::access")
        .collect();
    assert_eq!(
        access.len(),
        3,
        "the access log is on, as in the stock binary: {lines:?}"
    );
    child.kill().await.unwrap();
}
