//! `sitio mothership` over a real Prometheus scraping three live sitio
//! instances: `/fleet.json` agrees with each instance's own `/stats`, the
//! failing route leads the worst routes, the page renders every instance in
//! Chromium, and a Prometheus that is gone gives a clear 503.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sitio::Decorators;
use tokio::process::Child;

use crate::common::backend::Backend;
use crate::common::browser::Browser;
use crate::common::*;

async fn get(sitio: &Sitio, path: &str, times: usize) {
    for _ in 0..times {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        raw_request(sitio.addr, raw.as_bytes()).await.unwrap();
    }
}

async fn start_mothership(prometheus: &str) -> (Child, u16) {
    let args = ["mothership", "--port", "0", "--prometheus", prometheus];
    start_subcommand(&args, "sitio mothership is ready").await
}

async fn fleet(port: u16) -> (u16, Value) {
    answer(port, "/fleet.json").await
}

async fn answer(port: u16, path: &str) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let (_, out) = curl(&["-w", "\n%{http_code}", &url]).await;
    let out = String::from_utf8(out).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_adds_up_to_each_instances_own_figures() {
    let backend = Backend::start().await;
    let mut fleet_members = Vec::new();
    for _ in 0..3 {
        fleet_members.push(Sitio::start(config_for(backend.port()), Decorators::none()).await);
    }
    // One request per route first: a rate needs the series before the traffic.
    get(&fleet_members[0], "/status/200", 1).await;
    get(&fleet_members[0], "/status/503", 1).await;
    get(&fleet_members[1], "/photos/a.png", 1).await;
    get(&fleet_members[2], "/status/200", 1).await;
    let admins: Vec<SocketAddr> = fleet_members.iter().map(|s| s.admin).collect();
    let prometheus = Prometheus::scrape_all(&admins);
    prometheus
        .wait_for("count(sitio_requests_total)", |r| {
            r[0]["value"][1].as_str() == Some("4")
        })
        .await;
    // Traffic once Prometheus watches (rates need it), failures on one
    // instance's route only.
    get(&fleet_members[0], "/status/200", 20).await;
    get(&fleet_members[0], "/status/503", 10).await;
    get(&fleet_members[1], "/photos/a.png", 15).await;
    get(&fleet_members[2], "/status/200", 5).await;
    // Scraped after the traffic, by every instance.
    prometheus
        .wait_for("sum(sitio_requests_total)", |r| {
            r[0]["value"][1].as_str() == Some("54")
        })
        .await;
    let url = format!("http://127.0.0.1:{}", prometheus.port);
    let (mut mothership, port) = start_mothership(&url).await;
    let (status, doc) = fleet(port).await;
    assert_eq!(status, 200, "{doc}");
    let instances = doc["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{doc}");
    for member in &fleet_members {
        let own = stats_of(member).await;
        let name = member.admin.to_string();
        let seen = instances
            .iter()
            .find(|i| i["instance"] == name.as_str())
            .unwrap();
        assert!(seen["memory_bytes"].as_f64().unwrap() > 1e6, "{seen}");
        assert_eq!(seen["in_flight"].as_f64(), Some(0.0), "{seen}");
        for e in own["endpoints"].as_array().unwrap() {
            let route = seen["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["method"] == e["method"] && r["route"] == e["route"])
                .unwrap_or_else(|| panic!("{e} not in {seen}"));
            assert_eq!(route["hits"].as_f64(), e["hits"].as_f64(), "{route} vs {e}");
        }
    }
    let worst = &doc["worst_routes"][0];
    assert_eq!(worst["instance"], fleet_members[0].admin.to_string());
    assert_eq!(worst["route"], "/status/{id}");
    assert!(worst["error_rate"].as_f64().unwrap() > 0.0, "{worst}");
    assert_eq!(doc["queries"].as_array().unwrap().len(), 9);

    // No recording rules in this Prometheus: the workload view asks the
    // same expressions directly, and says so.
    let (status, workloads) = answer(port, "/workloads.json").await;
    assert_eq!(status, 200, "{workloads}");
    assert_eq!(
        workloads["source"],
        "raw series (recording rules not loaded)"
    );
    let all = &workloads["workloads"][0];
    assert_eq!(all["pods"].as_f64(), Some(3.0), "{workloads}");

    // The page shows every instance and its routes.
    let page = format!("http://127.0.0.1:{port}/");
    let rows = tokio::task::spawn_blocking(move || {
        let mut b = Browser::open(&page, 1280, 900);
        b.wait_for(
            "document.body.dataset.instances === '3'",
            Duration::from_secs(20),
        );
        b.screenshot(&std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mothership.png"));
        b.eval("document.querySelectorAll('section[data-instance] tr[data-route]').length")
    })
    .await
    .unwrap();
    assert_eq!(rows.as_u64(), Some(3), "one route per instance");

    // Prometheus gone: a clear 503, not a hang or a crash.
    let mut prometheus = prometheus;
    prometheus.stop().await;
    let started = Instant::now();
    let (status, doc) = fleet(port).await;
    assert_eq!(status, 503, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("unreachable"),
        "{doc}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // And back: the mothership recovers on its own.
    prometheus.start();
    let started = Instant::now();
    while fleet(port).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    mothership.kill().await.unwrap();
    for member in fleet_members {
        member.stop().await;
    }
}

/// A fleet as Kubernetes discovery labels it (namespace, workload, pod),
/// with the shipped recording rules loaded: the workload view reads them and
/// adds up its pods, picking a workload narrows the pods view to it (in the
/// JSON and on the page), and a hostile workload name narrows to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_view_reads_the_recording_rules_and_drills_down() {
    let backend = Backend::start().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Sitio::start(config_for(backend.port()), Decorators::none()).await);
    }
    // One request per series first: a rate needs the series before the traffic.
    for m in &members {
        get(m, "/status/200", 1).await;
    }
    get(&members[0], "/status/503", 1).await;
    let labels: [&[(&str, &str)]; 3] = [
        &[("namespace", "shop"), ("workload", "web"), ("pod", "web-1")],
        &[("namespace", "shop"), ("workload", "web"), ("pod", "web-2")],
        &[("namespace", "shop"), ("workload", "api"), ("pod", "api-1")],
    ];
    let targets: Vec<(SocketAddr, &[(&str, &str)])> = members
        .iter()
        .zip(labels)
        .map(|(m, l)| (m.admin, l))
        .collect();
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/mothership/recording-rules.yaml"
    ))
    .unwrap()
    .replace("interval: 30s", "interval: 1s");
    let prometheus = Prometheus::scrape_labelled(&targets, Some(&rules));
    // Every pod scraped once, not just one per workload: the errors below
    // must come after member 0's first sample, or its rate stays 0 (a
    // fresh-clone CI run lost that race once).
    prometheus
        .wait_for("workload:sitio_pods:count", |r| {
            let pods = r.as_array().map_or(0.0, |workloads| {
                workloads
                    .iter()
                    .filter_map(|w| w["value"][1].as_str()?.parse::<f64>().ok())
                    .sum()
            });
            r.as_array().map(Vec::len) == Some(2) && pods == 3.0
        })
        .await;
    get(&members[0], "/status/503", 10).await;
    get(&members[1], "/status/200", 10).await;
    get(&members[2], "/status/200", 10).await;
    prometheus
        .wait_for(
            "workload_route_upstream:sitio_request_errors:rate1m > 0",
            |r| r.as_array().map(Vec::len) == Some(1),
        )
        .await;

    let url = format!("http://127.0.0.1:{}", prometheus.port);
    let (mut mothership, port) = start_mothership(&url).await;
    let (status, doc) = answer(port, "/workloads.json").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["source"], "recording rules", "{doc}");
    let workloads = doc["workloads"].as_array().unwrap();
    let web = workloads.iter().find(|w| w["workload"] == "web").unwrap();
    let api = workloads.iter().find(|w| w["workload"] == "api").unwrap();
    assert_eq!(
        (web["pods"].as_f64(), api["pods"].as_f64()),
        (Some(2.0), Some(1.0)),
        "{doc}"
    );
    assert_eq!(web["namespace"], "shop");
    assert!(web["memory_bytes"].as_f64().unwrap() > 2e6, "{web}");
    // web's failures are on its /status route; api has none.
    assert!(
        web["routes"][0]["error_rate"].as_f64().unwrap() > 0.0,
        "{web}"
    );
    assert!(
        api["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["error_rate"] == 0.0),
        "{api}"
    );

    let (status, web_pods) = answer(port, "/fleet.json?namespace=shop&workload=web").await;
    assert_eq!(status, 200, "{web_pods}");
    let pods: BTreeSet<&str> = web_pods["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pod"].as_str().unwrap())
        .collect();
    assert_eq!(pods, BTreeSet::from(["web-1", "web-2"]));
    let hostile = "/fleet.json?workload=x%22%7D%20or%20sitio_build_info%7Bx%3D%22";
    let (status, nothing) = answer(port, hostile).await;
    assert_eq!(status, 200, "{nothing}");
    assert_eq!(
        nothing["instances"].as_array().map(Vec::len),
        Some(0),
        "{nothing}"
    );
    assert_eq!(answer(port, "/fleet.json?instance=x").await.0, 400);

    // The page: workloads first, then picking one shows its two pods.
    let page = format!("http://127.0.0.1:{port}/");
    let (listed, picked) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::open(&page, 1280, 900);
        b.wait_for("document.body.dataset.instances === '3'", Duration::from_secs(20));
        let listed = b.eval("document.querySelectorAll('#workloads tr[data-workload]').length");
        b.eval("location.hash = 'namespace=shop&workload=web'");
        b.wait_for("document.body.dataset.instances === '2'", Duration::from_secs(20));
        b.screenshot(&std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mothership-workload.png"));
        let picked = b.eval("[...document.querySelectorAll('section[data-instance] h2 a:first-child')].map(a => a.textContent).sort().join(',')");
        (listed, picked)
    })
    .await
    .unwrap();
    assert!(listed.as_u64().unwrap() >= 2, "{listed}");
    assert_eq!(picked.as_str(), Some("web-1,web-2"));
    mothership.kill().await.unwrap();
    for m in members {
        m.stop().await;
    }
}

async fn stats_of(sitio: &Sitio) -> Value {
    let raw = raw_request(sitio.admin, b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    serde_json::from_slice(&raw.body).unwrap()
}

/// The shipped recording rules compute what they say (`promtool test rules`),
/// the scrape job for sitio pods is a valid Prometheus configuration, and the
/// mothership's manifests match the Kubernetes schemas.
#[test]
fn the_mothership_manifests_rules_and_scrape_job_check_out() {
    const ROOT: &str = env!("CARGO_MANIFEST_DIR");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd
            .output()
            .expect("promtool and kubectl (the README's test command installs them)");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cmd:?}: {text}");
        text
    };
    let rules = format!("{ROOT}/deploy/mothership/recording-rules.yaml");
    run(std::process::Command::new("promtool").args(["check", "rules", &rules]));
    let text = run(std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(format!("{ROOT}/tests/deploy/fleet-rules-test.yaml")));
    assert!(text.contains("SUCCESS"), "{text}");
    // Debian's Prometheus is built without Kubernetes discovery: the job is
    // checked with a static target in its place (the relabelling, regexes
    // included, is what can go wrong).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let job = std::fs::read_to_string(format!("{ROOT}/deploy/mothership/scrape-sitio-pods.yaml"))
        .unwrap();
    let discovery = "kubernetes_sd_configs:\n      - role: pod";
    assert!(job.contains(discovery));
    let job = job.replace(
        discovery,
        "static_configs:\n      - targets: ['127.0.0.1:9901']",
    );
    std::fs::write(&config, job).unwrap();
    run(std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&config));
    let rendered = run(std::process::Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/deploy/mothership")]));
    assert!(rendered.contains("kind: Deployment") && rendered.contains("mothership"));
    crate::inject::validate(&rendered);
}
