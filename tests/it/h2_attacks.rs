//! HTTP/2 attacks on the sitio binary (`tests/backends/h2_attack.py`, frame
//! by frame with the h2 library): rapid reset in both its forms
//! (CVE-2023-44487), the CONTINUATION flood, PING and SETTINGS floods. Each
//! test attacks while a normal HTTP/2 client keeps asking, and shows the
//! normal client served, sitio's memory bounded (against its own figure
//! before the attack, in the same test), the attack stopped and, for reset
//! floods, the service spared the requests the attacker opened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::backend::Backend;
use crate::common::*;
use crate::http2::{h2_connect, h2_send};

/// What one attack came to.
struct Outcome {
    /// The attack script's lines (SENT n, GOAWAY reason, CLOSED or OPEN).
    printed: Vec<String>,
    /// Frames or streams the attacker got written.
    sent: usize,
    normal_ok: usize,
    normal_failed: usize,
    /// sitio's resident memory growth during the attack, in bytes.
    grown: i64,
    /// Requests the service got from the attack (its count minus the normal client's).
    reached_service: usize,
    /// sitio's `http2-abuse` refusals.
    abuse_refusals: u64,
}

fn rss_of(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs `mode` with `n` against a fresh sitio binary in front of an HTTP/1
/// service while a normal HTTP/2 client keeps asking on its own connection.
async fn under_attack(mode: &str, n: usize) -> Outcome {
    let backend = Backend::start().await;
    let (child, port, admin, _) =
        start_binary(backend.port(), &[("SITIO_TARGET_PROTOCOL", "http1")]).await;
    let pid = child.id().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Warm up (pools, buffers, the first stream) before the baseline.
    let mut warm = h2_connect(addr).await;
    for _ in 0..20 {
        assert_eq!(h2_send(&mut warm, addr, "/status/200").await.0, 200);
    }
    let before = rss_of(pid);
    let served_before = backend.requests();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let normal = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut client = h2_connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let asked = tokio::time::timeout(
                    Duration::from_secs(5),
                    h2_send(&mut client, addr, "/status/200"),
                );
                match asked.await {
                    Ok((200, _, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (port_arg, n_arg) = (port.to_string(), n.to_string());
    let out = run_script("h2_attack.py", [mode, "127.0.0.1", &port_arg, &n_arg]).await;
    let grown = rss_of(pid) - before;
    // A short attack leaves the normal client few turns: it goes on until
    // it has had five answers since the attack began (or fails trying).
    let since = std::time::Instant::now();
    while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < 5
        && since.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    normal.await.unwrap();
    let printed: Vec<String> = out.lines().map(str::to_owned).collect();
    let sent = printed
        .iter()
        .find_map(|l| l.strip_prefix("SENT "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{printed:?}"));
    let (normal_ok, normal_failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let (_, stats) = curl(&[&format!("http://127.0.0.1:{admin}/stats")]).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    drop(child);
    let reached_service = (backend.requests() - served_before).saturating_sub(normal_ok);
    eprintln!(
        "{mode}: {printed:?}, normal client {normal_ok} ok / {normal_failed} failed, \
         sitio grew {} KiB, {reached_service} attack requests reached the service",
        grown >> 10
    );
    Outcome {
        printed,
        sent,
        normal_ok,
        normal_failed,
        grown,
        reached_service,
        abuse_refusals: stats["refused"]["http2-abuse"].as_u64().unwrap(),
    }
}

/// What every attack must leave intact: the normal client served all along,
/// and sitio's memory within 16 MiB of what it was before (what 10,000
/// idle HTTP/1 clients would cost is the scale: this is one connection).
fn assert_contained(mode: &str, o: &Outcome) {
    assert!(
        o.normal_failed == 0 && o.normal_ok >= 5,
        "{mode}: the normal client got {} answers and {} failures",
        o.normal_ok,
        o.normal_failed
    );
    assert!(
        o.grown < 16 << 20,
        "{mode}: sitio grew by {} KiB",
        o.grown >> 10
    );
}

/// Classic rapid reset (each stream's HEADERS and RST_STREAM written
/// together): the h2 crate's cap on streams reset before they are taken up
/// ends the connection with GOAWAY ENHANCE_YOUR_CALM within a few hundred
/// streams; the service sees next to none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_with_enhance_your_calm() {
    let o = under_attack("rapid-reset", 20_000).await;
    assert_contained("rapid-reset", &o);
    // The GOAWAY itself may be lost on a loaded machine (the close resets
    // the socket with the attacker's bytes unread); the refusal counted
    // below is sitio's word that the h2 crate called ENHANCE_YOUR_CALM.
    assert!(
        o.printed
            .iter()
            .filter(|l| l.starts_with("GOAWAY"))
            .all(|l| l.starts_with("GOAWAY ENHANCE_YOUR_CALM")),
        "{:?}",
        o.printed
    );

    assert!(o.printed.contains(&"CLOSED".to_owned()), "{:?}", o.printed);
    assert!(o.sent <= 1_000, "{} of 20,000 streams went out", o.sent);
    assert!(
        o.reached_service <= 300,
        "{} reached the service",
        o.reached_service
    );
    assert_eq!(o.abuse_refusals, 1);
}

/// Rapid reset paced to slip under that cap (100 streams opened, taken up
/// and sent to the service, then reset, round after round): sitio closes
/// the connection once half of at least 200 streams were reset before their
/// answer, so 20,000 offered streams cost the service a few hundred requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_rapid_reset_is_cut_off_once_most_streams_are_reset() {
    let o = under_attack("reset-after-accept", 20_000).await;
    assert_contained("reset-after-accept", &o);
    assert!(o.printed.contains(&"CLOSED".to_owned()), "{:?}", o.printed);
    assert!(o.sent <= 2_000, "{} of 20,000 streams went out", o.sent);
    assert!(
        o.reached_service <= 600,
        "{} reached the service",
        o.reached_service
    );
    assert_eq!(o.abuse_refusals, 1);
}

/// A header block that never ends (CONTINUATION frames, 16 KiB each, up to
/// 64 MiB): refused once past the header list limit and the connection
/// closed, long before the attacker's 4,096 frames went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_at_the_header_limit() {
    let o = under_attack("continuation", 64).await;
    assert_contained("continuation", &o);
    assert!(o.printed.contains(&"CLOSED".to_owned()), "{:?}", o.printed);
    // What went out before the close sat mostly in socket buffers.
    assert!(
        o.sent < 1_024,
        "{} CONTINUATION frames (16 KiB) went out",
        o.sent
    );
    assert_eq!(o.reached_service, 0);
}

/// PINGs and SETTINGS written without reading sitio's answers: the answers
/// wait in the socket, sitio stops reading the attacker once they fill it,
/// and its memory stays flat whatever the attacker writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_leave_memory_flat() {
    for mode in ["ping-flood", "settings-flood"] {
        let o = under_attack(mode, 200_000).await;
        assert_contained(mode, &o);
        assert!(
            o.grown < 4 << 20,
            "{mode}: {} frames, sitio grew by {} KiB",
            o.sent,
            o.grown >> 10
        );
    }
}

/// An HTTP/2 service for the long streams: `/big` sends 64 MiB in 64 KiB
/// chunks; `/hold` waits 2 s before it reads the request body, then answers
/// its length.
async fn streaming_service() -> SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
    use hyper::body::Frame;
    type Body = BoxBody<Bytes, std::convert::Infallible>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let body: Body = if req.uri().path() == "/big" {
                        let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                        let frames = (0..1024).map(move |_| Ok(Frame::data(chunk.clone())));
                        BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
                    } else {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let n = req.into_body().collect().await.unwrap().to_bytes().len();
                        BodyExt::boxed(http_body_util::Full::new(Bytes::from(n.to_string())))
                    };
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Long streams through sitio (HTTP/2 on both sides) hold bounded memory
/// whichever end is slow: 64 MiB from the service to a client that stops
/// reading, and 32 MiB from a client to a service that does not read yet.
/// HTTP/2 flow control stops each sender; sitio holds at most the windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_hold_bounded_memory_both_ways() {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    let service = streaming_service().await;
    let (child, port, _, _) = start_binary(service.port(), &[]).await;
    let pid = child.id().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut client = h2_connect(addr).await;
    assert_eq!(h2_send(&mut client, addr, "/hold").await.0, 200);
    let before = rss_of(pid);

    // The client reads the head, then nothing for a second.
    let req = http::Request::get(format!("http://{addr}/big"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = client.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stalled = rss_of(pid) - before;
    let mut body = res.into_body();
    let mut got = 0usize;
    let mut peak = stalled;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len());
        if got.is_multiple_of(8 << 20) {
            peak = peak.max(rss_of(pid) - before);
        }
    }
    assert_eq!(got, 64 << 20);
    assert!(
        stalled < 8 << 20 && peak < 16 << 20,
        "sitio grew {} KiB while the client stalled, {} KiB at most while it read",
        stalled >> 10,
        peak >> 10
    );

    // 32 MiB up, to a service that reads nothing for 2 s.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut upload, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![b'y'; 64 << 10]);
    let frames = (0..512)
        .map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone())));
    let req = http::Request::post(format!("http://{addr}/hold"))
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
        .unwrap();
    let sent = tokio::spawn(async move {
        let res = upload.send_request(req).await.unwrap();
        res.into_body().collect().await.unwrap().to_bytes()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = rss_of(pid) - before;
    assert_eq!(
        &sent.await.unwrap()[..],
        (32usize << 20).to_string().as_bytes()
    );
    assert!(
        held < 8 << 20,
        "sitio grew {} KiB while the service did not read",
        held >> 10
    );
    drop(child);
}
