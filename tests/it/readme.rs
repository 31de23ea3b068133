//! The README's commands, run exactly as written, as a newcomer would paste
//! them line by line. They name fixed ports (8080, 8087, 9901), so they run
//! in a network namespace of the test's own, where those ports are free and
//! nothing else on the machine is touched.

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
}

impl Sandbox {
    fn new() -> Sandbox {
        let name = format!("sitio-readme-{}", std::process::id());
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
