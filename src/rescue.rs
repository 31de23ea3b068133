//! The one place where failures become responses (linkerd's `HttpRescue`,
//! Pingora's `fail_to_proxy`).

use http::header::{CACHE_CONTROL, CONNECTION, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};
use crate::response;

/// The header that names why sitio answered instead of the service.
pub(crate) static SITIO_ERROR: HeaderName = HeaderName::from_static("sitio-error");

/// The response for any failure before a response head, and the only place
/// that builds one: a page (or problem+json, as the client's `Accept` asks)
/// with the failure's status and `sitio-error` naming its kind. Requests sitio
/// refused also close their connection: a client that sent an ambiguous
/// request cannot be trusted to frame the next one.
pub(crate) fn failure(err: &ProxyError, wants_json: bool) -> Response<Body> {
    let kind = err.kind();
    let detail = match kind {
        ErrorKind::ConnectRefused => "The service refused the connection: it is not listening.",
        ErrorKind::ConnectReset => "The service reset the connection.",
        ErrorKind::ConnectTimeout => "The service did not accept the connection in time.",
        ErrorKind::UpstreamTimeout => "The service did not answer in time.",
        ErrorKind::UpstreamClosed => "The service closed the connection without answering.",
        ErrorKind::UpstreamProtocol => "The service sent an invalid HTTP response.",
        ErrorKind::CircuitOpen => {
            "The service is failing; sitio gives it a moment before trying again."
        }
        // The detail is the reason the client needs (and no secret).
        ErrorKind::BadRequest | ErrorKind::Refused | ErrorKind::FaultInjected => err.detail(),
        ErrorKind::Internal => "sitio failed while handling this request.",
        _ => "The service could not be reached.",
    };
    let mut res = page(err.status(), detail, wants_json);
    let headers = res.headers_mut();
    headers.insert(SITIO_ERROR.clone(), HeaderValue::from_static(err.cause()));
    if let Some(secs) = err.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if kind == ErrorKind::BadRequest {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
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
