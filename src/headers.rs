//! Header rules for a proxy (RFC 9110 §7.6): hop-by-hop headers stop here, the
//! forwarding headers are added, `Host` is kept.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version, request, response};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Whether a `Connection` field lists `token` (case-insensitive).
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The comma-separated tokens of a header value, trimmed. On bytes: this
/// runs for the `Connection` header of most heads, and `str::split(char)`'s
/// searcher cost more than the whole comparison.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// The hop-by-hop headers of the fixed list, plus `Connection` (bit 0).
/// `Trailer` is end-to-end (RFC 9110 §6.6.2), and hyper sends only the
/// trailer fields it declares, so it is not here.
fn hop_by_hop_names() -> [&'static HeaderName; 6] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Whether `name` is one of the fixed hop-by-hop headers (or `Connection`).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_names().contains(&name)
}

const CONNECTION_BIT: u8 = 1;
const TE_BIT: u8 = 8;
const TRANSFER_ENCODING_BIT: u8 = 16;
const UPGRADE_BIT: u8 = 32;

/// What one pass over a head's names found: which hop-by-hop headers (bits of
/// [`hop_by_hop_names`]), and whether `Content-Length` and `Host` are there.
/// One pass comparing names is cheaper than a hashed lookup per name, and
/// most heads carry none of them or only `Connection`.
#[derive(Clone, Copy)]
struct Scan {
    hop: u8,
    content_length: bool,
    host: bool,
    expect: bool,
}

fn scan(headers: &HeaderMap) -> Scan {
    let names = hop_by_hop_names();
    let mut found = Scan {
        hop: 0,
        content_length: false,
        host: false,
        expect: false,
    };
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|h| *h == name) {
            found.hop |= 1 << i;
        } else if name == header::CONTENT_LENGTH {
            found.content_length = true;
        } else if name == header::HOST {
            found.host = true;
        } else if name == header::EXPECT {
            found.expect = true;
        }
    }
    found
}

/// Removes hop-by-hop headers: the fixed list and every header the
/// `Connection` header names. Returns whether `TE: trailers` was present.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let mask = scan(headers).hop;
    strip_found(headers, mask)
}

/// [`strip_hop_by_hop`] with the hop-by-hop `mask` already found by [`scan`].
fn strip_found(headers: &mut HeaderMap, mask: u8) -> bool {
    if mask == 0 {
        return false;
    }
    let mut trailers = false;
    if mask & TE_BIT != 0
        && let Some(te) = headers.get(header::TE)
    {
        trailers = tokens(te.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"trailers"));
    }
    if mask & CONNECTION_BIT != 0 {
        // `Connection: keep-alive` (what nearly every service sends) names a
        // header of the fixed list, so nothing is allocated for it.
        let mut named: Vec<HeaderName> = Vec::new();
        let named_tokens = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| tokens(v.as_bytes()));
        for token in named_tokens {
            // The usual tokens need no header name parsed: `keep-alive` and
            // `upgrade` name headers of the fixed list, removed below if the
            // scan found them (removing an absent one costs a hashed lookup).
            // `close` is parsed: a field of that name goes too (RFC 9110 §7.6.1).
            if token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"upgrade") {
                continue;
            }
            match HeaderName::from_bytes(token) {
                // What routes and frames the message is not an option of the
                // connection: `Connection: Host` must not strip the Host
                // (HAProxy and nginx keep it too).
                Ok(name) if name == header::HOST || name == header::CONTENT_LENGTH => {}
                Ok(name) => named.push(name),
                Err(_) => {}
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in hop_by_hop_names().into_iter().enumerate() {
        if mask & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    trailers
}

/// Turns the client's request head into the one sent to the service.
///
/// `isolate` asks the service to close the connection after this request: used
/// when the request's body has no defined meaning (e.g. GET with a body), so a
/// service that ignores it cannot read it as a second request.
///
/// `service` is the service's authority, the `Host` of an HTTP/1.0 request
/// that came without one (an HTTP/1.1 request without one was refused).
///
/// Returns whether the request asks to switch protocols (`Connection:
/// upgrade` and `Upgrade`), which is then forwarded.
pub(crate) fn to_upstream(
    head: &mut request::Parts,
    client_ip: &HeaderValue,
    isolate: bool,
    service: &HeaderValue,
) -> bool {
    let found = scan(&head.headers);
    // The scan saw whether `Upgrade` is there: no lookup for most requests.
    let upgrade = if found.hop & UPGRADE_BIT != 0 && connection_has(&head.headers, "upgrade") {
        head.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // The guard let through only `chunked`. The field itself is hop-by-hop,
    // but without it hyper would send a GET's body of unknown length as no
    // body at all.
    let chunked = found.hop & TRANSFER_ENCODING_BIT != 0;
    let trailers = strip_found(&mut head.headers, found.hop);
    // sitio answers `Expect: 100-continue` itself (as Envoy does): the client's
    // body is only read once sitio is ready to stream it.
    if found.expect {
        head.headers.remove(header::EXPECT);
    }

    // Absolute-form targets (RFC 9112 §3.2.2): the authority is the host.
    if let Some(authority) = head.uri.authority().cloned() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            head.headers.insert(header::HOST, host);
        }
        // An empty path is sent as `/` (RFC 9112 §3.2.1): `http://a?q`
        // goes as `/?q`, never as a target that starts with `?`.
        let pq = head.uri.path_and_query().map_or("", |p| p.as_str());
        let path = if pq.starts_with('/') {
            pq.to_owned()
        } else {
            format!("/{pq}")
        };
        if let Ok(uri) = path.parse::<Uri>() {
            head.uri = uri;
        }
    }

    let h = &mut head.headers;
    if chunked {
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    if found.content_length {
        canonical_length(h);
    }
    if !found.host && !h.contains_key(header::HOST) {
        h.insert(header::HOST, service.clone());
    }
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let upgrading = upgrade.is_some();
    if let Some(proto) = upgrade {
        h.insert(header::UPGRADE, proto);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if isolate {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    append_forwarded_for(h, client_ip);
    h.entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static("http"));
    // sitio speaks HTTP/1.1 to the service whatever the client speaks, so the
    // upstream connection can be kept alive and pooled.
    head.version = Version::HTTP_11;
    upgrading
}

/// Turns a head made for an HTTP/1.1 service (by [`to_upstream`]) into one
/// for an HTTP/2 service: no connection-specific fields (RFC 9113 §8.2.2),
/// and the target as scheme and authority (from `Host`) plus path.
pub(crate) fn for_h2(head: &mut request::Parts) {
    let h = &mut head.headers;
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(name);
    }
    if let Some(host) = h.remove(header::HOST) {
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) =
            format!("http://{}{path}", String::from_utf8_lossy(host.as_bytes())).parse()
        {
            head.uri = uri;
        }
    }
    head.version = Version::HTTP_2;
}

/// An HTTP/1.1 status line and `headers` as sent, without the blank line
/// that ends the head (for the few heads sitio writes itself: relayed 1xx,
/// answers on a connection hyper no longer drives).
pub(crate) fn write_head(out: &mut Vec<u8>, status: http::StatusCode, headers: &HeaderMap) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(out, headers);
}

/// The field lines of `headers` (`name: value` and CRLF each), as a head
/// or a trailer section carries them.
pub(crate) fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The length of [`write_fields`]' output.
pub(crate) fn fields_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// The client address as a header value; built once per connection.
pub(crate) fn ip_header_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds the client's address to `X-Forwarded-For`. Several fields of the
/// client's are one list (RFC 9110 §5.3), kept in their order; a value that
/// is blank or not visible ASCII is no address and is left out.
fn append_forwarded_for(h: &mut HeaderMap, ip: &HeaderValue) {
    let mut joined = String::new();
    for prev in h.get_all(&X_FORWARDED_FOR) {
        if let Ok(prev) = prev.to_str()
            && !prev.trim().is_empty()
        {
            joined.push_str(prev);
            joined.push_str(", ");
        }
    }
    let appended = if joined.is_empty() {
        // The common case: no allocation, the connection's value is shared.
        Some(ip.clone())
    } else {
        joined.push_str(ip.to_str().unwrap_or("unknown"));
        HeaderValue::from_str(&joined).ok()
    };
    if let Some(v) = appended {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// Rewrites `Content-Length` in plain decimal. The parser accepted the
/// sender's spelling (`0100`, `3, 3`); another parser may read it otherwise
/// (`0100` as octal), so the spelling never travels on, only the number.
fn canonical_length(h: &mut HeaderMap) {
    let mut values = h.get_all(header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return;
    };
    if plain_length(value.as_bytes()).is_some() && values.next().is_none() {
        return; // The common case: nothing to allocate.
    }
    // Values that do not agree are the parser's to refuse: left as they are.
    if let Ok(Some(n)) = content_length(h) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// The length a `Content-Length` value gives in its canonical form (decimal
/// digits, no leading zero, at most 19 of them, so it fits a `u64`); `None`
/// for any other form, which [`content_length`] reads or refuses.
pub(crate) fn plain_length(bytes: &[u8]) -> Option<u64> {
    let plain = !bytes.is_empty()
        && bytes.len() < 20
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1);
    plain.then(|| digits_value(bytes))
}

fn digits_value(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
}

/// The one length every `Content-Length` value (and every element of a
/// value's list) agrees on, `None` without the field; `Err` when a value is
/// not plain decimal digits or two disagree.
pub(crate) fn content_length(h: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for value in h.get_all(header::CONTENT_LENGTH) {
        for item in tokens(value.as_bytes()) {
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n = digits_value(item);
            if found.is_some_and(|f| f != n) {
                return Err(());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Turns the service's response head into the one sent to the client.
/// Returns false when the response's framing was ambiguous, so the service
/// connection must not carry another exchange.
pub(crate) fn to_client(head: &mut response::Parts) -> bool {
    let h = &mut head.headers;
    let found = scan(h);
    // RFC 9112 §6.3: with both, Transfer-Encoding frames the message (hyper
    // read it so); the length is dropped, or the client would wait for it.
    let ambiguous = found.hop & TRANSFER_ENCODING_BIT != 0 && found.content_length;
    if ambiguous {
        h.remove(header::CONTENT_LENGTH);
    } else if found.content_length {
        canonical_length(h);
    }
    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // The tunnel needs both; everything else hop-by-hop still goes.
        let upgrade = head.headers.get(header::UPGRADE).cloned();
        strip_found(&mut head.headers, found.hop);
        if let Some(proto) = upgrade {
            head.headers.insert(header::UPGRADE, proto);
        }
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        strip_found(&mut head.headers, found.hop);
    }
    head.version = Version::HTTP_11;
    !ambiguous
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let req = Request::get("/x")
            .header("host", "svc")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers, deflate")
            .header("x-forwarded-for", "10.0.0.1")
            .header("expect", "100-continue")
            .body(())
            .unwrap();
        let (mut head, ()) = req.into_parts();
        to_upstream(
            &mut head,
            &ip_header_value("127.0.0.1".parse().unwrap()),
            false,
            &HeaderValue::from_static("svc:1"),
        );
        let h = &head.headers;
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("expect").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["host"], "svc");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn an_absolute_target_with_an_empty_path_goes_in_origin_form_from_a_slash() {
        for (target, origin) in [
            ("http://o?/abs", "/?/abs"),
            ("http://o", "/"),
            ("http://o/p?q", "/p?q"),
        ] {
            let (mut head, ()) = Request::get(target).body(()).unwrap().into_parts();
            let ip = ip_header_value("127.0.0.1".parse().unwrap());
            to_upstream(&mut head, &ip, false, &HeaderValue::from_static("svc:1"));
            assert_eq!(head.uri.to_string(), origin, "{target}");
            assert_eq!(head.headers["host"], "o", "{target}");
        }
    }

    #[test]
    fn several_forwarded_for_fields_are_one_list_that_the_client_address_ends() {
        let req = Request::get("/x")
            .header("host", "svc")
            .header("x-forwarded-for", "203.0.113.1")
            .header("x-forwarded-for", "  ")
            .header("x-forwarded-for", "10.0.0.1, 10.0.0.2")
            .body(())
            .unwrap();
        let (mut head, ()) = req.into_parts();
        let ip = ip_header_value("127.0.0.1".parse().unwrap());
        to_upstream(&mut head, &ip, false, &HeaderValue::from_static("svc:1"));
        let all: Vec<_> = head.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["203.0.113.1, 10.0.0.1, 10.0.0.2, 127.0.0.1"]);
    }

    fn response_head(headers: &[(&str, &str)]) -> response::Parts {
        let mut res = http::Response::builder().status(200);
        for (name, value) in headers {
            res = res.header(*name, *value);
        }
        res.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_services_keep_alive_headers_stop_here_and_the_rest_passes() {
        let mut head = response_head(&[
            ("content-type", "text/plain"),
            ("Connection", "Keep-Alive"),
            ("keep-alive", "timeout=5"),
            ("content-length", "3"),
        ]);
        to_client(&mut head);
        let names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "content-length"]);
    }

    #[test]
    fn every_header_the_connection_header_names_goes() {
        let mut head = response_head(&[
            ("connection", "close, X-Internal"),
            ("x-internal", "secret"),
            ("close", "RFC 9110 §7.6.1: any field named by an option"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
        ]);
        to_client(&mut head);
        let h = &head.headers;
        assert!(h.get("x-internal").is_none() && h.get("connection").is_none());
        assert!(h.get("upgrade").is_none() && h.get("close").is_none());
        // `Trailer` is end-to-end.
        assert_eq!(h["trailer"], "x-checksum");
    }

    #[test]
    fn a_head_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut head = response_head(&[("etag", "\"1\""), ("x-a", "1"), ("x-a", "2")]);
        let before = head.headers.clone();
        to_client(&mut head);
        assert_eq!(head.headers, before);
    }

    #[test]
    fn lengths_travel_as_plain_decimal_and_host_always_goes() {
        let req = Request::post("/x")
            .header("content-length", "0100")
            .header("connection", "Host, Content-Length")
            .body(())
            .unwrap();
        let (mut head, ()) = req.into_parts();
        head.version = Version::HTTP_10;
        let ip = ip_header_value("::1".parse().unwrap());
        to_upstream(&mut head, &ip, false, &HeaderValue::from_static("svc:1"));
        assert_eq!(head.headers["content-length"], "100");
        assert_eq!(
            head.headers["host"], "svc:1",
            "1.0 without Host: the service's"
        );
        let mut res = response_head(&[("content-length", "7, 7")]);
        assert!(to_client(&mut res));
        assert_eq!(res.headers["content-length"], "7");
        let mut both = response_head(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
        assert!(!to_client(&mut both), "not reusable");
        assert!(both.headers.get("content-length").is_none());
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let req = Request::get("http://example.test:81/a?b=1")
            .header("host", "other")
            .body(())
            .unwrap();
        let (mut head, ()) = req.into_parts();
        to_upstream(
            &mut head,
            &ip_header_value("::1".parse().unwrap()),
            true,
            &HeaderValue::from_static("svc:1"),
        );
        assert_eq!(head.uri, "/a?b=1");
        assert_eq!(head.headers["host"], "example.test:81");
        assert_eq!(head.headers["connection"], "close");
        assert_eq!(head.headers["x-forwarded-for"], "::1");
    }
}
