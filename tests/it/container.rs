//! The seed's pod, for real: sitio's FROM scratch image next to an "app"
//! container in the same network namespace (`--network container:app`, a pod's
//! shared localhost), driven from the host through published loopback ports.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Containers and the image, removed when the test ends, pass or fail.
struct Cleanup {
    containers: Vec<String>,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn name(what: &str) -> String {
    format!(
        "sitio-test-{}-{}-{what}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn published(container: &str, port: u16) -> u16 {
    let mapping = docker(&["port", container, &format!("{port}/tcp")]);
    let first = mapping
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap();
    first.rsplit(':').next().unwrap().parse().unwrap()
}

fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[split + 1..])
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

fn wait_ready(admin: u16) {
    wait_readiness(
        admin,
        200,
        Duration::from_secs(20),
        "sitio container never ready",
    );
}

/// Polls `/ready` until it answers `status`, failing with `what` after `within`.
fn wait_readiness(admin: u16, status: u16, within: Duration, what: &str) {
    let started = Instant::now();
    while get(admin, "/ready").0 != status {
        assert!(started.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts an app container (sitio's demo service, listening on `app_port`)
/// publishing `ports`, and a sitio container in its network namespace, with
/// `sitio_args` (env, mounts) added to its `docker run`.
fn pod(
    image: &str,
    cleanup: &mut Cleanup,
    app_port: u16,
    sitio_args: &[&str],
    ports: &[u16],
) -> (String, String) {
    let app = name("app");
    let sitio = name("sitio");
    let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), app.clone()];
    for p in ports {
        args.push("-p".into());
        args.push(format!("127.0.0.1::{p}"));
    }
    args.extend([
        "-e".into(),
        format!("TARGET_PORT={app_port}"),
        image.to_string(),
        "demo-backend".into(),
    ]);
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    cleanup.containers.push(app.clone());
    let mut args = vec!["run", "-d", "--name", &sitio, "--network"];
    let netns = format!("container:{app}");
    args.push(&netns);
    args.extend(sitio_args);
    args.push(image);
    docker(&args);
    cleanup.containers.push(sitio.clone());
    (app, sitio)
}

#[test]
fn the_seed_pod_runs_for_real_in_containers() {
    let root = env!("CARGO_MANIFEST_DIR");
    let image = format!("sitio-test:{}", std::process::id());
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        image: image.clone(),
    };
    let built = run(Command::new(Path::new(root).join("scripts/build-image.sh")).arg(&image));
    let size: u64 = docker(&["image", "inspect", &image, "--format", "{{.Size}}"])
        .parse()
        .unwrap();
    assert!(size < 15 << 20, "image is {size} bytes: {built}");
    assert_eq!(
        docker(&["image", "inspect", &image, "--format", "{{.Config.User}}"]),
        "65532:65532"
    );
    let label = |name: &str| {
        let format = format!("{{{{index .Config.Labels \"org.opencontainers.image.{name}\"}}}}");
        docker(&["image", "inspect", &image, "--format", &format])
    };
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("title"), "sitio");
    let head = Command::new("git")
        .args(["-C", root, "rev-parse", "HEAD"])
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(
            label("revision"),
            String::from_utf8_lossy(&head.stdout).trim()
        );
    }

    // The custom 404 page, mounted read-only as a ConfigMap would be.
    let pages = tempfile::tempdir().unwrap();
    let page = "<h1>Look Somewhere Else</h1>\n";
    std::fs::write(pages.path().join("404.html"), page).unwrap();
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(pages.path()));
    let mount = format!("{}:/pages:ro", pages.path().display());

    // PORT 8080 -> TARGET_PORT 8087, as in the posts.
    let sitio_args = [
        "-v",
        &mount,
        "-e",
        "SITIO_ERROR_PAGE_404=/pages/404.html",
        "-e",
        "SITIO_DRAIN_SECONDS=15",
        // The image's HEALTHCHECK (`/sitio health`), asked every second.
        "--health-interval",
        "1s",
    ];
    let (app, sitio) = pod(&image, &mut cleanup, 8087, &sitio_args, &[8080, 8087, 9901]);
    let (traffic, direct, admin) = (
        published(&app, 8080),
        published(&app, 8087),
        published(&app, 9901),
    );
    wait_ready(admin);
    let started = Instant::now();
    loop {
        let health = docker(&["inspect", &sitio, "--format", "{{.State.Health.Status}}"]);
        if health == "healthy" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "docker says {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    for path in ["/", "/photos/1.svg", "/api/photos"] {
        let through = get(traffic, path);
        let bare = get(direct, path);
        assert_eq!(through.0, 200, "{path}");
        assert_eq!(through, bare, "{path} passes through byte-exact");
    }
    let (code, body) = get(traffic, "/photos/7.svg");
    assert_eq!(
        (code, body.as_slice()),
        (404, page.as_bytes()),
        "the 404 page is replaced"
    );
    let (_, metrics) = get(admin, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "sitio_requests_total{method=\"GET\",route=\"/photos/1.svg\",status=\"200\"} 1",
        "sitio_requests_total{method=\"GET\",route=\"/photos/7.svg\",status=\"404\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // `docker stop` sends SIGTERM: in-flight requests finish, none fails.
    let slow: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || get(traffic, "/slow")))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    docker(&["stop", "-t", "20", &sitio]);
    for request in slow {
        let (code, body) = request.join().unwrap();
        assert_eq!(
            code,
            200,
            "in-flight request failed during drain: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(
        docker(&["inspect", &sitio, "--format", "{{.State.ExitCode}}"]),
        "0"
    );

    // The seed's port swap: service on 8080, sitio on 8087 (`oc set env ... TARGET_PORT=8080 PORT=8087`).
    let swap = ["-e", "TARGET_PORT=8080", "-e", "PORT=8087"];
    let (app, _) = pod(&image, &mut cleanup, 8080, &swap, &[8087, 9901]);
    let (traffic, admin) = (published(&app, 8087), published(&app, 9901));
    wait_ready(admin);
    assert_eq!(get(traffic, "/photos/2.svg").0, 200);
    assert!(
        String::from_utf8(get(traffic, "/").1)
            .unwrap()
            .contains("Photo library")
    );

    stop_orders(&image, &mut cleanup);
}

/// A pod as Kubernetes builds it: a holder container owns the network
/// namespace (the pause container's job), so the app and sitio can each stop
/// without taking the other's network with them. Returns (app, sitio, traffic
/// port, admin port).
fn pause_pod(image: &str, cleanup: &mut Cleanup) -> (String, String, u16, u16) {
    let holder = name("pause");
    docker(&[
        "run",
        "-d",
        "--name",
        &holder,
        "-p",
        "127.0.0.1::8080",
        "-p",
        "127.0.0.1::9901",
        "-e",
        "TARGET_PORT=18000",
        image,
        "demo-backend",
    ]);
    cleanup.containers.push(holder.clone());
    let netns = format!("container:{holder}");
    let app = name("app");
    docker(&[
        "run",
        "-d",
        "--name",
        &app,
        "--network",
        &netns,
        "-e",
        "TARGET_PORT=8087",
        image,
        "demo-backend",
    ]);
    cleanup.containers.push(app.clone());
    let sitio = name("sitio");
    docker(&[
        "run",
        "-d",
        "--name",
        &sitio,
        "--network",
        &netns,
        "-e",
        "SITIO_DRAIN_SECONDS=15",
        "-e",
        "SITIO_READY_REQUIRES_SERVICE=on",
        image,
    ]);
    cleanup.containers.push(sitio.clone());
    let (traffic, admin) = (published(&holder, 8080), published(&holder, 9901));
    wait_ready(admin);
    (app, sitio, traffic, admin)
}

/// Five `/slow` requests (1.2 s each) in flight through sitio.
fn slow_requests(traffic: u16) -> Vec<std::thread::JoinHandle<(u16, Vec<u8>)>> {
    let slow: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || get(traffic, "/slow")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    slow
}

fn statuses(requests: Vec<std::thread::JoinHandle<(u16, Vec<u8>)>>) -> Vec<u16> {
    requests.into_iter().map(|r| r.join().unwrap().0).collect()
}

/// The stop orders of a real kubelet, with what the README promises for each.
/// The demo service exits at once on SIGTERM, like most apps (and python's
/// http.server); the manifests' `preStop` sleep on the app is played by the
/// test waiting before it stops the app (scaled down from 10 s to 2 s).
fn stop_orders(image: &str, cleanup: &mut Cleanup) {
    // 1. App first (native sidecars stop the app before sitio), with the
    //    app's preStop: in-flight requests finish during it; once the app is
    //    gone, sitio answers 502 at once and reports not ready.
    let (app, sitio, traffic, admin) = pause_pod(image, cleanup);
    let slow = slow_requests(traffic);
    std::thread::sleep(Duration::from_secs(2)); // the app's preStop sleep
    docker(&["stop", "-t", "10", &app]);
    assert_eq!(statuses(slow), [200; 5], "app first, with preStop");
    let started = Instant::now();
    assert_eq!(get(traffic, "/").0, 502, "the app is gone");
    assert!(started.elapsed() < Duration::from_secs(1), "502 at once");
    wait_readiness(
        admin,
        503,
        Duration::from_secs(3),
        "not ready without the app",
    );
    docker(&["stop", "-t", "20", &sitio]);
    assert_eq!(
        docker(&["inspect", &sitio, "--format", "{{.State.ExitCode}}"]),
        "0"
    );

    // 2. App first without a preStop: the app drops what it was serving;
    //    sitio cannot finish that, but answers 502 at once instead of hanging.
    let (app, _, traffic, _) = pause_pod(image, cleanup);
    let slow = slow_requests(traffic);
    let started = Instant::now();
    docker(&["stop", "-t", "10", &app]);
    assert_eq!(statuses(slow), [502; 5], "app first, no preStop");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // 3. Both at once (plain sidecar containers, older clusters), with the
    //    app's preStop: sitio drains while the app still serves; none fails.
    let (app, sitio, traffic, _) = pause_pod(image, cleanup);
    let slow = slow_requests(traffic);
    let stopping = {
        let sitio = sitio.clone();
        std::thread::spawn(move || docker(&["stop", "-t", "20", &sitio]))
    };
    std::thread::sleep(Duration::from_secs(2)); // the app's preStop sleep
    docker(&["stop", "-t", "10", &app]);
    assert_eq!(statuses(slow), [200; 5], "both at once, with preStop");
    stopping.join().unwrap();
    assert_eq!(
        docker(&["inspect", &sitio, "--format", "{{.State.ExitCode}}"]),
        "0"
    );
}

/// `docker build .` on the multi-stage Dockerfile, as written. Ignored by
/// default: it needs the official Rust image (here a local stand-in made by
/// scripts/offline-rust-image.sh from Debian's packages and this machine's
/// toolchain, about 2 minutes) and compiles sitio inside it (about 5 more on
/// 2 cores). Run it with `cargo test --test it -- --ignored multi_stage`.
#[test]
#[ignore = "about 8 minutes: builds sitio inside a Rust image"]
fn the_multi_stage_dockerfile_builds_the_same_image() {
    let root = env!("CARGO_MANIFEST_DIR");
    run(&mut Command::new(
        Path::new(root).join("scripts/offline-rust-image.sh"),
    ));
    let image = format!("sitio-multi-stage:{}", std::process::id());
    let cleanup = Cleanup {
        containers: vec![name("built")],
        image: image.clone(),
    };
    run(Command::new("docker").args(["build", "-q", "-t", &image, root]));
    assert_eq!(
        docker(&["image", "inspect", &image, "--format", "{{.Config.User}}"]),
        "65532:65532"
    );
    let size: u64 = docker(&["image", "inspect", &image, "--format", "{{.Size}}"])
        .parse()
        .unwrap();
    assert!(size < 15 << 20, "image is {size} bytes");
    assert_eq!(
        docker(&["run", "--rm", &image, "--version"]),
        format!("sitio {}", env!("CARGO_PKG_VERSION"))
    );
    let container = &cleanup.containers[0];
    docker(&[
        "run",
        "-d",
        "--name",
        container,
        "--health-interval",
        "1s",
        &image,
        "demo",
    ]);
    let started = Instant::now();
    while docker(&["inspect", container, "--format", "{{.State.Health.Status}}"]) != "healthy" {
        assert!(started.elapsed() < Duration::from_secs(20), "never healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
}
