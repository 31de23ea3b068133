//! The binary as an operator runs it: configuration errors, dual-stack
//! listening, the admin API, and draining on SIGTERM.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::backend::Backend;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_stops_startup_naming_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("PORT", "eighty", "PORT"),
        ("TARGET_PORT", "0", "TARGET_PORT"),
        ("TARGET_PORT", "70000", "TARGET_PORT"),
        ("SITIO_HEADER_TIMEOUT", "ten", "10s, 500ms"),
        ("SITIO_MAX_HEADER_BYTES", "100", "8192 to 1048576"),
        ("SITIO_LOG_FORMAT", "xml", "text, json"),
        ("SITIO_ACCESS_LOG", "maybe", "on or off"),
        ("SITIO_STATS", "sometimes", "on or off"),
        ("SITIO_ROUTES", "users/{id}", "must start with /"),
        ("SITIO_MAX_ROUTES", "0", "1 to 100000"),
        ("SITIO_STATS_INTERVAL", "often", "or off"),
        ("SITIO_UPSTREAM_TIMEOUT", "soon", "10s, 500ms"),
        ("SITIO_RETRIES", "twice", "on or off"),
        ("SITIO_BREAKER_FAILURES", "-1", "SITIO_BREAKER_FAILURES"),
        ("SITIO_NOTIFY_URL", "ftp://alerts/hook", "https://"),
        ("SITIO_CA_FILE", "/nonexistent/ca.pem", "PEM"),
        ("SITIO_RATE_LIMIT", "lots", "100/s"),
        ("SITIO_RATE_LIMIT_BURST", "0", "SITIO_RATE_LIMIT_BURST"),
        ("SITIO_TRUSTED_PROXIES", "10.0.0.0/99", "prefix length"),
        ("SITIO_NOTIFY_FORMAT", "email", "json, slack"),
        ("SITIO_NOTIFY_SMTP", "mail.local:25", "smtps://"),
        (
            "SITIO_NOTIFY_SMTP",
            "smtp://127.0.0.1:25",
            "SITIO_NOTIFY_MAIL_TO",
        ),
        ("SITIO_NOTIFY_MAIL_TO", "nobody", "mail address"),
        ("SITIO_NOTIFY_MAIL_FROM", "me", "mail address"),
        (
            "SITIO_NOTIFY_SMTP_USER",
            "sitio",
            "SITIO_NOTIFY_SMTP_PASSWORD",
        ),
        (
            "SITIO_NOTIFY_SMTP_PASSWORD_FILE",
            "/nonexistent/pw",
            "readable file",
        ),
        ("SITIO_AUTH_JWKS_URL", "certs.json", "https://"),
        (
            "SITIO_SPLIT",
            "canary=127.0.0.1:8088",
            "NAME=HOST:PORT@PERCENT%",
        ),
        ("SITIO_SPLIT", "a=h:1@60%,b=h:2@50%", "at most 100%"),
        ("SITIO_SPLIT_STICKY", "session", "off, cookie"),
        ("SITIO_SPLIT_HEADER", "maybe", "on or off"),
        ("SITIO_SPLIT_GUARD", "maybe", "on or off"),
        ("SITIO_SPLIT_GUARD_FACTOR", "0.5", "at least 1"),
        ("SITIO_SPLIT_GUARD_MIN", "0", "SITIO_SPLIT_GUARD_MIN"),
        ("SITIO_AUTH_ISSUER", "keycloak", "https://"),
        ("SITIO_AUTH_AUDIENCE", " , ", "audiences"),
        ("SITIO_AUTH_PUBLIC", "health", "/health,/static/*"),
        ("SITIO_AUTH_ROUTES", "account", "/health,/static/*"),
        ("SITIO_AUTH_FORWARD", "sub", "claim:Header"),
        ("SITIO_AUTH_LEEWAY", "some", "10s"),
        ("SITIO_AUTH_JWKS_REFRESH", "daily", "10s"),
        ("SITIO_FAULT_DELAY", "10%", "SHARE:DELAY"),
        ("SITIO_FAULT_ABORT", "5%:200", "400 to 599"),
        (
            "SITIO_ERROR_PAGE_404",
            "/nonexistent/404.html",
            "SITIO_ERROR_PAGE_404",
        ),
    ];
    for (var, value, expected) in cases {
        let run = Command::new(SITIO)
            .env_clear()
            .env("PORT", "0")
            .env("SITIO_ADMIN_PORT", "0")
            .env(var, value)
            .kill_on_drop(true)
            .output();
        // A value sitio accepted would start it: fail, do not hang.
        let out = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("{var}={value} was accepted: sitio started"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var),
            "{var}={value} must be named: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{var}={value} must say what is accepted: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_setting_with_its_variable() {
    let out = Command::new(SITIO).arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PORT",
        "TARGET_PORT",
        "SITIO_TARGET_HOST",
        "SITIO_ADMIN_PORT",
        "SITIO_ERROR_PAGE_404",
        "SITIO_ERROR_PAGE_5XX",
        "SITIO_DRAIN_SECONDS",
        "SITIO_LOG_FORMAT",
        "SITIO_HEADER_TIMEOUT",
        "SITIO_CONNECT_TIMEOUT",
        "SITIO_IDLE_TIMEOUT",
        "SITIO_MAX_CONNECTIONS",
        "SITIO_OPAQUE",
        "SITIO_REUSE_PORT",
        "SITIO_READY_REQUIRES_SERVICE",
        "SITIO_RATE_LIMIT",
        "SITIO_RATE_LIMIT_BURST",
        "SITIO_TRUSTED_PROXIES",
        "SITIO_CA_FILE",
        "SITIO_NOTIFY_SMTP",
        "SITIO_NOTIFY_MAIL_TO",
        "SITIO_NOTIFY_MAIL_FROM",
        "SITIO_NOTIFY_SMTP_USER",
        "SITIO_NOTIFY_SMTP_PASSWORD_FILE",
        "SITIO_SPLIT",
        "SITIO_SPLIT_STICKY",
        "SITIO_SPLIT_HEADER",
        "SITIO_SPLIT_GUARD",
        "SITIO_SPLIT_GUARD_FACTOR",
        "SITIO_SPLIT_GUARD_MIN",
        "SITIO_AUTH_JWKS_URL",
        "SITIO_AUTH_ISSUER",
        "SITIO_AUTH_AUDIENCE",
        "SITIO_AUTH_PUBLIC",
        "SITIO_AUTH_ROUTES",
        "SITIO_AUTH_FORWARD",
        "SITIO_AUTH_LEEWAY",
        "SITIO_AUTH_JWKS_REFRESH",
    ] {
        assert!(
            help.contains(&format!("env: {var}=")),
            "--help lacks {var}:\n{help}"
        );
    }
    assert!(
        !help.contains("[default: ]"),
        "no empty defaults shown:\n{help}"
    );
    assert!(
        help.contains("dashboard, /stats, /metrics"),
        "the admin port's routes:\n{help}"
    );
    assert!(out.status.success(), "--help is not an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_on_ipv4_and_ipv6_and_reports_health() {
    let backend = Backend::start().await;
    let (_child, port, admin, logged) = start_binary(backend.port(), &[]).await;
    let v4 = format!("http://127.0.0.1:{port}/status/200");
    let (ok, _) = curl(&["-f", "-o", "/dev/null", &v4]).await;
    assert!(ok, "IPv4");
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = format!("http://[::1]:{port}/status/200");
        let (ok, _) = curl(&["-f", "-o", "/dev/null", &v6]).await;
        assert!(ok, "IPv6");
    }
    let (ok, body) = curl(&["-f", &format!("http://127.0.0.1:{admin}/live")]).await;
    assert!(ok);
    assert_eq!(body, b"live\n");
    let (_, body) = curl(&[&format!("http://127.0.0.1:{admin}/ready")]).await;
    assert_eq!(body, b"ready\n");
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &format!("http://127.0.0.1:{admin}/ready"),
    ])
    .await;
    assert_eq!(code, b"405", "the admin API is read-only");

    // One JSON access line per request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logged = logged.lock().unwrap();
    let access: Vec<_> = logged
        .iter()
        .filter(|v| v["target"] == "sitio::access")
        .collect();
    assert!(access.len() >= 2, "{logged:?}");
    let line = access[0];
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/status/200");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_out"], 21);
    assert!(line["latency_us"].as_u64().unwrap() > 0);
}

/// `sitio health`, the image's HEALTHCHECK: asks the admin port of the
/// sitio named by SITIO_ADMIN_PORT, as the same environment would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_asks_the_running_sitio() {
    async fn health(admin: u16, args: &[&str]) -> (bool, String) {
        let out = Command::new(SITIO)
            .env_clear()
            .env("SITIO_ADMIN_PORT", admin.to_string())
            .arg("health")
            .args(args)
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
    let mut backend = Steerable::start(0).await;
    let env = [("SITIO_READY_REQUIRES_SERVICE", "on")];
    let (mut child, _port, admin, _) = start_binary(backend.port, &env).await;
    assert_eq!(health(admin, &[]).await, (true, String::new()));
    assert_eq!(
        health(admin, &["--path", "/ready"]).await,
        (true, String::new())
    );

    // The service gone: still live, not ready (once the 1 s probe saw it).
    backend.kill().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (ready, why) = loop {
        let answer = health(admin, &["--path", "/ready"]).await;
        if !answer.0 || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !ready && why.contains("GET /ready") && why.contains("503"),
        "{why}"
    );
    assert!(health(admin, &[]).await.0, "live while the service is down");

    // sitio gone: unhealthy, saying why.
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let (ok, why) = health(admin, &[]).await;
    assert!(!ok && why.contains(&format!("port {admin}")), "{why}");
    let out = Command::new(SITIO)
        .args(["health", "--path", "/stats"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "only /live and /ready are health paths"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_decorates_its_photo_library() {
    // Settings are taken after the subcommand too, as a newcomer types them.
    let mut child = Command::new(SITIO)
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (dashboard, base) = tokio::time::timeout(Duration::from_secs(10), async {
        let mut urls = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((what, url)) = line.trim().split_once(": ")
                && url.contains("http://")
            {
                urls.push((what.to_owned(), url.trim().to_owned()));
            }
            if line.starts_with("  through sitio:") {
                break;
            }
        }
        assert_eq!(
            urls[0].0, "live dashboard",
            "the dashboard comes first: {urls:?}"
        );
        let base = urls.last().unwrap().1.trim_end_matches('/').to_owned();
        (urls[0].1.clone(), base)
    })
    .await
    .unwrap();
    let (ok, page) = curl(&["-f", &dashboard]).await;
    assert!(
        ok && String::from_utf8_lossy(&page).contains("<html"),
        "{dashboard}"
    );
    let (ok, index) = curl(&["-f", &format!("{base}/")]).await;
    assert!(ok && String::from_utf8_lossy(&index).contains("Photo library"));
    let (_, photo) = curl(&[
        "-w",
        "%{http_code} %{content_type}",
        "-o",
        "/dev/null",
        &format!("{base}/photos/1.svg"),
    ])
    .await;
    assert_eq!(photo, b"200 image/svg+xml");
    let (_, broken) = curl(&["-w", "\n%{http_code}", &format!("{base}/photos/7.svg")]).await;
    let broken = String::from_utf8_lossy(&broken);
    assert!(
        broken.contains("Look Somewhere Else") && broken.ends_with("404"),
        "{broken}"
    );
    let mut failures = 0;
    for _ in 0..3 {
        let (_, flaky) = curl(&["-w", "\n%{http_code}", &format!("{base}/flaky")]).await;
        let flaky = String::from_utf8_lossy(&flaky);
        if flaky.ends_with("500") {
            failures += 1;
            assert!(flaky.contains("The service is having trouble"), "{flaky}");
        }
    }
    assert_eq!(failures, 1, "every third call fails, with sitio's page");
    let (_, json) = curl(&["-H", "Accept: application/json", &format!("{base}/nope")]).await;
    let problem: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(problem["status"], 404);

    // Auth on /account, with the demo's own identity provider.
    let (_, refused) = curl(&["-w", "\n%{http_code}", &format!("{base}/account")]).await;
    assert!(String::from_utf8_lossy(&refused).ends_with("401"));
    let (ok, token) = curl(&["-f", &format!("{base}/demo-idp/token")]).await;
    assert!(ok);
    let bearer = format!(
        "Authorization: Bearer {}",
        String::from_utf8(token).unwrap()
    );
    let (ok, hello) = curl(&["-f", "-H", &bearer, &format!("{base}/account")]).await;
    assert!(ok && String::from_utf8_lossy(&hello).contains("Hello ada"));

    // A canary serves a quarter of the photo API, compared per side.
    for _ in 0..40 {
        curl(&["-o", "/dev/null", &format!("{base}/api/photos")]).await;
    }
    let (_, stats) = curl(&[&format!("{}/stats", dashboard.trim_end_matches('/'))]).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    let api = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["route"] == "/api/photos")
        .unwrap();
    let (stable, canary) = (&api["upstreams"]["service"], &api["upstreams"]["canary"]);
    assert!(canary["hits"].as_u64() > Some(0), "{api}");
    assert_eq!(
        stable["hits"].as_u64().unwrap() + canary["hits"].as_u64().unwrap(),
        40
    );
    assert_eq!(stable["errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    drains_then_exits_zero("1").await;
    // With more workers than cores, clients spread across their sockets.
    drains_then_exits_zero("3").await;
}

async fn drains_then_exits_zero(workers: &str) {
    let backend = Backend::start().await;
    let env = [("SITIO_DRAIN_SECONDS", "10"), ("SITIO_WORKERS", workers)];
    let (mut child, port, admin, _) = start_binary(backend.port(), &env).await;
    let url = format!("http://127.0.0.1:{port}/slow/1500");
    let mut in_flight = Vec::new();
    for _ in 0..5 {
        let url = url.clone();
        in_flight.push(tokio::spawn(async move {
            curl(&["-f", "-w", "%{http_code}", "-o", "/dev/null", &url]).await
        }));
    }
    // An idle keep-alive connection: drain must close it, not wait for it.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut idle, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut idle, &mut buf, false)
            .await
            .unwrap()
            .status,
        200
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (_, ready) = curl(&[
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{admin}/ready"),
    ])
    .await;
    assert_eq!(ready, b"503", "/ready reports draining");
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)).await,
        "idle keep-alive closed on drain"
    );
    let (accepted, _) = curl(&[
        "-f",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/status/200"),
    ])
    .await;
    assert!(!accepted, "no new connections while draining");

    for req in in_flight {
        let (ok, code) = req.await.unwrap();
        assert!(
            ok && code == b"200",
            "in-flight request completed: {ok} {code:?}"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited once the last request was done"
    );
}

/// Names of `pid`'s threads that start with `prefix`, sorted.
fn threads(pid: u32, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    found.sort();
    found
}

/// Listening sockets on `port` (IPv4 and IPv6), from /proc/net.
fn listening_sockets(port: u16) -> usize {
    let local = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|table| {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            text.lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && format!("{} ", f[1]).ends_with(&local) && f[3] == "0A"
                })
                .count()
        })
        .sum()
}

/// `SITIO_WORKERS=3`: three listening sockets on the one port, two worker
/// threads beside the main one, each serving a share of the clients; a
/// second sitio still cannot take the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_serve_clients_each_on_a_socket_of_their_own() {
    let backend = Backend::start().await;
    let env = [("SITIO_WORKERS", "3"), ("SITIO_ACCESS_LOG", "off")];
    let (child, port, admin, _) = start_binary(backend.port(), &env).await;
    let pid = child.id().unwrap();
    assert_eq!(listening_sockets(port), 3, "one socket per worker");
    assert_eq!(
        threads(pid, "sitio-worker"),
        ["sitio-worker-1", "sitio-worker-2"]
    );

    // 48 keep-alive clients, 20 requests each, all at once.
    let clients: Vec<_> = (0..48)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                for _ in 0..20 {
                    let raw = b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n";
                    assert_eq!(send_on(&mut stream, &mut buf, raw).await.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    // The kernel spread them (by a hash of each client's port): every worker
    // took some. (A worker missing out entirely has odds of about 1e-8.)
    let (_, metrics) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    let mut total = 0;
    for worker in 0..3 {
        let line = format!("sitio_worker_connections_total{{worker=\"{worker}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
            .parse()
            .unwrap();
        assert!(n > 0, "worker {worker} took no client:\n{metrics}");
        total += n;
    }
    assert_eq!(total, 48);

    let second = Command::new(SITIO)
        .env_clear()
        .env("PORT", port.to_string())
        .env("SITIO_ADMIN_PORT", "0")
        .output()
        .await
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(2),
        "a second sitio joined the workers' port"
    );
}

/// Clients that keep their connection open and are in an exchange when the
/// drain begins: each gets its answer, then sitio closes the connection (an
/// HTTP/1 keep-alive one, and an h2c one with a GOAWAY) and exits, well
/// before the drain time runs out. Each connection is told of the drain
/// once, through the idle registry, not by watching a signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_busy_at_the_drain_answer_then_close() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.drain_seconds = 30;
    config.target_protocol = sitio::config::TargetProtocol::Http1;
    let sitio = Sitio::start(config, sitio::Decorators::none()).await;
    let addr = sitio.addr;

    let mut keep_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep_alive
        .write_all(b"GET /slow/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut h2 = crate::http2::h2_connect(addr).await;
    let h2_running = tokio::spawn(async move {
        (
            crate::http2::h2_send(&mut h2, addr, "/slow/1000").await.0,
            h2,
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let draining = Instant::now();
    let stopped = tokio::spawn(sitio.stop());
    let mut buf = Vec::new();
    let res = read_response(&mut keep_alive, &mut buf, false)
        .await
        .unwrap();
    assert_eq!(res.status, 200, "the HTTP/1 exchange finished");
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(3)).await,
        "the HTTP/1 connection was closed after its exchange"
    );
    let (status, h2) = h2_running.await.unwrap();
    assert_eq!(status, 200, "the h2c stream finished");
    tokio::time::timeout(Duration::from_secs(3), async {
        while !h2.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the h2c connection was closed after its stream");
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("sitio stopped once both were done")
        .unwrap();
    assert!(
        draining.elapsed() < Duration::from_secs(6),
        "{:?}",
        draining.elapsed()
    );
}
