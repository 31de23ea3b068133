//! In-memory driver for fuzzing the request path: arbitrary client bytes go
//! through protocol detection, the HTTP/1 parser, the guard and the proxy to a
//! real (loopback) service, and whatever sitio answers comes back.
//!
//! Built only for tests and with the `fuzzing` feature (used by `fuzz/`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::connection::{Instance, serve_connection};
use crate::decorator::{AccessLog, Decorators, ErrorPages};
use crate::server::prepare;

/// How sitio tells protocols apart by the first bytes (internal elsewhere).
pub use crate::detect::{Protocol, classify};

/// SIGPIPE ignored, as Rust's runtime does for the sitio binary.
#[allow(unsafe_code)]
fn ignore_sigpipe() {
    // SAFETY: sets one signal's disposition to "ignore" (no handler code
    // runs); called once, before any socket of the harness exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// A loopback service answering every request, shared by all runs.
fn service_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        // The sitio binary runs with SIGPIPE ignored (Rust's runtime does it
        // before `main`); a fuzz target's `main` is libFuzzer's. So that a
        // write to a socket whose peer left is an error here as it is in
        // sitio, not the end of the process (a `request_head` run died so).
        ignore_sigpipe();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serve_service(listener).await;
            });
        });
        port
    })
}

/// The demo library, and `/echo`: the request body it got (data, then
/// trailers), so that how sitio read a body shows in the answer.
///
/// The service closes its connection after each answer (`connection:
/// close`), so sitio never sends a request on a connection it reused. The
/// demo library answers without reading a body, and hyper's server then
/// closes the connection after its answer when more than one frame of the
/// body is left (it drains one), with no `connection: close`: a request
/// sitio sent on that pooled connection would meet the close and get a 502
/// (sitio does not send a request with side effects twice, nor does nginx).
/// Whether the close comes before sitio reuses the connection is a race
/// between the two connections, which the fuzz target `server_side` ran
/// into on both server sides; it says nothing of how sitio reads requests,
/// which this harness compares. `tests/it/service_connection.rs` covers
/// services that answer early and connections that are reused.
async fn serve_service(listener: tokio::net::TcpListener) {
    use hyper::service::service_fn;
    let shared = crate::demo::Shared::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(match req.uri().path() {
                        "/echo" => echo(req).await,
                        "/switch" => switch(req),
                        _ => crate::demo::route(req, crate::demo::Version::Stable, &shared).await,
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_headers(crate::demo::MAX_FORWARDED_FIELDS)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// `/switch`: switches to the protocol the request's `Upgrade` names, then
/// echoes what comes through the tunnel until the request that ends every
/// input ([`END`]) came too, and closes. Without `Upgrade`, 426.
fn switch(mut req: http::Request<hyper::body::Incoming>) -> http::Response<crate::body::Body> {
    let Some(protocol) = req.headers().get(http::header::UPGRADE).cloned() else {
        return crate::response::text(426, "upgrade required\n");
    };
    let switched = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(tunnel) = switched.await else {
            return;
        };
        let mut io = hyper_util::rt::TokioIo::new(tunnel);
        let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
            if io.write_all(&buf[..n]).await.is_err() || seen.ends_with(END) {
                break;
            }
        }
    });
    let mut res = http::Response::new(crate::body::Body::empty());
    *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut().insert(http::header::UPGRADE, protocol);
    res.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    res
}

/// `/echo`: what the service read of the request body; with an
/// `x-echo-trailers` field, the answer is chunked and ends with trailers
/// (`Trailer` names two of its three), so that whether they reach the client
/// shows too.
async fn echo(req: http::Request<hyper::body::Incoming>) -> http::Response<crate::body::Body> {
    use http_body_util::BodyExt;
    let trailers = req.headers().contains_key("x-echo-trailers");
    let framing = ["content-length", "transfer-encoding"].map(|name| {
        let values: Vec<_> = req.headers().get_all(name).iter().collect();
        format!("{name}: {values:?}\n")
    });
    let mut text = framing.concat();
    match req.into_body().collect().await {
        Ok(body) => {
            let trailers = body.trailers().cloned();
            let data = body.to_bytes();
            text.push_str(&format!("data: {:?}\ntrailers: {trailers:?}\n", data));
        }
        Err(e) => text.push_str(&format!("body failed: {e}\n")),
    }
    if !trailers {
        return crate::response::text(200, text);
    }
    let mut fields = http::HeaderMap::new();
    for (name, value) in [("x-sum", "1"), ("content-type", "x/y"), ("x-unnamed", "2")] {
        fields.insert(name, http::HeaderValue::from_static(value));
    }
    let frames = [
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(text))),
        Ok(hyper::body::Frame::trailers(fields)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let mut res = http::Response::new(crate::body::Body::stream(body));
    res.headers_mut().insert(
        http::header::TRAILER,
        http::HeaderValue::from_static("x-sum, content-type"),
    );
    res
}

/// The request that ends every input: it asks to close.
const END: &[u8] = b"GET /end HTTP/1.1\r\nHost: end\r\nConnection: close\r\n\r\n";

/// Feeds `input` to sitio as one client connection, followed by a request that
/// asks to close (so complete inputs end fast; incomplete ones end by the short
/// header timeout), and returns every byte sitio sent back. Panics only if
/// sitio does.
pub fn serve_bytes(input: &[u8]) -> Vec<u8> {
    serve_with(input, true, Chain::ErrorPages)
}

/// [`serve_bytes`] with hyper's server side serving every request (sitio's
/// own, `h1::serve`, off): the reference the new server side is held to.
pub fn serve_bytes_by_hyper(input: &[u8]) -> Vec<u8> {
    serve_with(input, false, Chain::ErrorPages)
}

/// The decorators a run serves with.
#[derive(Debug, Clone, Copy)]
enum Chain {
    /// Access log and error pages: a response hook reads every response
    /// head, so the service's heads are read into field maps.
    ErrorPages,
    /// Access log only: no response hook, so sitio's own side takes the
    /// service's heads as the client's lines (`upstream::h1::lines`).
    NoResponseHook,
}

/// Whether sitio sends the same bytes for `input` with its own HTTP/1
/// server side as with hyper's (the `date` values aside, and the reason
/// sitio gives for refusing a request: see [`normalised`]); `Err` shows both.
///
/// One difference is allowed, at the end: where the own side's guard
/// refuses a request (400, connection closed), hyper's side may have
/// forwarded it and closed the connection after its answer. That is a head
/// with both `Content-Length` and `Transfer-Encoding`, pipelined behind
/// another in one read: with hyper's side, `head_scan` reads the raw fields
/// of the first head of a read only, hyper drops the length, and the guard
/// sees chunked framing alone; hyper closes the connection after such a
/// request. The own side reads every head's raw fields, and the guard
/// refuses it as it refuses any head with both (found by the `server_side`
/// fuzz target).
///
/// Another, at the end too: where the own side refuses a request whose
/// chunked body is not valid (400, "malformed request body"), hyper's side
/// may have relayed the service's answer, given before the fault was read,
/// and closed the connection. The own side decodes what it read of a body
/// at once (`client_body`); hyper's reads it frame by frame as the service
/// connection takes it, and a service that answers without reading the
/// body (the demo's 404) wins that race (found by the `server_side` fuzz
/// target).
///
/// Served twice: with a response hook in the chain (error pages), and with
/// none, where the own side sends the service's heads as lines while
/// hyper's sends them from a map.
pub fn served_alike(input: &[u8]) -> Result<(), String> {
    for chain in [Chain::ErrorPages, Chain::NoResponseHook] {
        let own_raw = serve_with(input, true, chain);
        let hyper = serve_with(input, false, chain);
        let (own, hyper) = (normalised(&own_raw), normalised(&hyper));
        let allowed = |own: &str, hyper: &str| {
            refused_where_hyper_closed(own, hyper)
                || unparsed_after_http10(own, hyper)
                || body_refused_where_hyper_answered(&own_raw, own, hyper)
        };
        if own != hyper && !allowed(&own, &hyper) {
            return Err(format!("{chain:?}\nown:\n{own}\nhyper:\n{hyper}"));
        }
    }
    Ok(())
}

/// The allowed difference of [`served_alike`]: the same responses up to
/// the last, which is the guard's refusal in `own` and a response with
/// `connection: close` in `hyper`.
fn refused_where_hyper_closed(own: &str, hyper: &str) -> bool {
    last_differs(own, hyper).is_some_and(|(own_last, hyper_last, _)| {
        own_last.ends_with("<refused by the guard>")
            && hyper_last
                .split("\r\n\r\n")
                .next()
                .is_some_and(|head| head.contains("\r\nconnection: close"))
    })
}

/// The allowed difference of [`served_alike`] for a chunked body that is
/// not valid: the same responses up to the last, which is the own side's
/// refusal of the body (`own_raw`, before [`normalised`]) and anything in
/// `hyper`, after which neither sent more.
fn body_refused_where_hyper_answered(own_raw: &[u8], own: &str, hyper: &str) -> bool {
    let raw = String::from_utf8_lossy(own_raw);
    let refused_body = responses(&raw)
        .last()
        .is_some_and(|last| last.contains("<p>malformed request body</p>"));
    refused_body
        && last_differs(own, hyper)
            .is_some_and(|(own_last, _, _)| own_last.ends_with("<refused by the guard>"))
}

/// When `own` and `hyper` hold the same responses up to the last: both
/// last ones, and the one before them (if any).
fn last_differs<'a>(own: &'a str, hyper: &'a str) -> Option<(&'a str, &'a str, Option<&'a str>)> {
    let (own, hyper) = (responses(own), responses(hyper));
    let ((own_last, own_before), (hyper_last, hyper_before)) =
        (own.split_last()?, hyper.split_last()?);
    (own_before == hyper_before).then(|| (*own_last, *hyper_last, own_before.last().copied()))
}

/// The other allowed difference of [`served_alike`]: the same responses up
/// to the last, hyper's `400` to a head it cannot parse, which it sends as
/// `HTTP/1.0` without `connection: close` when the connection's previous
/// request was HTTP/1.0. The own side hands such a head to a fresh hyper
/// connection, which answers `HTTP/1.1` with `connection: close`. Both close
/// the connection after it (found by the `server_side` fuzz target; older
/// than the own side's lines, see `h1::tests`).
fn unparsed_after_http10(own: &str, hyper: &str) -> bool {
    last_differs(own, hyper).is_some_and(|(own_last, hyper_last, before)| {
        let as_http10 = own_last
            .strip_prefix("HTTP/1.1 400 Bad Request\r\n")
            .map(|rest| rest.replacen("connection: close\r\n", "", 1));
        before.is_some_and(|r| r.starts_with("HTTP/1.0 "))
            && as_http10
                .is_some_and(|rest| hyper_last == format!("HTTP/1.0 400 Bad Request\r\n{rest}"))
    })
}

/// `text` cut where each response begins: at a status line (`HTTP/1.x`,
/// a space, three digits, a space), not at any `HTTP/1.` a page mentions.
fn responses(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let starts = text
        .match_indices("HTTP/1.")
        .map(|(at, _)| at)
        .filter(|&at| {
            let line = &b[at..b.len().min(at + 13)];
            line.len() == 13
                && line[7].is_ascii_digit()
                && line[8] == b' '
                && line[9..12].iter().all(u8::is_ascii_digit)
                && line[12] == b' '
        });
    let mut cuts: Vec<usize> = starts.collect();
    if cuts.first() != Some(&0) {
        cuts.insert(0, 0);
    }
    cuts.push(text.len());
    cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// `bytes` as text, with every `date` value blanked, and each response of
/// sitio's guard (`sitio-error: bad-request`, which closes the connection)
/// reduced to the fact of the refusal. Which status and reason a refusal
/// gives may differ, not whether it refuses: with hyper's server side, the
/// raw framing fields of a head pipelined behind another in one read are
/// not seen (`head_scan` reads only the first), so a head with both
/// `Content-Length` and `Transfer-Encoding` there is refused for its next
/// fault (two `Host` fields: 400; a coding other than chunked: 501); the own
/// side reads every head's raw fields (found by the `server_side` fuzz
/// target). The statuses of first heads are compared by `request_head`.
pub fn normalised(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut rest = &*text;
    while let Some(at) = rest.find("\r\ndate: ") {
        let value = at + "\r\ndate: ".len();
        out.push_str(&rest[..value]);
        out.push_str("<date>");
        rest = rest[value..]
            .find("\r\n")
            .map_or("", |end| &rest[value + end..]);
    }
    out.push_str(rest);
    let mut joined = String::with_capacity(out.len());
    for page in responses(&out) {
        let head = page.split("\r\n\r\n").next().unwrap_or_default();
        if head.contains("\r\nsitio-error: bad-request") {
            joined.push_str("HTTP/1.1 000 <refused by the guard>");
        } else {
            joined.push_str(page);
        }
    }
    joined
}

fn serve_with(input: &[u8], own_http1: bool, chain: Chain) -> Vec<u8> {
    let config = Config {
        target_port: service_port(),
        header_timeout: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(50),
        // A body that never ends (its length or its chunks promise more
        // than the input holds) ends as fast as an incomplete head does.
        body_timeout: Duration::from_millis(50),
        access_log: false,
        ..Config::default()
    };
    let decorators = Decorators::builder().with(AccessLog);
    let decorators = match chain {
        Chain::ErrorPages => decorators.with(
            ErrorPages::new()
                .not_found("<h1>404</h1>")
                .server_error("<h1>5xx</h1>"),
        ),
        Chain::NoResponseHook => decorators,
    }
    .build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tasks = tokio_util::task::TaskTracker::new();
        let Ok((shared, config, http)) = prepare(config, decorators, tasks) else {
            return Vec::new();
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let instance = Instance {
            shared,
            config,
            http,
            stop: stop_rx,
            own_http1,
        };
        let conn = tokio::spawn(serve_connection((instance, None), server, peer));
        let _ = client.write_all(input).await;
        let _ = client.write_all(END).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
        conn.abort();
        out
    })
}

/// The head limits of the default settings, read once.
fn default_limits() -> crate::h1::head::Limits {
    static LIMITS: OnceLock<crate::h1::head::Limits> = OnceLock::new();
    *LIMITS.get_or_init(|| crate::h1::head::Limits::of(&Config::default()))
}

/// What sitio does with a request: forwards it, or refuses it with a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent on to the service (whatever it answered).
    Forwarded,
    /// Refused by sitio with this status.
    Refused(u16),
    /// Waiting for more of the head.
    Incomplete,
    /// Closed without sending a byte. hyper does that when the bytes after
    /// a head it refuses start with the HTTP/2 preface: it reports the
    /// preface and writes no 400 (found by the `request_head` fuzz target).
    Closed,
}

/// The request head at the start of `input` read by sitio's own HTTP/1
/// parser (`h1::head`) with the guard behind it.
pub fn with_new_parser(input: &[u8]) -> Outcome {
    outcome_of(crate::h1::head::parse(
        &mut bytes::BytesMut::from(input),
        default_limits(),
    ))
}

/// What a parse decided, with the guard behind it.
fn outcome_of(
    parsed: Result<Option<crate::h1::head::RequestHead>, crate::h1::head::Refused>,
) -> Outcome {
    match parsed {
        Err(refused) => Outcome::Refused(refused.status.as_u16()),
        Ok(None) => Outcome::Incomplete,
        Ok(Some(head)) => match crate::guard::check(&head.parts, head.raw) {
            Err(rejection) => Outcome::Refused(rejection.status.as_u16()),
            Ok(_) => Outcome::Forwarded,
        },
    }
}

/// The request head at the start of `input` as the service gets it when it
/// goes on as the client's bytes (`splice`) and when its field map is
/// edited and encoded: the same request line and, name by name, the same
/// values in the same order. `Ok` too when the head is not whole, or is
/// one the splice leaves to the map.
pub fn spliced_alike(input: &[u8]) -> Result<(), String> {
    crate::h1::splice_alike::check(input).map(|_| ())
}

/// The first request head of `input` as both parsers read it, with a body
/// that ends as its framing says (the body's decoding is not the head
/// parser's: [`served_alike`] compares it): `(new, today)`, or `None`
/// while the head is incomplete or its body too long to supply.
pub fn head_outcomes(input: &[u8]) -> Option<(Outcome, Outcome)> {
    use crate::h1::head::BodyFraming;
    let mut buf = bytes::BytesMut::from(input);
    let parsed = crate::h1::head::parse(&mut buf, default_limits());
    let mut request = input.to_vec();
    if let Ok(Some(head)) = &parsed {
        request.truncate(input.len() - buf.len());
        match head.body {
            BodyFraming::Empty => {}
            BodyFraming::Chunked => request.extend_from_slice(b"0\r\n\r\n"),
            BodyFraming::Length(n) if n <= 1024 => request.resize(request.len() + n as usize, b'x'),
            BodyFraming::Length(_) => return None,
        }
    }
    let new = outcome_of(parsed);
    (new != Outcome::Incomplete).then(|| (new, as_sitio_runs(&request)))
}

/// What sitio with hyper's server side (hyper's parser, the guard) does
/// with the first request of `input` ([`serve_bytes_by_hyper`]): a refusal is
/// sitio's when it names itself in `sitio-error` (the guard's) or is bare,
/// with no content type and no body (hyper's own).
pub fn as_sitio_runs(input: &[u8]) -> Outcome {
    let out = serve_bytes_by_hyper(input);
    if out.is_empty() {
        return Outcome::Closed;
    }
    let text = String::from_utf8_lossy(&out);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(status) = head
        .strip_prefix("http/1.1 ")
        .or_else(|| head.strip_prefix("http/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return Outcome::Incomplete;
    };
    let sitios = head.contains("\r\nsitio-error: bad-request")
        || (!head.contains("\r\ncontent-type:") && head.contains("\r\ncontent-length: 0"));
    if sitios && status >= 400 {
        Outcome::Refused(status)
    } else {
        Outcome::Forwarded
    }
}

#[cfg(test)]
mod tests {
    use super::serve_bytes;

    /// A page that mentions `HTTP/1.1` is one response, not two (found by
    /// the `server_side` fuzz target: the guard's page for a missing `Host`
    /// says "HTTP/1.1 request without Host").
    #[test]
    fn responses_are_cut_at_status_lines_only() {
        let page = "HTTP/1.1 400 Bad Request\r\nsitio-error: bad-request\r\n\r\n<p>HTTP/1.1 request without Host</p>";
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let both = format!("{ok}{page}");
        assert_eq!(super::responses(&both), [ok, page]);
        assert_eq!(
            super::normalised(both.as_bytes()),
            format!("{ok}HTTP/1.1 000 <refused by the guard>")
        );
    }

    #[test]
    fn the_fuzz_driver_proxies_and_refuses() {
        let ok = serve_bytes(b"GET /photos/1.svg HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(
            ok.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&ok)
        );
        let bad = serve_bytes(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(
            bad.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&bad)
        );
        let _ = serve_bytes(b"\x00\x01\x02 not http at all");
    }
}

/// The service connection's HTTP/1 codec reading `input` as a response
/// delivered in reads of at most `piece` bytes, then the end of the stream:
/// what it decoded (status, fields, body, trailers, reuse) or why it refused,
/// as text, so that two ways of splitting the same bytes can be compared.
pub fn decode_response(input: &[u8], piece: usize, head_request: bool) -> String {
    format!(
        "{:?}",
        crate::upstream::h1::replay::replay(input, piece, head_request)
    )
}

/// Whether the service's response head, read for the client with its
/// hop-by-hop fields noted as they pass (`upstream::h1::hops`), or kept as
/// the client's lines (`upstream::h1::lines`), is sent as
/// building the whole field map and normalising it would send it: `Err`
/// says how not.
pub fn response_head_alike(input: &[u8], head_request: bool) -> Result<(), String> {
    crate::upstream::h1::hops::alike(input, head_request).map(|_| ())
}

/// The service connection's codec step by step, for `benches/codec.rs`.
pub mod codec {
    use bytes::BytesMut;

    /// Reads one response from `input` as a keep-alive exchange does: the
    /// bytes land in the connection's buffer (a copy, as a read would
    /// make), the head is parsed into the response's parts, the body framed
    /// and split off. Returns the body's length; panics on a bad response.
    pub fn read_response(buf: &mut BytesMut, input: &[u8]) -> usize {
        use crate::upstream::h1::replay::read_once;
        buf.extend_from_slice(input);
        read_once(buf, None)
    }

    /// [`read_response`] as a proxied exchange reads it for the client:
    /// hop-by-hop fields left out as they pass, the fields put in a map
    /// (`as_lines` false) or kept as the client's lines (`as_lines` true,
    /// when no decorator reads response heads). `spare`: the map read
    /// into and given back, as the exchange reuses one.
    pub fn read_response_for_client(
        buf: &mut BytesMut,
        input: &[u8],
        as_lines: bool,
        spare: &mut Option<http::HeaderMap>,
    ) -> usize {
        use crate::upstream::h1::replay::read_once;
        buf.extend_from_slice(input);
        read_once(buf, Some((as_lines, spare)))
    }

    /// Decodes one chunked body from `input` as either side reads one
    /// (`chunked`): the bytes land in the buffer (a copy, as a read would
    /// make), then data and trailers are taken out frame by frame. Returns
    /// the data's length; panics on a body that is not whole and valid.
    pub fn read_chunked_body(buf: &mut BytesMut, input: &[u8]) -> usize {
        use crate::chunked::{Chunked, Decoded, Limits};
        buf.extend_from_slice(input);
        let mut decoder = Chunked::new(Limits::HYPER);
        let mut len = 0;
        loop {
            match decoder.decode(buf) {
                Ok(Decoded::Data(data)) => len += data.len(),
                Ok(Decoded::End | Decoded::Trailers(_)) => return len,
                other => panic!("not a whole chunked body: {other:?}"),
            }
        }
    }

    /// Encodes `head` (and an empty body) as the request the service gets.
    /// Returns the encoded length.
    pub fn write_request(head: http::request::Parts) -> usize {
        crate::upstream::h1::replay::encode_once(head)
    }

    /// Reads one request head from `input` as [`read_request_head`] does and
    /// makes the head the service gets: `as_bytes`, from the client's bytes
    /// (`splice`, as when no decorator has request hooks), else by editing
    /// the field map and encoding it. Returns the length of that head;
    /// panics on a head it refuses or cannot splice.
    pub fn forward_request_head(buf: &mut BytesMut, input: &[u8], as_bytes: bool) -> usize {
        use http::HeaderValue;
        buf.extend_from_slice(input);
        let limits = crate::h1::head::Limits {
            splice: as_bytes,
            ..super::default_limits()
        };
        let mut head = match crate::h1::head::parse(buf, limits) {
            Ok(Some(head)) => head,
            other => panic!("not one complete request head: {other:?}"),
        };
        let ip = HeaderValue::from_static("192.0.2.7");
        let service = HeaderValue::from_static("127.0.0.1:8087");
        if !as_bytes {
            crate::headers::to_upstream(&mut head.parts, &ip, false, &service);
            return crate::upstream::h1::replay::encode_once(head.parts);
        }
        let splice = head.splice.expect("a head that goes as bytes");
        let target = head.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let added = crate::splice::Added {
            service: &service,
            client_ip: &ip,
        };
        splice
            .encode(&head.wire, &head.parts.method, target, &added)
            .len()
    }

    /// Reads one request head from `input` with sitio's own server-side
    /// parser (`h1::head`), the bytes copied into the connection's buffer
    /// as a read would. Returns the number of header fields; panics on a
    /// head it refuses.
    pub fn read_request_head(buf: &mut BytesMut, input: &[u8]) -> usize {
        buf.extend_from_slice(input);
        match crate::h1::head::parse(buf, super::default_limits()) {
            Ok(Some(head)) => head.parts.headers.len(),
            other => panic!("not one complete request head: {other:?}"),
        }
    }

    /// A service's response head read for the client as lines (no field
    /// map; see [`read_response_for_client`]), for [`write_response_lines`].
    #[derive(Debug)]
    pub struct LinesHead {
        parts: http::response::Parts,
        lines: crate::upstream::Lines,
    }

    /// Reads the response head at the start of `input` as lines; panics on
    /// a head that is not kept as lines.
    pub fn read_lines_head(input: &[u8]) -> LinesHead {
        match crate::upstream::h1::head_for_client(input, false, true) {
            Some((parts, _, Some(lines))) => LinesHead { parts, lines },
            _ => panic!("not a head kept as lines"),
        }
    }

    /// Encodes `head` as the client gets it from sitio's own server side,
    /// for a keep-alive HTTP/1.1 GET and a body of `body_len` bytes (its
    /// `Content-Length`), into `out` (cleared first). Returns its length.
    pub fn write_response_lines(head: &LinesHead, body_len: u64, out: &mut Vec<u8>) -> usize {
        out.clear();
        let (asked, length) = keep_alive_get(body_len);
        crate::h1::response::encode_lines(&head.parts, &head.lines, asked, length, out)
            .expect("a plain head");
        out.len()
    }

    /// What a keep-alive HTTP/1.1 GET asks, and a body of `body_len` bytes.
    fn keep_alive_get(
        body_len: u64,
    ) -> (
        crate::h1::response::Asked,
        Option<crate::h1::response::BodyLength>,
    ) {
        use crate::h1::response::{Asked, BodyLength};
        let asked = Asked {
            head: false,
            keep_alive: true,
            http10: false,
            trailers: false,
            connect: false,
        };
        (asked, Some(BodyLength::Known(body_len)))
    }

    /// Encodes `head` as the client gets it from sitio's own server side
    /// (`h1::response`), for a keep-alive HTTP/1.1 GET and a body of
    /// `body_len` bytes, into `out` (cleared first). Returns its length.
    pub fn write_response_head(
        head: &mut http::response::Parts,
        body_len: u64,
        out: &mut Vec<u8>,
    ) -> usize {
        out.clear();
        let (asked, length) = keep_alive_get(body_len);
        crate::h1::response::encode_head(head, asked, length, out).expect("an encodable head");
        out.len()
    }
}
