//! Adversarial suites in their short CI form: slow clients (slowhttptest) and
//! a service that crashes and comes back under load. Longer runs: `stress/`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sitio::Decorators;
use tokio::process::Command;

use crate::SERIAL;
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
    let _serial = SERIAL.lock().await;
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
        // Slow bodies to an endpoint that answers at the head: the service
        // connections they hold must never be lent to the normal client.
        (
            "-B",
            vec![
                "-u".to_string(),
                format!("{url}/status/200"),
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
        // What this catches is a stall: a normal request held behind an
        // attacker (seconds; the timeouts here are 2 s). On a shared 2-core
        // machine running a debug build, tens of milliseconds are scheduler
        // noise (a CI run once saw 102 ms against 8.6 ms unattacked), so the
        // limit is 4x the baseline measured in this run with a 150 ms floor.
        // The strict 2x target runs on a release build in stress/slow_clients.sh.
        let limit = (4 * base_p99).max(Duration::from_millis(150));
        eprintln!(
            "figures: {mode}: p99 {p99:?} under attack vs {base_p99:?} without, {n} requests, {failed} failed"
        );
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
    let _serial = SERIAL.lock().await;
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
        let kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .nth(1);
        kib.unwrap().parse::<u64>().unwrap()
    };
    normal_client(addr, Duration::from_millis(500)).await;

    // Two outages; what the first leaves behind (pooled connections, timers)
    // is bounded, so a leak shows as growth from the first to the second.
    let mut after = Vec::new();
    for _round in 0..2 {
        // The load goes on until 1.5 s after the service is back, however
        // long its restart takes on a loaded machine.
        let (back, mut back_at) = tokio::sync::watch::channel(None::<Instant>);
        let load = tokio::spawn(async move {
            let mut log = Vec::new(); // (start, status, latency)
            let started = Instant::now();
            let go_on = |back: Option<Instant>| {
                back.is_none_or(|at| at.elapsed() < Duration::from_millis(1500))
                    && started.elapsed() < Duration::from_secs(30)
            };
            while go_on(*back_at.borrow_and_update()) {
                let t = Instant::now();
                let res = raw_request(addr, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
                log.push((t, res.map(|r| r.status), t.elapsed()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            log
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        let down_at = Instant::now();
        service.kill().await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        service = Steerable::start(port).await;
        let up_at = Instant::now();
        let _ = back.send(Some(up_at));
        let log = load.await.unwrap();

        for (t, status, latency) in &log {
            // In flight when the process died, or started before it was back.
            let during = *t + *latency >= down_at && *t < up_at;
            let settling = *t >= up_at && *t < up_at + Duration::from_secs(1);
            match status {
                Some(200) => {}
                Some(502) if during => {
                    assert!(
                        *latency < Duration::from_millis(500),
                        "a fast 502, not a hang"
                    )
                }
                other => assert!(during || settling, "{other:?} outside the outage"),
            }
        }
        let recovered = log
            .iter()
            .find(|(t, status, _)| *t >= up_at && *status == Some(200))
            .map(|(t, _, _)| t.duration_since(up_at))
            .expect("requests succeed again");
        let failed = log.iter().filter(|(_, s, _)| *s != Some(200)).count();
        eprintln!(
            "figures: crash: {} requests, {failed} failed (all in the outage), recovered {recovered:?} after the return",
            log.len()
        );
        assert!(
            recovered < Duration::from_secs(1),
            "recovered after {recovered:?}"
        );
        assert!(
            log.iter()
                .any(|(t, s, _)| *t >= down_at && *t < up_at && *s == Some(502)),
            "the outage was seen"
        );
        normal_client(addr, Duration::from_millis(500)).await;
        // Closing client connections linger briefly; a leak does not go away.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut settled = (usize::MAX, u64::MAX);
        for _ in 0..5 {
            settled = (settled.0.min(fds()), settled.1.min(rss()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        after.push(settled);
    }
    let ((fds1, rss1), (fds2, rss2)) = (after[0], after[1]);
    eprintln!(
        "figures: after outage 1: {fds1} fds, {rss1} KiB; after outage 2: {fds2} fds, {rss2} KiB"
    );
    // A leak of one descriptor per failed request would add ~160 here.
    if fds2 > fds1 + 10 {
        let sockets = std::process::Command::new("ss")
            .args(["-tanp"])
            .output()
            .unwrap();
        let mine: Vec<String> = String::from_utf8_lossy(&sockets.stdout)
            .lines()
            .filter(|l| l.contains(&format!("pid={pid},")))
            .map(str::to_owned)
            .collect();
        panic!(
            "file descriptors grew across outages: {fds1} -> {fds2}; sockets:\n{}",
            mine.join("\n")
        );
    }
    assert!(
        rss2 <= rss1 + 2048,
        "memory grew across outages: {rss1} KiB -> {rss2} KiB"
    );
    drop(child);
}

/// A network namespace of the test's own, removed on drop.
struct Netns(String);

impl Netns {
    fn create(name: String) -> Netns {
        let ok = |args: &[&str]| {
            let status = std::process::Command::new("ip").args(args).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "ip {args:?} failed (needs root and iproute2, as on the CI machine)"
            );
        };
        ok(&["netns", "add", &name]);
        let ns = Netns(name);
        ok(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]);
        // Connections already queued on a closing listener move to another
        // socket of the same SO_REUSEPORT group instead of being reset.
        ok(&[
            "netns",
            "exec",
            &ns.0,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.tcp_migrate_req=1",
        ]);
        ns
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program])
            .kill_on_drop(true);
        cmd
    }

    /// Starts sitio (or its demo backend) inside, waiting for its port.
    async fn sitio(&self, args: &[&str], env: &[(&str, &str)], port: u16) -> tokio::process::Child {
        let child = self
            .command(SITIO)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            let probe = self
                .command("python3")
                .args([
                    "-c",
                    &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1)"),
                ])
                .stderr(Stdio::null())
                .status()
                .await
                .unwrap();
            if probe.success() {
                return child;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nothing listens on {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_on_a_shared_port_fails_no_request() {
    let _serial = SERIAL.lock().await;
    // A namespace of its own: its ports are all free, and its sysctl is ours.
    let ns = Netns::create(format!("sitio-rr-{}", std::process::id()));
    let _service = ns
        .sitio(&["demo-backend"], &[("TARGET_PORT", "8087")], 8087)
        .await;
    let env = |admin: &'static str| {
        [
            ("PORT", "8080"),
            ("TARGET_PORT", "8087"),
            ("SITIO_ADMIN_PORT", admin),
            ("SITIO_ACCESS_LOG", "off"),
            // The hand-over is an explicit opt-in: without it the new sitio
            // would refuse the busy port.
            ("SITIO_REUSE_PORT", "on"),
        ]
    };
    let mut old = ns.sitio(&[], &env("9901"), 8080).await;
    let load = ns
        .command("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/backends/load.py"),
            "127.0.0.1",
            "8080",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _new = ns.sitio(&[], &env("9902"), 9902).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = old.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), old.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "the old sitio drained and exited");
    let out = load.wait_with_output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let (ok, failed): (u64, u64) = {
        let words: Vec<&str> = report.split_whitespace().collect();
        (words[1].parse().unwrap(), words[3].parse().unwrap())
    };
    eprintln!("figures: rolling restart: {}", report.trim());
    assert_eq!(
        failed,
        0,
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ok > 100, "the load ran: {report}");
}
