//! Request smuggling. Requests go through sitio to independent origins that
//! print every request head they parse: `recorder.py` (a lenient parser of
//! its own), an `h11` origin and `gunicorn`. The invariant for every case: an
//! origin never parses a request sitio did not forward (a smuggled one). On
//! top: refusals are clean (400, or 501 for unsupported codings, and the
//! connection closes), "Severe" corpus cases and the classic CL.TE / TE.CL /
//! TE.TE attacks are refused, and compliant requests are forwarded.
//!
//! Each case is tagged: `@@` in its bytes becomes its number, so the origin's
//! log can be matched to cases run concurrently.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sitio::{Action, Decorator, Decorators, Exchange};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::*;

const BACKENDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/backends");

/// An origin process and the request targets it has parsed so far.
struct Origin {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

#[derive(Clone, Copy, Debug)]
enum OriginKind {
    Recorder,
    H11,
    Gunicorn,
}

impl Origin {
    async fn start(kind: OriginKind) -> Origin {
        let mut cmd = Command::new("python3");
        let mut port = 0;
        match kind {
            OriginKind::Recorder => cmd.args(["-u", &format!("{BACKENDS}/recorder.py")]),
            OriginKind::H11 => cmd.args(["-u", &format!("{BACKENDS}/h11_origin.py")]),
            OriginKind::Gunicorn => {
                port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                cmd.args([
                    "-u",
                    "-m",
                    "gunicorn",
                    "--chdir",
                    BACKENDS,
                    "-k",
                    "gthread",
                    "--threads",
                    "16",
                ])
                .args(["-b", &format!("127.0.0.1:{port}"), "wsgi_origin:app"])
            }
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with h11 and gunicorn (the README's test command installs them)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        if port == 0 {
            let first = lines.next_line().await.unwrap().unwrap();
            port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        } else {
            let started = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{kind:?} did not start"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(req) = line.strip_prefix("REQ ") {
                    sink.lock()
                        .unwrap()
                        .push(req.split_once(' ').map_or("", |x| x.1).to_owned());
                }
            }
        });
        Origin {
            port,
            seen,
            _child: child,
        }
    }
}

/// Records the target of every request sitio forwards.
struct Forwarded(Arc<Mutex<Vec<String>>>);

impl Decorator for Forwarded {
    type State = ();

    fn on_request(
        &self,
        head: &mut http::request::Parts,
        _: &mut (),
        _: &mut Exchange,
    ) -> Action<'_> {
        self.0.lock().unwrap().push(head.uri.to_string());
        Action::Continue
    }
}

fn tag_of(target: &str) -> Option<usize> {
    let rest = target
        .split("/case-")
        .nth(1)
        .or_else(|| target.split("/smuggled-").nth(1))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What happened to one case.
#[derive(Debug, Default, Clone)]
struct Outcome {
    status: Option<u16>,
    closed: bool,
    forwarded: usize,
    parsed: usize,
}

impl Outcome {
    /// Refused before anything reached the service.
    fn refused(&self) -> bool {
        self.forwarded == 0 && self.status.is_some_and(|s| s >= 400)
    }

    /// Told off: a clean 400/501 and a closed connection. For errors inside a
    /// streamed body the head may have left already; the service then sees an
    /// aborted request, never a complete one, and nothing more.
    fn told_off(&self) -> bool {
        matches!(self.status, Some(400 | 501)) && self.closed
    }
}

/// Sends every case (16 at a time) through a fresh sitio to `origin`.
async fn run_cases(origin: &Origin, cases: &[Vec<u8>]) -> Vec<Outcome> {
    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let decorators = Decorators::builder()
        .with(Forwarded(forwarded.clone()))
        .build();
    let sitio = Sitio::start(config_for(origin.port), decorators).await;
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut runs = tokio::task::JoinSet::new();
    for (n, case) in cases.iter().enumerate() {
        let raw = String::from_utf8_lossy(case).contains("@@").then(|| {
            let tag = n.to_string();
            let mut out = Vec::new();
            let mut i = 0;
            while i < case.len() {
                if case[i..].starts_with(b"@@") {
                    out.extend_from_slice(tag.as_bytes());
                    i += 2;
                } else {
                    out.push(case[i]);
                    i += 1;
                }
            }
            out
        });
        let raw = raw.unwrap_or_else(|| case.clone());
        let (addr, limit) = (sitio.addr, limit.clone());
        runs.spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&raw).await;
            let head = raw.starts_with(b"HEAD ");
            // Read every response, so each forwarded request completes first.
            let mut buf = Vec::new();
            let mut out = Outcome::default();
            loop {
                match tokio::time::timeout(
                    Duration::from_millis(1200),
                    read_response(&mut s, &mut buf, head),
                )
                .await
                {
                    Ok(Some(res)) => {
                        out.status.get_or_insert(res.status);
                    }
                    Ok(None) => {
                        out.closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            (n, out)
        });
    }
    let mut outcomes = vec![Outcome::default(); cases.len()];
    while let Some(done) = runs.join_next().await {
        let (n, out) = done.unwrap();
        outcomes[n] = out;
    }
    origin_caught_up(origin, &forwarded, cases.len()).await;
    for target in origin.seen.lock().unwrap().iter() {
        if let Some(n) = tag_of(target).filter(|n| *n < cases.len()) {
            outcomes[n].parsed += 1;
        }
    }
    for target in forwarded.lock().unwrap().iter() {
        if let Some(n) = tag_of(target).filter(|n| *n < cases.len()) {
            outcomes[n].forwarded += 1;
        }
    }
    sitio.stop().await;
    outcomes
}

/// Waits until the origin has reported (on its standard output, read by a
/// task of its own) a request of every case sitio forwarded, or 5 s: a fixed
/// wait missed reports on a loaded machine. Then a little longer, for any
/// request it parsed beyond those (a smuggled one).
async fn origin_caught_up(origin: &Origin, forwarded: &Mutex<Vec<String>>, cases: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let tags = |targets: &[String]| -> std::collections::BTreeSet<usize> {
        targets
            .iter()
            .filter_map(|t| tag_of(t))
            .filter(|n| *n < cases)
            .collect()
    };
    loop {
        let sent = tags(&forwarded.lock().unwrap());
        let seen = tags(&origin.seen.lock().unwrap());
        if sent.is_subset(&seen) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The invariants every case must keep, whatever it is.
fn check_common(name: &str, out: &Outcome, failures: &mut Vec<String>) {
    if out.parsed > out.forwarded {
        failures.push(format!(
            "SMUGGLED {name}: sitio forwarded {}, the origin parsed {}",
            out.forwarded, out.parsed
        ));
    }
    if out.refused() && !(matches!(out.status, Some(400 | 501)) && out.closed) {
        failures.push(format!("unclean refusal {name}: {out:?}"));
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                    i += 2;
                }
                other => panic!("bad escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Compliant corpus cases sitio refuses on purpose, with the reason.
const REFUSED_ON_PURPOSE: &[(&str, &str)] = &[
    (
        "rfc-compliant.yaml: Different Transfer-Encoding headers",
        "gzip/deflate/compress codings would be lost when the hop-by-hop \\
         Transfer-Encoding is re-written, so they get 501 (RFC 9112 §6.1)",
    ),
    (
        "rfc-compliant.yaml: Different Transfer-Encoding headers combined",
        "as above: 501",
    ),
    (
        "more-compliant-tests.yaml: Correct TE OK",
        "gzip, chunked: as above, 501",
    ),
    (
        "more-compliant-tests.yaml: Multiple transfer encoding headers in a single request OK",
        "as above, 501",
    ),
    (
        "more-compliant-tests.yaml: Transfer-Encoding: identity and chunked OK",
        "deflate: as above, 501",
    ),
    (
        "more-compliant-tests.yaml: TE with custom parameters OK",
        "chunked takes no parameters (RFC 9112 §7.1); the parser refuses it: 400",
    ),
    (
        "rfc-compliant.yaml: Transfer-Encoding with a param: chunked;custom_param",
        "as above: 400",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_case_of_the_desync_corpus_smuggles_a_request() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/desync_cases.txt");
    let table: Vec<(String, String, Vec<u8>)> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (
                f.next().unwrap().to_owned(),
                f.next().unwrap().to_owned(),
                unescape(f.next().unwrap()),
            )
        })
        .collect();
    assert!(table.len() > 150, "the whole corpus is loaded");
    let cases: Vec<Vec<u8>> = table
        .iter()
        .map(|(_, _, head)| {
            let space = head.iter().position(|&b| b == b' ').unwrap();
            let mut raw = head[..=space].to_vec();
            raw.extend_from_slice(b"/case-@@");
            raw.extend_from_slice(&head[space + 1..]);
            raw.extend_from_slice(b"\r\n");
            let lower = String::from_utf8_lossy(head).to_lowercase();
            if lower.contains("content") || lower.contains("transfer") || lower.contains("length") {
                raw.extend_from_slice(b"0\r\n\r\nGET /smuggled-@@ HTTP/1.1\r\nHost: x\r\n\r\n");
            }
            raw
        })
        .collect();
    let origin = Origin::start(OriginKind::Recorder).await;
    let outcomes = run_cases(&origin, &cases).await;
    let mut failures = Vec::new();
    for ((tier, name, _), out) in table.iter().zip(&outcomes) {
        check_common(name, out, &mut failures);
        match tier.as_str() {
            "Severe" if !out.refused() => {
                failures.push(format!("severe case not refused: {name} {out:?}"))
            }
            "Compliant"
                if out.forwarded == 0 && !REFUSED_ON_PURPOSE.iter().any(|(n, _)| n == name) =>
            {
                failures.push(format!("compliant case not forwarded: {name} {out:?}"))
            }
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(outcomes.iter().filter(|o| o.refused()).count() > 50);
}

/// Classic smuggling attacks and parser tricks: (name, bytes, what sitio must do).
fn variants() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let smuggle = "GET /smuggled-@@ HTTP/1.1\r\nHost: x\r\n\r\n";
    let te_body = format!("0\r\n\r\n{smuggle}");
    let post = |headers: &str, body: &str| -> Vec<u8> {
        format!("POST /case-@@ HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
    };
    let cl = te_body.len();
    let mut v: Vec<(&'static str, Vec<u8>, Expect)> = vec![
        (
            "CL.TE",
            post(
                &format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"),
                &te_body,
            ),
            Refuse,
        ),
        (
            "TE.CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                &te_body,
            ),
            Refuse,
        ),
        (
            "TE.TE xchunked",
            post(
                &format!("Content-Length: {cl}\r\nTransfer-Encoding: xchunked\r\n"),
                &te_body,
            ),
            Refuse,
        ),
        (
            "TE.TE space before colon",
            post("Transfer-Encoding : chunked\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE tab value",
            post(
                &format!("Content-Length: {cl}\r\nTransfer-Encoding:\tchunked\r\n"),
                &te_body,
            ),
            Refuse,
        ),
        (
            "TE.TE second bogus TE",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
                &te_body,
            ),
            Refuse,
        ),
        (
            "TE.TE obs-fold",
            post("X-Pad: a\r\n Transfer-Encoding: chunked\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE folded value",
            post("Transfer-Encoding:\r\n chunked\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE quoted",
            post("Transfer-Encoding: \"chunked\"\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE NUL in value",
            post("Transfer-Encoding: chu\0nked\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE vertical tab",
            post("Transfer-Encoding: chunked\x0b\r\n", &te_body),
            Refuse,
        ),
        (
            "TE.TE underscore name",
            post(
                &format!("Content-Length: {cl}\r\nTransfer_Encoding: chunked\r\n"),
                &te_body,
            ),
            Refuse,
        ),
        (
            "TE.TE bare CR in value",
            post("X-Pad: a\rTransfer-Encoding: chunked\r\n", &te_body),
            Refuse,
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "POST /case-@@ HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{te_body}"
            )
            .into_bytes(),
            Refuse,
        ),
        (
            "duplicate CL differing",
            post("Content-Length: 4\r\nContent-Length: 5\r\n", "abcde"),
            Refuse,
        ),
        ("CL list", post("Content-Length: 4, 5\r\n", "abcde"), Refuse),
        (
            "CL plus sign",
            post("Content-Length: +4\r\n", "abcd"),
            Refuse,
        ),
        ("CL hex", post("Content-Length: 0x4\r\n", "abcd"), Refuse),
        (
            "CL negative",
            post("Content-Length: -1\r\n", "abcd"),
            Refuse,
        ),
        (
            "CL overflow",
            post("Content-Length: 18446744073709551616\r\n", "abcd"),
            Refuse,
        ),
        (
            "chunk size overflow",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("ffffffffffffffffff\r\nabcd\r\n{te_body}"),
            ),
            Refuse,
        ),
        (
            "chunk size 0x",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("0x4\r\nabcd\r\n{te_body}"),
            ),
            Refuse,
        ),
        (
            "chunk size negative",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("-4\r\nabcd\r\n{te_body}"),
            ),
            Refuse,
        ),
        (
            "over-long chunk extension",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("4;x={}\r\nabcd\r\n{te_body}", "y".repeat(70_000)),
            ),
            Refuse,
        ),
        (
            "smuggle in trailer section",
            post("Transfer-Encoding: chunked\r\n", &format!("0\r\n{smuggle}")),
            Either,
        ),
        (
            "bare LF line ends",
            format!("GET /case-@@ HTTP/1.1\nHost: x\n\n{smuggle}").into_bytes(),
            Either,
        ),
        (
            "request line with tab",
            format!("GET\t/case-@@ HTTP/1.1\r\nHost: x\r\n\r\n{smuggle}").into_bytes(),
            Either,
        ),
        (
            "NUL in request target",
            format!("GET /case-@@\0x HTTP/1.1\r\nHost: x\r\n\r\n{smuggle}").into_bytes(),
            Refuse,
        ),
        (
            "CR in request target",
            format!("GET /case-@@\rGET /x HTTP/1.1\r\nHost: x\r\n\r\n{smuggle}").into_bytes(),
            Refuse,
        ),
        (
            "GET with a body",
            format!(
                "GET /case-@@ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggle}",
                smuggle.len()
            )
            .into_bytes(),
            Forward,
        ),
        (
            "HEAD with a body",
            format!(
                "HEAD /case-@@ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggle}",
                smuggle.len()
            )
            .into_bytes(),
            Refuse,
        ),
        (
            "Expect 100-continue with a smuggle-shaped body",
            post(
                &format!(
                    "Expect: 100-continue\r\nContent-Length: {}\r\n",
                    smuggle.len()
                ),
                smuggle,
            ),
            Forward,
        ),
        (
            "pipelined follow-up",
            format!("GET /case-@@ HTTP/1.1\r\nHost: x\r\n\r\n{smuggle}").into_bytes(),
            Forward,
        ),
        (
            "chunked, legitimately",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("4\r\nabcd\r\n{te_body}"),
            ),
            Forward,
        ),
    ];
    // Control bytes in header names and values, one case each.
    for (name, byte) in [
        ("SOH in value", 1u8),
        ("BEL in value", 7),
        ("DEL in value", 127),
    ] {
        let mut raw = b"GET /case-@@ HTTP/1.1\r\nHost: x\r\nX-Bad: a".to_vec();
        raw.push(byte);
        raw.extend_from_slice(format!("b\r\n\r\n{smuggle}").as_bytes());
        v.push((name, raw, Refuse));
    }
    v
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Refuse,
    Forward,
    Either,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_variants_never_pass_to_three_different_origins() {
    let variants = variants();
    let cases: Vec<Vec<u8>> = variants.iter().map(|(_, raw, _)| raw.clone()).collect();
    let mut failures = Vec::new();
    for kind in [OriginKind::Recorder, OriginKind::H11, OriginKind::Gunicorn] {
        let origin = Origin::start(kind).await;
        let outcomes = run_cases(&origin, &cases).await;
        for ((name, _, expect), out) in variants.iter().zip(&outcomes) {
            let name = format!("{kind:?}: {name}");
            check_common(&name, out, &mut failures);
            match expect {
                Expect::Refuse if !out.told_off() => {
                    failures.push(format!("not refused: {name} {out:?}"))
                }
                Expect::Forward if out.forwarded == 0 || out.parsed == 0 => {
                    failures.push(format!("not forwarded: {name} {out:?}"))
                }
                _ => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
