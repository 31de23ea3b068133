//! The README's commands, run exactly as written, as a newcomer would paste
//! them line by line. They name fixed ports (8080, 8087, 9901), so they run
//! in a network namespace of the test's own, where those ports are free and
//! nothing else on the machine is touched; the Docker block talks to a Docker
//! daemon of the test's own in that namespace. (The Kubernetes blocks need a
//! cluster: their manifests are checked offline in `deploy.rs`.)

use std::process::Command;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The shell lines of the first ```sh block after `heading`.
fn block_after(readme: &str, heading: &str) -> Vec<String> {
    let from = readme
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in README"));
    let rest = &readme[from..];
    let start = rest.find("```sh\n").unwrap() + 6;
    let end = start + rest[start..].find("```").unwrap();
    rest[start..end]
        .lines()
        .map(|l| l.split("  #").next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A network namespace of the test's own, removed on drop, with the
/// processes started in it.
struct Sandbox {
    name: String,
    running: Vec<std::process::Child>,
    /// Set for every line (`DOCKER_HOST` of the sandbox's own Docker daemon).
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new() -> Sandbox {
        static SANDBOXES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SANDBOXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sitio-readme-{}-{n}", std::process::id());
        for args in [
            vec!["netns", "add", &name],
            vec!["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
        ] {
            let ok = Command::new("ip").args(&args).status();
            assert!(
                ok.is_ok_and(|s| s.success()),
                "ip {args:?} (needs root and iproute2)"
            );
        }
        Sandbox {
            name,
            running: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Runs `line` with bash from the repository root: returns (success,
    /// its output; stderr too on failure) if it ends within `wait`, else
    /// leaves it running (a server).
    /// Output goes to a file, not a pipe: a process the line sends to the
    /// background (`&`) keeps its output open long after the line ended.
    fn run(&mut self, line: &str, wait: Duration) -> Option<(bool, String)> {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "bash", "-c", line])
            .current_dir(ROOT)
            .env("CARGO_NET_OFFLINE", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                let mut text = std::fs::read_to_string(out.path()).unwrap_or_default();
                if !status.success() {
                    text += &std::fs::read_to_string(err.path()).unwrap_or_default();
                }
                return Some((status.success(), text));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.running.push(child);
        None
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Killing the namespace's processes: `ip netns pids` lists them all,
        // the backgrounded ones (`&`) included.
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        if let Ok(out) = pids {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        for child in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn the_readme_commands_work_as_written() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let mut sandbox = Sandbox::new();

    // "Running it": a service, sitio with a 404 page, and two curls.
    let lines = block_after(&readme, "## Running it");
    assert!(lines.len() >= 5, "{lines:?}");
    let mut outputs = Vec::new();
    for line in &lines {
        let wait = if line.starts_with("cargo ") {
            Duration::from_secs(600)
        } else {
            Duration::from_secs(3)
        };
        outputs.push((line.clone(), sandbox.run(line, wait)));
    }
    for (line, finished) in &outputs {
        if let Some((ok, text)) = finished {
            assert!(ok, "`{line}` failed: {text}");
        }
    }
    let output_of = |prefix: &str| {
        outputs
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .and_then(|(_, o)| o.clone())
            .map(|(_, text)| text)
            .unwrap_or_else(|| panic!("no finished `{prefix}` line in {outputs:?}"))
    };
    let nope = output_of("curl -i localhost:8080/nope");
    let page = std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/pages/404.html")).unwrap();
    assert!(nope.starts_with("HTTP/1.1 404"), "{nope}");
    assert!(nope.contains(page.trim()), "the README's 404 page: {nope}");
    assert_eq!(output_of("curl localhost:9901/ready").trim(), "ready");
    drop(sandbox);

    // The first command of all: the demo, with nothing else running.
    let top = block_after(&readme, "# sitio");
    let demo = &top[0];
    assert!(demo.starts_with("cargo run --release -- demo"), "{top:?}");
    let mut sandbox = Sandbox::new();
    assert!(
        sandbox.run(demo, Duration::from_secs(5)).is_none(),
        "the demo keeps running"
    );
    let started = Instant::now();
    loop {
        let index = sandbox.run("curl -sf http://localhost:8080/", Duration::from_secs(5));
        if index.is_some_and(|(ok, i)| ok && i.contains("Photo library")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo never answered"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let dashboard = sandbox.run("curl -sf http://localhost:9901/", Duration::from_secs(5));
    assert!(dashboard.is_some_and(|(ok, d)| ok && d.contains("<html")));
}

/// A Docker daemon of the test's own inside a sandbox's network namespace
/// (its own data, socket and containerd; `vfs` storage, no iptables), so
/// that the README's `docker run -p 8080:8080` publishes in the sandbox and
/// images and containers never touch the machine's daemon.
struct SandboxDocker {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
}

impl SandboxDocker {
    fn start(sandbox: &mut Sandbox) -> SandboxDocker {
        let dir = tempfile::Builder::new()
            .prefix("sitio-dockerd")
            .tempdir()
            .unwrap();
        let path = |p: &str| dir.path().join(p).display().to_string();
        std::fs::write(path("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(path("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroups.
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", sandbox.name))
            .args(["dockerd", "--config-file", &path("daemon.json")])
            .args(["--data-root", &path("root"), "--exec-root", &path("exec")])
            .args(["--pidfile", &path("dockerd.pid")])
            .args(["-H", &format!("unix://{}", path("docker.sock"))])
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (the README's test command installs docker.io)");
        let docker = SandboxDocker { dir, daemon };
        let host = format!("unix://{}", docker.path("docker.sock"));
        sandbox.env.push(("DOCKER_HOST".into(), host));
        let started = Instant::now();
        while sandbox
            .run("docker info", Duration::from_secs(10))
            .is_none_or(|(ok, _)| !ok)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the sandbox's dockerd did not start: {}",
                std::fs::read_to_string(docker.path("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        docker
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    /// Removes the containers, then stops the daemon (its containerd with it).
    fn stop(mut self, sandbox: &mut Sandbox) {
        sandbox.run(
            "docker rm -f $(docker ps -aq) >/dev/null 2>&1; true",
            Duration::from_secs(60),
        );
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let _ = self.daemon.wait();
    }
}

/// The README's Docker block, as written: the image built offline, the
/// demo service and sitio as two containers sharing one network namespace,
/// the service through sitio and the dashboard, and `docker stop` draining
/// sitio to exit 0. It runs against a Docker daemon of its own in a network
/// namespace of its own, where the block's fixed host ports are free.
#[test]
fn the_readme_docker_block_works_as_written() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let lines = block_after(&readme, "**Docker, as a pod.**");
    assert_eq!(lines.len(), 5, "{lines:?}");
    let mut sandbox = Sandbox::new();
    let docker = SandboxDocker::start(&mut sandbox);
    let mut through_sitio = None;
    for line in &lines {
        if line.starts_with("curl ") {
            // As a newcomer would: again until sitio has started (a moment).
            let started = Instant::now();
            loop {
                match sandbox.run(line, Duration::from_secs(10)) {
                    Some((true, text)) => {
                        through_sitio = Some(text);
                        break;
                    }
                    other => assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "`{line}`: {other:?}"
                    ),
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            let dashboard = sandbox.run("curl -sf localhost:9901/", Duration::from_secs(10));
            assert!(dashboard.is_some_and(|(ok, d)| ok && d.contains("<html")));
            continue;
        }
        let wait = Duration::from_secs(if line.starts_with("scripts/") {
            900
        } else {
            60
        });
        let done = sandbox.run(line, wait);
        assert!(
            done.as_ref().is_some_and(|(ok, _)| *ok),
            "`{line}`: {done:?}"
        );
    }
    let page = through_sitio.expect("the block curls sitio");
    assert!(page.contains("Photo library"), "{page}");
    let exit = sandbox.run(
        "docker inspect sitio --format '{{.State.ExitCode}}'",
        Duration::from_secs(10),
    );
    assert_eq!(
        exit.map(|(_, code)| code.trim().to_owned()),
        Some("0".to_owned()),
        "docker stop drains sitio to exit 0"
    );
    docker.stop(&mut sandbox);
}
