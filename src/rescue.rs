//! The one place where failures become responses (linkerd's `HttpRescue`,
//! Pingora's `fail_to_proxy`).

use http::header::{CACHE_CONTROL, CONNECTION};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::error::ProxyError;
use crate::response;

/// The header that names why sitio answered instead of the service.
pub static SITIO_ERROR: HeaderName = HeaderName::from_static("sitio-error");

/// The response for a failure that happened before the service answered: a 502
/// or 504 page (or problem+json), with `sitio-error` naming the cause.
pub fn upstream_failure(err: &ProxyError, wants_json: bool) -> Response<Body> {
    let status = err.kind().status();
    let detail = match err.kind() {
        crate::ErrorKind::ConnectRefused => {
            "The service refused the connection: it is not listening."
        }
        crate::ErrorKind::ConnectReset => "The service reset the connection.",
        crate::ErrorKind::ConnectTimeout => "The service did not accept the connection in time.",
        crate::ErrorKind::UpstreamTimeout => "The service did not answer in time.",
        crate::ErrorKind::UpstreamClosed => "The service closed the connection without answering.",
        crate::ErrorKind::UpstreamProtocol => "The service sent an invalid HTTP response.",
        crate::ErrorKind::CircuitOpen => {
            "The service is failing; sitio gives it a moment before trying again."
        }
        _ => "The service could not be reached.",
    };
    let mut res = page(status, detail, wants_json);
    res.headers_mut().insert(
        SITIO_ERROR.clone(),
        HeaderValue::from_static(err.kind().as_str()),
    );
    res
}

/// The response to a request sitio refuses to forward. The connection is closed
/// after it, because a client that sent an ambiguous request cannot be trusted to
/// frame the next one.
pub fn reject(status: StatusCode, reason: &'static str, wants_json: bool) -> Response<Body> {
    let mut res = page(status, reason, wants_json);
    let headers = res.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(SITIO_ERROR.clone(), HeaderValue::from_static("bad-request"));
    res
}

fn page(status: StatusCode, detail: &str, wants_json: bool) -> Response<Body> {
    let mut res = if wants_json {
        response::problem(status.as_u16(), detail)
    } else {
        let reason = status.canonical_reason().unwrap_or("Error");
        response::html(
            status.as_u16(),
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
                 <body style=\"font-family:sans-serif;margin:3em\"><h1>{code} {reason}</h1><p>{detail}</p>\
                 <hr><small>sitio</small></body></html>\n",
                code = status.as_u16(),
            ),
        )
    };
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
