//! Request checks beyond what the HTTP/1 parser enforces: anything that could
//! make sitio and the service disagree on where a request ends (request
//! smuggling) is refused before a byte reaches the service.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version, request};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The status sent to the client.
    pub status: StatusCode,
    /// What was wrong, for the log and the error page.
    pub reason: &'static str,
    /// The kind of refusal, as counted in `/stats` and `/metrics`.
    pub kind: Refusal,
}

/// Kinds of refused requests, each counted under its [`Refusal::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A head the HTTP/1 parser could not read (400).
    Malformed,
    /// A head over `SITIO_MAX_HEADER_BYTES` or `SITIO_MAX_HEADERS` (431).
    HeadTooLarge,
    /// A head not complete within `SITIO_HEADER_TIMEOUT` (408).
    HeaderTimeout,
    /// Ambiguous message framing: both lengths, lookalike names, bad `Transfer-Encoding`.
    Framing,
    /// A transfer coding other than chunked (501).
    TransferCoding,
    /// A missing or repeated `Host`.
    Host,
    /// A request-target that is not origin-form, absolute-form or `OPTIONS *`.
    Target,
    /// A method a reverse proxy does not serve (`CONNECT`, 405).
    Method,
    /// A body where none is allowed (HEAD, TRACE).
    BodyNotAllowed,
    /// A request body that could not be read to its end (bad chunk, short body).
    MalformedBody,
    /// An HTTP/2 connection closed for abuse: floods of resets (rapid reset),
    /// CONTINUATION or control frames, or of streams reset once started.
    Http2Abuse,
}

impl Refusal {
    /// Every kind, in the order `/stats` and `/metrics` list them.
    pub(crate) const ALL: [Refusal; 11] = [
        Refusal::Malformed,
        Refusal::HeadTooLarge,
        Refusal::HeaderTimeout,
        Refusal::Framing,
        Refusal::TransferCoding,
        Refusal::Host,
        Refusal::Target,
        Refusal::Method,
        Refusal::BodyNotAllowed,
        Refusal::MalformedBody,
        Refusal::Http2Abuse,
    ];

    /// The status a client gets for it.
    pub(crate) const fn status(self) -> StatusCode {
        match self {
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::HeaderTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::HeadTooLarge => "head-too-large",
            Refusal::HeaderTimeout => "header-timeout",
            Refusal::Framing => "framing",
            Refusal::TransferCoding => "transfer-coding",
            Refusal::Host => "host",
            Refusal::Target => "target",
            Refusal::Method => "method",
            Refusal::BodyNotAllowed => "body-not-allowed",
            Refusal::MalformedBody => "malformed-body",
            Refusal::Http2Abuse => "http2-abuse",
        }
    }
}

const fn refuse(kind: Refusal, reason: &'static str) -> Rejection {
    Rejection {
        status: kind.status(),
        reason,
        kind,
    }
}

/// How an accepted request must be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The request carries a body its method gives no meaning to: send it on a
    /// connection of its own that the service closes afterwards.
    pub isolate: bool,
}

/// What the connection saw in the raw request head, before the parser
/// normalised it (hyper silently drops `Content-Length` when
/// `Transfer-Encoding` is also present).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawFraming {
    /// A `Content-Length` line was present.
    pub content_length: bool,
    /// A `Transfer-Encoding` line was present.
    pub transfer_encoding: bool,
}

/// Checks a parsed request head.
pub(crate) fn check(head: &request::Parts, raw: RawFraming) -> Result<Verdict, Rejection> {
    if raw.content_length && raw.transfer_encoding {
        return Err(refuse(
            Refusal::Framing,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let h = &head.headers;
    if head.method == Method::CONNECT {
        return Err(refuse(
            Refusal::Method,
            "CONNECT is not supported by a reverse proxy",
        ));
    }
    check_target(head)?;
    check_host(head.version, h)?;
    check_suspicious_names(h)?;
    let has_te = h.contains_key(header::TRANSFER_ENCODING);
    let content_length = h.get(header::CONTENT_LENGTH);
    if has_te && content_length.is_some() {
        return Err(refuse(
            Refusal::Framing,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if has_te {
        check_transfer_encoding(h)?;
    }
    let has_body = has_te
        || content_length
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if has_body && (head.method == Method::HEAD || head.method == Method::TRACE) {
        // TRACE must not carry content (RFC 9110 §9.3.8); for HEAD it would be
        // read by no one and left on the connection.
        return Err(refuse(
            Refusal::BodyNotAllowed,
            "HEAD or TRACE request with a body",
        ));
    }
    let body_has_meaning = !matches!(head.method, Method::GET | Method::DELETE | Method::OPTIONS);
    Ok(Verdict {
        isolate: has_body && !body_has_meaning,
    })
}

fn check_host(version: Version, h: &HeaderMap) -> Result<(), Rejection> {
    let mut hosts = h.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(refuse(Refusal::Host, "more than one Host header")),
        (None, _) if version == Version::HTTP_11 => {
            Err(refuse(Refusal::Host, "HTTP/1.1 request without Host"))
        }
        _ => Ok(()),
    }
}

/// RFC 9112 §3.2: origin-form starts with `/`; absolute-form names an http(s)
/// URL; `*` goes only with OPTIONS; authority-form only with CONNECT, which
/// is refused anyway. Anything else would be forwarded as something it is not
/// (`GET evil.example` as `GET /` with that Host).
fn check_target(head: &request::Parts) -> Result<(), Rejection> {
    let uri = &head.uri;
    let ok = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(_)) => {
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        }
        (Some(_), None) | (None, Some(_)) => false,
        (None, None) => {
            let path = uri.path();
            path.starts_with('/') || (path == "*" && head.method == Method::OPTIONS)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(
            Refusal::Target,
            "request-target must be a path, an http URL, or * with OPTIONS",
        ))
    }
}

/// Names that some servers fold into `Content-Length` or `Transfer-Encoding`
/// (`Content_Length`, `Transfer.Encoding`...) but sitio would not.
fn check_suspicious_names(h: &HeaderMap) -> Result<(), Rejection> {
    for name in h.keys() {
        let s = name.as_str();
        if !(13..=24).contains(&s.len()) || !(s.starts_with('c') || s.starts_with('t')) {
            continue;
        }
        if s == "content-length" || s == "transfer-encoding" {
            continue;
        }
        let folded: String = s.chars().filter(char::is_ascii_alphanumeric).collect();
        if folded == "contentlength" || folded == "transferencoding" {
            return Err(refuse(
                Refusal::Framing,
                "header name resembling Content-Length or Transfer-Encoding",
            ));
        }
    }
    Ok(())
}

/// Only `chunked` (next to no-op `identity`) is accepted: other codings would
/// be silently lost when the hop-by-hop `Transfer-Encoding` header is
/// re-written (RFC 9112 §6.1: 501).
fn check_transfer_encoding(h: &HeaderMap) -> Result<(), Rejection> {
    let mut codings = 0;
    for value in h.get_all(header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(refuse(Refusal::Framing, "invalid Transfer-Encoding"));
        };
        for coding in value.split(',') {
            let coding = coding.trim_matches([' ', '\t']);
            if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
                continue;
            }
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(refuse(
                    Refusal::TransferCoding,
                    "Transfer-Encoding other than chunked",
                ));
            }
            codings += 1;
        }
    }
    if codings != 1 {
        return Err(refuse(
            Refusal::Framing,
            "Transfer-Encoding must be exactly chunked",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn head(builder: http::request::Builder) -> request::Parts {
        builder.body(()).unwrap().into_parts().0
    }

    fn check_parsed(head: &request::Parts) -> Result<Verdict, Rejection> {
        check(head, RawFraming::default())
    }

    #[test]
    fn refuses_both_lengths_even_when_the_parser_dropped_one() {
        let te = head(
            Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "chunked"),
        );
        let raw = RawFraming {
            content_length: true,
            transfer_encoding: true,
        };
        assert_eq!(check(&te, raw).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        let both = head(
            Request::post("/")
                .header("host", "a")
                .header("content-length", "3")
                .header("transfer-encoding", "chunked"),
        );
        assert_eq!(
            check_parsed(&both).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let twice = head(
            Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "chunked")
                .header("transfer-encoding", "chunked"),
        );
        assert!(check_parsed(&twice).is_err());
        let gzip = head(
            Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "gzip, chunked"),
        );
        assert_eq!(
            check_parsed(&gzip).unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
        let lookalike = head(
            Request::post("/")
                .header("host", "a")
                .header("content_length", "3"),
        );
        assert!(check_parsed(&lookalike).is_err());
        let no_host = head(Request::get("/"));
        assert!(check_parsed(&no_host).is_err());
    }

    #[test]
    fn refusal_kinds_are_listed_in_declaration_order() {
        // Telemetry indexes its counters by the discriminant.
        for (i, kind) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn request_targets_other_than_the_four_forms_are_refused() {
        let target = |method: Method, uri: &str| {
            let parsed: http::Uri = uri.parse().unwrap();
            check_parsed(&head(
                Request::builder()
                    .method(method)
                    .uri(parsed)
                    .header("host", "a"),
            ))
            .map_err(|r| r.kind)
        };
        assert!(target(Method::GET, "/a?b").is_ok());
        assert!(target(Method::GET, "http://a.example/x").is_ok());
        assert!(target(Method::OPTIONS, "*").is_ok());
        for bad in [
            "evil.example",
            "!",
            "*",
            "evil.example:80",
            "ftp://a.example/x",
        ] {
            assert_eq!(target(Method::GET, bad), Err(Refusal::Target), "{bad}");
        }
    }

    #[test]
    fn accepts_ordinary_requests_and_isolates_meaningless_bodies() {
        let post = head(
            Request::post("/")
                .header("host", "a")
                .header("content-length", "3")
                .header("x-custom_header", "ok"),
        );
        assert_eq!(check_parsed(&post), Ok(Verdict { isolate: false }));
        let get_body = head(
            Request::get("/")
                .header("host", "a")
                .header("content-length", "22"),
        );
        assert_eq!(check_parsed(&get_body), Ok(Verdict { isolate: true }));
        let get_zero = head(
            Request::get("/")
                .header("host", "a")
                .header("content-length", "0"),
        );
        assert_eq!(check_parsed(&get_zero), Ok(Verdict { isolate: false }));
    }
}
