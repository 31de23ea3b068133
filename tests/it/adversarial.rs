//! Adversarial suites in their short CI form: slow clients (slowhttptest) and
//! a service that crashes and comes back under load. Longer runs: `stress/`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::process::Command;

use crate::common::backend::Backend;
use crate::common::*;

/// A well-behaved client: sequential requests for `how_long`; returns
/// (requests, failures, p99 latency).
async fn normal_client(addr: std::net::SocketAddr, how_long: Duration) -> (usize, usize, Duration) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    let started = Instant::now();
    while started.elapsed() < how_long {
        let t = Instant::now();
        let ok = tokio::time::timeout(
            Duration::from_secs(5),
            raw_request(addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
        .await
        .ok()
        .flatten()
        .is_some_and(|r| r.status == 200);
        failures += usize::from(!ok);
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    (latencies.len(), failures, p99)
}

async fn open_connections(sitio: &Sitio) -> u64 {
    let res = raw_request(sitio.admin, b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    stats["connections_open"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hurt_normal_ones_and_are_cut_off() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.header_timeout = Duration::from_secs(2);
    config.body_timeout = Duration::from_secs(2);
    config.send_timeout = Duration::from_secs(2);
    let sitio = Sitio::start(config, Decorators::none()).await;
    let (n, failed, base_p99) = normal_client(sitio.addr, Duration::from_secs(2)).await;
    assert_eq!(failed, 0);
    assert!(n > 20);

    let url = format!("http://{}", sitio.addr);
    for (mode, extra) in [
        ("-H", vec!["-u".to_string(), format!("{url}/status/200")]),
        (
            "-B",
            vec![
                "-u".to_string(),
                format!("{url}/count"),
                "-s".into(),
                "65536".into(),
            ],
        ),
        (
            "-X",
            vec![
                "-u".to_string(),
                format!("{url}/bytes/2097152"),
                "-k".into(),
                "2".into(),
                "-n".into(),
                "1".into(),
                "-w".into(),
                "10".into(),
                "-y".into(),
                "20".into(),
                "-z".into(),
                "32".into(),
            ],
        ),
    ] {
        let mut attack = Command::new("slowhttptest")
            .args([
                mode, "-c", "200", "-r", "50", "-i", "1", "-l", "7", "-p", "3",
            ])
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("slowhttptest is installed (the README's test command installs it)");
        tokio::time::sleep(Duration::from_secs(2)).await; // the attack ramps up
        let (n, failed, p99) = normal_client(sitio.addr, Duration::from_secs(4)).await;
        assert_eq!(
            failed, 0,
            "{mode}: {failed} of {n} normal requests failed under attack"
        );
        // Twice the unattacked p99, with a 5 ms floor for a noisy shared machine.
        let limit = 2 * base_p99.max(Duration::from_millis(5));
        eprintln!("{mode}: p99 {p99:?} under attack vs {base_p99:?} without ({n} requests)");
        assert!(
            p99 <= limit,
            "{mode}: p99 {p99:?} under attack vs {base_p99:?} without"
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), attack.wait()).await;
        let _ = attack.kill().await;
        // The attackers' connections are freed by sitio's timeouts.
        let started = Instant::now();
        while open_connections(&sitio).await > 1 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{mode}: connections left open"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    sitio.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_crash_under_load_fails_only_the_outage_and_recovers_at_once() {
    let mut service = Steerable::start(0).await;
    let port = service.port;
    // The binary, so its own descriptors and memory can be watched.
    let (child, sitio_port, _, _) = start_binary(port, &[("SITIO_ACCESS_LOG", "off")]).await;
    let pid = child.id().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], sitio_port));
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };

    // Warm up, then note the baseline.
    normal_client(addr, Duration::from_millis(500)).await;
    let (fds_before, rss_before) = (fds(), rss());

    let load = {
        tokio::spawn(async move {
            let mut log = Vec::new(); // (time, ok, latency)
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                let t = Instant::now();
                let res = raw_request(addr, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
                log.push((t, res.map(|r| r.status), t.elapsed()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let down_at = Instant::now();
    service.kill().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _back = Steerable::start(port).await;
    let up_at = Instant::now();
    let log = load.await.unwrap();

    let mut failures_outside = 0;
    for (t, status, latency) in &log {
        let during = *t >= down_at && *t < up_at;
        match status {
            Some(200) => {}
            Some(502) if during => assert!(
                *latency < Duration::from_millis(500),
                "fast 502, not a hang"
            ),
            other => {
                // Requests started within a second of the return may still be failing.
                if !(during || (*t >= up_at && *t < up_at + Duration::from_secs(1))) {
                    failures_outside += 1;
                    eprintln!("unexpected {other:?} at {:?}", t.duration_since(down_at));
                }
            }
        }
    }
    assert_eq!(failures_outside, 0);
    let recovered = log
        .iter()
        .find(|(t, status, _)| *t >= up_at && *status == Some(200))
        .map(|(t, _, _)| t.duration_since(up_at))
        .expect("requests succeed again");
    assert!(
        recovered < Duration::from_secs(1),
        "recovered after {recovered:?}"
    );
    assert!(
        log.iter()
            .any(|(t, s, _)| *t >= down_at && *t < up_at && *s == Some(502)),
        "the outage was seen"
    );

    // Afterwards: no descriptors or memory left behind by the outage.
    normal_client(addr, Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_after, rss_after) = (fds(), rss());
    assert!(
        fds_after <= fds_before + 4,
        "file descriptors grew: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 4096,
        "memory grew: {rss_before} KiB -> {rss_after} KiB"
    );
    drop(child);
}
