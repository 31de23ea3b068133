//! The request-smuggling table (`tests/data/desync_cases.txt`, converted from
//! http-desync-guardian's corpus) sent through sitio to an independent, lenient
//! origin that prints every request head it parses.
//!
//! The invariant checked for every case: the origin never parses a request
//! sitio did not forward (a smuggled request). On top of it: "Severe"
//! cases are refused outright, and "Compliant" cases are forwarded.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sitio::{Action, Decorator, Decorators, Exchange};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::common::*;

struct Case {
    tier: String,
    name: String,
    head: Vec<u8>,
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

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/desync_cases.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            Case {
                tier: f.next().unwrap().to_string(),
                name: f.next().unwrap().to_string(),
                head: unescape(f.next().unwrap()),
            }
        })
        .collect()
}

/// Compliant cases sitio refuses on purpose, with the reason.
const REFUSED_ON_PURPOSE: &[(&str, &str)] = &[
    (
        "rfc-compliant.yaml: Different Transfer-Encoding headers",
        "gzip/deflate/compress codings would be lost when the hop-by-hop \
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
        "gzip then chunked: as above, 501",
    ),
    (
        "more-compliant-tests.yaml: Transfer-Encoding: identity and chunked OK",
        "deflate, identity, chunked: deflate as above, 501",
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

fn refused_on_purpose(name: &str) -> bool {
    REFUSED_ON_PURPOSE.iter().any(|(n, _)| *n == name)
}

/// Records the target of every request sitio forwards.
struct Forwarded(Arc<Mutex<Vec<String>>>);

impl Decorator for Forwarded {
    fn on_request(&self, head: &mut http::request::Parts, _: &mut Exchange) -> Action {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_case_of_the_desync_corpus_smuggles_a_request() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/backends/recorder.py");
    let mut origin = Command::new("python3")
        .args(["-u", script])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(origin.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let port: u16 = first.strip_prefix("PORT ").unwrap().parse().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_writer = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen_writer.lock().unwrap().push(line);
        }
    });

    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let decorators = Decorators::builder()
        .with(Forwarded(forwarded.clone()))
        .build();
    let sitio = Sitio::start(config_for(port), decorators).await;

    let cases = cases();
    assert!(cases.len() > 150, "the whole corpus is loaded");
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut runs = tokio::task::JoinSet::new();
    for (n, case) in cases.iter().enumerate() {
        let space = case.head.iter().position(|&b| b == b' ').unwrap();
        let mut raw = case.head[..=space].to_vec();
        raw.extend_from_slice(format!("/case-{n}").as_bytes());
        raw.extend_from_slice(&case.head[space + 1..]);
        raw.extend_from_slice(b"\r\n");
        let lower = String::from_utf8_lossy(&case.head).to_lowercase();
        if lower.contains("content") || lower.contains("transfer") || lower.contains("length") {
            raw.extend_from_slice(
                format!("0\r\n\r\nGET /smuggled-{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
        }
        let addr = sitio.addr;
        let limit = limit.clone();
        runs.spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&raw).await;
            // Read every response sitio sends, so that each request it
            // forwarded has completed at the origin before counting.
            let mut buf = Vec::new();
            let mut first = None;
            while let Ok(Some(res)) = tokio::time::timeout(
                Duration::from_millis(800),
                read_response(&mut s, &mut buf, false),
            )
            .await
            {
                first.get_or_insert(res.status);
            }
            (n, first)
        });
    }
    let mut status = HashMap::new();
    while let Some(done) = runs.join_next().await {
        let (n, s) = done.unwrap();
        status.insert(n, s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut at_origin: HashMap<usize, usize> = HashMap::new();
    for line in seen.lock().unwrap().iter() {
        let target = line.splitn(3, ' ').nth(2).unwrap_or("");
        if let Some(n) = tag_of(target) {
            *at_origin.entry(n).or_default() += 1;
        }
    }
    let mut by_sitio: HashMap<usize, usize> = HashMap::new();
    for target in forwarded.lock().unwrap().iter() {
        if let Some(n) = tag_of(target) {
            *by_sitio.entry(n).or_default() += 1;
        }
    }

    let mut failures = Vec::new();
    let mut refused = 0;
    for (n, case) in cases.iter().enumerate() {
        let origin = at_origin.get(&n).copied().unwrap_or(0);
        let sent = by_sitio.get(&n).copied().unwrap_or(0);
        let st = status[&n];
        // Fewer at the origin is a failed send (the client got an error);
        // more is a smuggled request.
        if origin > sent {
            failures.push(format!(
                "DESYNC [{}] {}: sitio forwarded {sent}, origin parsed {origin}",
                case.tier, case.name
            ));
        }
        let was_refused = sent == 0 && st.is_some_and(|s| s >= 400);
        refused += usize::from(was_refused);
        match case.tier.as_str() {
            "Severe" if !was_refused => failures.push(format!(
                "severe case not refused: {} (status {st:?}, forwarded {sent})",
                case.name
            )),
            "Compliant" if sent == 0 && !refused_on_purpose(&case.name) => failures.push(format!(
                "compliant case not forwarded: {} (status {st:?})",
                case.name
            )),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        refused > 50,
        "the corpus exercises refusals ({refused} refused)"
    );
    sitio.stop().await;
}
