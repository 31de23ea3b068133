//! Test harness: sitio started through `sitio::run` on port 0, real backends
//! (an in-process hyper service, `python3 -m http.server`, a recording origin),
//! and raw-socket clients that see exactly the bytes on the wire.

#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod origin;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sitio::{Config, Decorators, Listeners};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The sitio binary under test.
pub const SITIO: &str = env!("CARGO_BIN_EXE_sitio");

pub type Lines = Arc<Mutex<Vec<serde_json::Value>>>;

/// Starts the binary on ports picked by the OS; returns it with its traffic
/// and admin ports, read from its JSON "ready" log line, and its later log lines.
pub async fn start_binary(
    target_port: u16,
    extra_env: &[(&str, &str)],
) -> (Child, u16, u16, Lines) {
    start_program(std::path::Path::new(SITIO), target_port, extra_env).await
}

/// [`start_binary`] for any binary built on `sitio::main` (the examples).
pub async fn start_program(
    program: &std::path::Path,
    target_port: u16,
    extra_env: &[(&str, &str)],
) -> (Child, u16, u16, Lines) {
    let mut child = Command::new(program)
        .env_clear()
        .env("PORT", "0")
        .env("SITIO_ADMIN_PORT", "0")
        .env("TARGET_PORT", target_port.to_string())
        .env("SITIO_LOG_FORMAT", "json")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Lines logged before "ready" (background tasks start first) are kept too.
    let logged = Lines::default();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["message"] == "sitio is ready" {
                return v;
            }
            logged.lock().unwrap().push(v);
        }
        panic!("sitio exited before it was ready");
    })
    .await
    .unwrap();
    let sink = logged.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    let port_of = |field: &str| -> u16 {
        let addr = ready[field].as_str().unwrap();
        addr.rsplit(':').next().unwrap().parse().unwrap()
    };
    (child, port_of("listen"), port_of("admin"), logged)
}

/// A running sitio instance; stopped (drained) on [`Sitio::stop`] or dropped.
pub struct Sitio {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), sitio::StartError>>>,
}

/// A config pointing at `target_port` on 127.0.0.1, with test-friendly limits.
pub fn config_for(target_port: u16) -> Config {
    Config {
        target_port,
        access_log: false,
        drain_seconds: 5,
        ..Config::default()
    }
}

impl Sitio {
    pub async fn start(config: Config, decorators: Decorators) -> Sitio {
        let traffic = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = traffic.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = Listeners {
            traffic,
            admin: Some(admin),
        };
        let task = tokio::spawn(sitio::run(listeners, config, decorators, async {
            let _ = rx.await;
        }));
        Sitio {
            addr,
            admin: admin_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Its `/stats` document.
    pub async fn stats(&self) -> serde_json::Value {
        let (_, body) = curl(&[&format!("http://{}/stats", self.admin)]).await;
        serde_json::from_slice(&body).unwrap()
    }

    /// Signals shutdown and waits for the drain to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Sitio {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `python3 -m http.server` serving `dir`, on a port the OS picks (as in the seed).
pub struct PythonServer {
    pub port: u16,
    _child: Child,
}

impl PythonServer {
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> PythonServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 is installed (the README's test command installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("http.server started")
            .unwrap()
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected http.server banner: {line}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PythonServer {
            port,
            _child: child,
        }
    }
}

/// `tests/backends/steerable.py`: a service process the test steers, kills
/// (SIGKILL, like a crash) and starts again on the same port.
pub struct Steerable {
    pub port: u16,
    child: Option<Child>,
}

impl Steerable {
    /// Starts it on `port` (0: any).
    pub async fn start(port: u16) -> Steerable {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/backends/steerable.py");
        let mut child = Command::new("python3")
            .args(["-u", script, &port.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        Steerable {
            port,
            child: Some(child),
        }
    }

    /// From now on answers `status` (0: healthy).
    pub async fn set_mode(&self, status: u16) {
        let raw = format!("GET /__mode/{status} HTTP/1.1\r\nHost: s\r\n\r\n");
        let res = raw_request(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            raw.as_bytes(),
        )
        .await;
        assert_eq!(res.map(|r| r.status), Some(204));
    }

    /// Kills the process, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// A parsed HTTP/1 response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (Content-Length, chunked, or close-delimited) from `stream`,
/// keeping any bytes past it in `buf` for the next call.
pub async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Option<RawResponse> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = res.parse(buf) {
            let status = res.code.unwrap();
            let headers: Vec<(String, String)> = res
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            buf.drain(..n);
            let find = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let bodiless =
                head_request || status == 204 || status == 304 || (100..200).contains(&status);
            let body = if bodiless {
                Vec::new()
            } else if let Some(len) = find("content-length") {
                let len: usize = len.trim().parse().unwrap();
                fill(stream, buf, len).await?;
                buf.drain(..len).collect()
            } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                read_chunked(stream, buf).await?
            } else {
                let mut rest = std::mem::take(buf);
                let _ = stream.read_to_end(&mut rest).await;
                rest
            };
            return Some(RawResponse {
                status,
                headers,
                body,
            });
        }
        if read_more(stream, buf).await == 0 {
            return None;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16384];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        _ => 0,
    }
}

/// Reads into `buf` until it holds `len` bytes; `None` if the stream ends
/// (or stays silent for 10 s) first.
pub async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Option<()> {
    while buf.len() < len {
        if read_more(stream, buf).await == 0 {
            return None;
        }
    }
    Some(())
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..p]).to_string();
            buf.drain(..p + 2);
            return Some(line);
        }
        if read_more(stream, buf).await == 0 {
            return None;
        }
    }
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).ok()?;
        if size == 0 {
            // Trailers, then the empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Some(body);
        }
        fill(stream, buf, size + 2).await?;
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// For services written in a test: reads one request head from `s` (bytes
/// past it stay in `buf`); `None` once the connection ends.
pub async fn read_request_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// For services written in a test: a keep-alive service on a free port
/// that answers the `n`-th request of each connection (from 0) with
/// `answer(n)`, and closes the connection without a byte where it gives
/// `None`.
pub async fn canned_service(
    answer: impl Fn(usize) -> Option<&'static [u8]> + Send + Sync + 'static,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut n = 0;
                while read_request_head(&mut s, &mut buf).await.is_some() {
                    let Some(bytes) = answer(n) else { return };
                    n += 1;
                    if s.write_all(bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Sends `raw` on a new connection and reads one response.
/// Writes `raw` on a kept-alive connection and reads one response; `buf`
/// keeps whatever arrived beyond it, for the next call.
pub async fn send_on(stream: &mut TcpStream, buf: &mut Vec<u8>, raw: &[u8]) -> RawResponse {
    stream.write_all(raw).await.unwrap();
    read_response(stream, buf, raw.starts_with(b"HEAD "))
        .await
        .expect("a response")
}

pub async fn raw_request(addr: SocketAddr, raw: &[u8]) -> Option<RawResponse> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, raw.starts_with(b"HEAD ")).await
}

/// Runs `curl` with `args` and returns (exit ok, stdout).
pub async fn curl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl is installed (the README's test command installs it)");
    (out.status.success(), out.stdout)
}

/// True when the peer closed `stream` (EOF or reset) within `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Resident memory of this test process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs `tests/backends/SCRIPT ARGS...` to its end (a client, an attack);
/// returns what it printed, failing the test if the script failed.
pub async fn run_script<I, S>(script: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let path = format!("{}/tests/backends/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 is installed (the README's test command installs it)");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

/// A test process from `tests/backends/` (`python3 -u SCRIPT ARGS...`) that
/// prints `PORT <n>` first; every later line it prints is kept in `lines`.
pub struct Script {
    pub port: u16,
    pub lines: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl Script {
    pub async fn start(script: &str, args: &[&str]) -> Script {
        let path = format!("{}/tests/backends/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 is installed (the README's test command installs it)");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} printed no PORT line"))
            .unwrap()
            .unwrap_or_else(|| panic!("{script} exited before its PORT line"));
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Script {
            port,
            lines,
            _child: child,
        }
    }

    /// The lines printed so far that start with `prefix`.
    pub fn printed(&self, prefix: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A real Prometheus server (Debian's package) scraping targets every second.
pub struct Prometheus {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Prometheus {
    pub fn scrape(target: SocketAddr) -> Prometheus {
        Prometheus::scrape_all(&[target])
    }

    pub fn scrape_all(targets: &[SocketAddr]) -> Prometheus {
        let labelled: Vec<(SocketAddr, &[(&str, &str)])> =
            targets.iter().map(|t| (*t, &[][..])).collect();
        Prometheus::scrape_labelled(&labelled, None)
    }

    /// Scrapes each target with its own target labels (as Kubernetes
    /// discovery would add namespace, workload and pod), evaluating `rules`
    /// (a rules file's text) every second when given.
    pub fn scrape_labelled(
        targets: &[(SocketAddr, &[(&str, &str)])],
        rules: Option<&str>,
    ) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sitio\n    static_configs:\n",
        );
        for (target, labels) in targets {
            config.push_str(&format!("      - targets: ['{target}']\n"));
            if !labels.is_empty() {
                config.push_str("        labels:\n");
                for (k, v) in labels.iter() {
                    config.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        if let Some(rules) = rules {
            std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
            config.push_str("rule_files: ['rules.yml']\n");
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut p = Prometheus {
            port,
            dir,
            child: None,
        };
        p.start();
        p
    }

    /// Starts it (again, after [`Prometheus::stop`]: same port, same data).
    pub fn start(&mut self) {
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus is installed (the README's test command installs it)");
        self.child = Some(child);
    }

    /// Stops it, as a crash would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Polls `promql` until `done` accepts its result (the `data.result`
    /// array), within 60 s (a loaded machine fails some 1 s scrapes);
    /// returns that result.
    pub async fn wait_for(
        &self,
        promql: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let started = std::time::Instant::now();
        loop {
            let (_, body) =
                curl(&["-G", &url, "--data-urlencode", &format!("query={promql}")]).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if done(&v["data"]["result"]) {
                return v["data"]["result"].clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Prometheus never answered {promql} as expected: {v}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Starts `sitio ARGS` (a subcommand that logs `ready` with a `listen`
/// field, JSON logs) and returns it with the port it listens on.
pub async fn start_subcommand(args: &[&str], ready: &str) -> (Child, u16) {
    let mut child = Command::new(SITIO)
        .args(args)
        .env("SITIO_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == ready {
                let listen = v["listen"].as_str().unwrap();
                return listen.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        panic!("sitio {args:?} exited before it was ready");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}
