//! Telemetry as an operator sees it: `/stats`, `/metrics` checked by promtool
//! and scraped by a real Prometheus, the dashboard in a real Chromium, the tap,
//! and the periodic summary.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sitio::Decorators;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::common::backend::Backend;
use crate::common::browser::Browser;
use crate::common::*;

async fn admin_get(sitio: &Sitio, path: &str) -> (u16, String) {
    let res = raw_request(
        sitio.admin,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    (res.status, String::from_utf8(res.body).unwrap())
}

async fn stats(sitio: &Sitio) -> Value {
    serde_json::from_str(&admin_get(sitio, "/stats").await.1).unwrap()
}

fn endpoint<'a>(stats: &'a Value, method: &str, route: &str) -> &'a Value {
    stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == method && e["route"] == route)
        .unwrap_or_else(|| panic!("no {method} {route} in {stats}"))
}

/// Sends a known mix of traffic; returns how many requests it made.
async fn traffic(sitio: &Sitio) -> u64 {
    let mut s = TcpStream::connect(sitio.addr).await.unwrap();
    let mut buf = Vec::new();
    let mut n = 0;
    for path in [
        "/status/200",
        "/status/201",
        "/status/200",
        "/status/503",
        "/status/404",
    ] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_response(&mut s, &mut buf, false).await.unwrap();
        n += 1;
    }
    let body = vec![b'x'; 1000];
    s.write_all(b"POST /count?token=abc HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&body).await.unwrap();
    read_response(&mut s, &mut buf, false).await.unwrap();
    s.write_all(b"GET /slow/300 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut s, &mut buf, false).await.unwrap();
    n + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_per_folded_route_on_keep_alive_connections() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let sent = traffic(&sitio).await;
    // Not HTTP: counted as a TLS tunnel.
    let mut raw = TcpStream::connect(sitio.addr).await.unwrap();
    raw.write_all(b"\x16\x03\x01 not http").await.unwrap();
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let s = stats(&sitio).await;
    assert_eq!(s["requests_total"], sent);
    // One keep-alive connection carried all requests: each still counted.
    let status = endpoint(&s, "GET", "/status/{id}");
    assert_eq!(status["hits"], 5);
    assert_eq!(status["status"]["200"], 2);
    assert_eq!(status["status"]["503"], 1);
    assert_eq!(status["errors"], 1);
    let count = endpoint(&s, "POST", "/count");
    assert_eq!(count["bytes_in"], 1000, "query dropped, body counted");
    assert_eq!(count["bytes_out"], 4);
    let slow = endpoint(&s, "GET", "/slow/{id}");
    let p50 = slow["latency_ms"]["p50"].as_f64().unwrap();
    assert!((295.0..2000.0).contains(&p50), "p50 {p50}");
    assert!(slow["ttfb_ms"]["p50"].as_f64().unwrap() >= 295.0);
    assert_eq!(slow["in_flight"], 0);
    assert_eq!(s["connections_total"]["http1"], 1);
    assert_eq!(s["connections_total"]["tls"], 1);
    assert_eq!(s["tunnels"]["tls"], 1);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_bounded_and_operator_patterns_apply() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.max_routes = 3;
    config.routes = "/status/*".into();
    let sitio = Sitio::start(config, Decorators::none()).await;
    for path in ["/status/200", "/a", "/b", "/c", "/d", "/e"] {
        raw_request(
            sitio.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    }
    let s = stats(&sitio).await;
    let routes: Vec<&str> = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert!(routes.contains(&"/status/*"));
    assert!(routes.contains(&"{other}"));
    assert_eq!(endpoint(&s, "GET", "{other}")["hits"], 3);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let sent = traffic(&sitio).await;
    let (code, metrics) = admin_get(&sitio, "/metrics").await;
    assert_eq!(code, 200);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (the README's test command installs prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .await
        .unwrap();
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // /metrics and /stats tell the same story.
    let s = stats(&sitio).await;
    assert_eq!(s["requests_total"], sent);
    let metric_total: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("sitio_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(metric_total, sent);
    for e in s["endpoints"].as_array().unwrap() {
        let count_line = format!(
            "sitio_request_duration_seconds_count{{method=\"{}\",route=\"{}\"}} {}",
            e["method"].as_str().unwrap(),
            e["route"].as_str().unwrap(),
            e["hits"]
        );
        assert!(metrics.contains(&count_line), "missing {count_line}");
    }
    for needle in [
        "sitio_requests_total{method=\"GET\",route=\"/status/{id}\",status=\"200\"} 2",
        "sitio_request_duration_seconds_count{method=\"GET\",route=\"/slow/{id}\"} 1",
        "sitio_connections_total{protocol=\"http1\"} 1",
        "sitio_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // A real Prometheus server scrapes sitio and answers a PromQL query.
    let prometheus = Prometheus::scrape(sitio.admin);
    prometheus
        .wait_for("sum(sitio_requests_total)", |r| {
            r[0]["value"][1].as_str() == Some(sent.to_string().as_str())
        })
        .await;
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_streams_exchanges_and_a_stalled_reader_slows_nothing() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    let mut tap = TcpStream::connect(sitio.admin).await.unwrap();
    tap.write_all(b"GET /tap HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    // A second reader that never reads.
    let mut stalled = TcpStream::connect(sitio.admin).await.unwrap();
    stalled
        .write_all(b"GET /tap?format=ndjson HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for path in ["/status/200", "/photos/a.png", "/status/500"] {
        raw_request(
            sitio.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    }
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while seen.matches("data: ").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(5), tap.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    let events: Vec<Value> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(events[0]["path"], "/status/200");
    assert_eq!(events[0]["route"], "/status/{id}");
    assert_eq!(events[1]["static"], true);
    assert_eq!(events[2]["status"], 500);

    // Traffic goes on at full speed while the stalled reader's buffers fill.
    let started = Instant::now();
    for _ in 0..300 {
        let res = raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(res.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let s = stats(&sitio).await;
    assert_eq!(s["tap"]["readers"], 2);
    drop(stalled);
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_can_be_switched_off() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.stats = false;
    let sitio = Sitio::start(config, Decorators::none()).await;
    raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let s = stats(&sitio).await;
    assert_eq!(s["stats_enabled"], false);
    assert_eq!(s["endpoints"].as_array().unwrap().len(), 0);
    let (_, metrics) = admin_get(&sitio, "/metrics").await;
    assert!(!metrics.contains("sitio_requests_total"));
    assert!(metrics.contains("sitio_connections_total{protocol=\"http1\"} 1"));
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_what_stats_report() {
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    traffic(&sitio).await;
    raw_request(sitio.addr, b"GET /slow/1100 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let url = format!("http://{}/", sitio.admin);
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let addr = sitio.addr;
    // Requests made while the page is open must show in its live feed.
    let during = tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
        for path in ["/status/202", "/status/202", "/site.css"] {
            raw_request(
                addr,
                format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        }
    });
    let shots_dir = shots.clone();
    let page = tokio::task::spawn_blocking(move || {
        let mut b = Browser::open(&url, 1280, 1100);
        b.wait_for(
            "document.querySelectorAll('#endpoints tr[data-key]').length >= 3",
            Duration::from_secs(20),
        );
        b.wait_for(
            "window.EventSource !== undefined && document.readyState === 'complete'",
            Duration::from_secs(5),
        );
        std::thread::sleep(Duration::from_millis(500)); // the tap stream is open
        tx.send(()).unwrap();
        b.wait_for(
            "document.querySelectorAll('#tap tbody tr').length >= 3",
            Duration::from_secs(20),
        );
        std::thread::sleep(Duration::from_millis(1500)); // one more /stats refresh
        let rows = b.eval(
            "JSON.stringify([...document.querySelectorAll('#endpoints tr[data-key]')].map(tr => ({
                key: tr.dataset.key,
                hits: Number(tr.querySelector('.hits').textContent),
                p99: Number(tr.querySelector('.p99').textContent),
                p99class: tr.querySelector('.p99').className,
            })))",
        );
        let feed = b.eval(
            "[...document.querySelectorAll('#tap tbody tr')].map(tr => tr.textContent).join('|')",
        );
        let statuses = b.eval("document.getElementById('statuses').textContent");
        // The status and host panels fill their row (no empty column), on a
        // laptop and on a wide screen: the gap between them and the row's
        // ends is only the grid's.
        let fills = "(() => { const m = document.querySelector('main').getBoundingClientRect();
            const s = document.getElementById('statuses').closest('section').getBoundingClientRect();
            const h = document.getElementById('cores').closest('section').getBoundingClientRect();
            return Math.abs(s.top - h.top) < 2 && s.left - m.left < 40 && m.right - h.right < 40; })()";
        let laptop_fills = b.eval(fills);
        b.screenshot(&shots_dir.join("dashboard-laptop.png"));
        b.viewport(1920, 1080, false);
        std::thread::sleep(Duration::from_millis(1300)); // a refresh redraws the chart
        let wide_fills = b.eval(fills);
        b.screenshot(&shots_dir.join("dashboard-wide.png"));
        b.viewport(390, 844, true);
        std::thread::sleep(Duration::from_millis(1300));
        // Nothing scrolls sideways, the page or the endpoints inside it, and
        // the chart's labels keep a readable size.
        let overflow = b.eval(
            "document.documentElement.scrollWidth > window.innerWidth + 1 ||
             [...document.querySelectorAll('.scroll')].some(d => d.scrollWidth > d.clientWidth + 1)",
        );
        let label_px = b.eval("Number(document.getElementById('chart').dataset.labelPx)");
        b.screenshot(&shots_dir.join("dashboard-phone.png"));
        (rows, feed, statuses, overflow, (laptop_fills, wide_fills, label_px))
    })
    .await
    .unwrap();
    during.await.unwrap();
    let (rows, feed, statuses, overflow, (laptop_fills, wide_fills, label_px)) = page;
    assert_eq!(
        laptop_fills,
        Value::Bool(true),
        "status and host fill their row at 1280 px"
    );
    assert_eq!(wide_fills, Value::Bool(true), "and at 1920 px");
    assert!(
        label_px.as_f64().unwrap() >= 12.0,
        "chart labels: {label_px}"
    );

    let s = stats(&sitio).await;
    let rows: Vec<Value> = serde_json::from_str(rows.as_str().unwrap()).unwrap();
    let shown: HashMap<String, &Value> = rows
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r))
        .collect();
    for e in s["endpoints"].as_array().unwrap() {
        let key = format!(
            "{} {}",
            e["method"].as_str().unwrap(),
            e["route"].as_str().unwrap()
        );
        let row = shown
            .get(&key)
            .unwrap_or_else(|| panic!("{key} not on the dashboard: {rows:?}"));
        assert_eq!(row["hits"], e["hits"], "{key}");
        let p99 = e["latency_ms"]["p99"].as_f64().unwrap();
        assert!(
            (row["p99"].as_f64().unwrap() - p99).abs() < 0.01,
            "{key}: {row} vs {p99}"
        );
    }
    let slow = shown["GET /slow/{id}"];
    assert!(
        slow["p99class"].as_str().unwrap().contains("slow"),
        "over 1 s is red: {slow}"
    );
    let fast = shown["POST /count"];
    assert!(
        fast["p99class"].as_str().unwrap().contains("fast"),
        "{fast}"
    );
    let feed = feed.as_str().unwrap();
    assert!(
        feed.contains("GET /status/202") && feed.contains("GET /site.css"),
        "{feed}"
    );
    assert!(feed.contains("static"), "{feed}");
    assert!(statuses.as_str().unwrap().contains("503: 1"), "{statuses}");
    assert_eq!(
        overflow,
        Value::Bool(false),
        "the page fits a phone's width"
    );
    for shot in [
        "dashboard-phone.png",
        "dashboard-laptop.png",
        "dashboard-wide.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot} kept under target/tmp/");
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_table_is_logged_periodically() {
    let backend = Backend::start().await;
    let (_child, port, _, logged) = start_binary(
        backend.port(),
        &[("SITIO_STATS_INTERVAL", "1s"), ("SITIO_ACCESS_LOG", "off")],
    )
    .await;
    for _ in 0..3 {
        let (ok, _) = curl(&[
            "-f",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/status/200"),
        ])
        .await;
        assert!(ok);
    }
    let started = Instant::now();
    loop {
        let table = logged
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["target"] == "sitio::stats")
            .filter_map(|v| v["message"].as_str().map(str::to_owned))
            .find(|m| m.contains("/status/{id}"));
        if let Some(table) = table {
            let row = table.lines().find(|l| l.contains("/status/{id}")).unwrap();
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols[0], "GET");
            assert_eq!(cols[2], "3", "hits column: {table}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no summary logged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
