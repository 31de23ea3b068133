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
    let mut res = page(err.status(), public_detail(err), wants_json);
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

/// What the client is told of a failure: the reason it needs, and no
/// address or other detail of the service's.
fn public_detail(err: &ProxyError) -> &str {
    match err.kind() {
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
    }
}

/// [`failure`] in the form `ex`'s client reads: a gRPC status for a gRPC
/// call, else a page or problem+json.
pub(crate) fn failure_for(err: &ProxyError, ex: &crate::Exchange) -> Response<Body> {
    if ex.is_grpc() {
        return grpc_failure(err);
    }
    failure(err, ex.wants_json())
}

/// A gRPC "trailers-only" answer (HTTP 200, no body, `grpc-status` in the
/// head): what gRPC clients understand, where an HTML page would be a
/// protocol error to them.
fn grpc_failure(err: &ProxyError) -> Response<Body> {
    let code = grpc_code(err);
    let mut res = Response::new(Body::empty());
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    crate::grpc::status_fields(headers, code, public_detail(err), err.cause());
    if let Some(secs) = err.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// The gRPC status for a failure (gRPC's own table where it has one: an
/// unreachable service is UNAVAILABLE, a timeout DEADLINE_EXCEEDED, a rate
/// limit RESOURCE_EXHAUSTED).
fn grpc_code(err: &ProxyError) -> u16 {
    use crate::grpc::{
        DEADLINE_EXCEEDED, INTERNAL, INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
        UNAUTHENTICATED, UNAVAILABLE, UNIMPLEMENTED,
    };
    match err.kind() {
        ErrorKind::UpstreamTimeout => DEADLINE_EXCEEDED,
        ErrorKind::BadRequest => INVALID_ARGUMENT,
        ErrorKind::Internal | ErrorKind::UpstreamProtocol => INTERNAL,
        ErrorKind::ConnectRefused
        | ErrorKind::ConnectReset
        | ErrorKind::ConnectTimeout
        | ErrorKind::ConnectFailed
        | ErrorKind::UpstreamClosed
        | ErrorKind::CircuitOpen => UNAVAILABLE,
        _ => match err.status().as_u16() {
            401 => UNAUTHENTICATED,
            403 => PERMISSION_DENIED,
            404 => UNIMPLEMENTED,
            408 | 504 => DEADLINE_EXCEEDED,
            429 => RESOURCE_EXHAUSTED,
            400..=499 => INVALID_ARGUMENT,
            502 | 503 => UNAVAILABLE,
            _ => INTERNAL,
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(err: ProxyError) -> (String, String) {
        let res = grpc_failure(&err);
        assert_eq!(res.status(), StatusCode::OK, "trailers-only: HTTP 200");
        let h = res.headers();
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
        (get("grpc-status"), get("grpc-message"))
    }

    #[test]
    fn failures_become_the_grpc_statuses_clients_expect() {
        let down = ProxyError::new(ErrorKind::ConnectRefused, "connect to 10.0.0.1:80: refused");
        let (code, message) = grpc(down);
        assert_eq!(code, "14", "UNAVAILABLE");
        assert!(
            !message.contains("10.0.0.1"),
            "no service address: {message}"
        );
        assert_eq!(
            grpc(ProxyError::new(ErrorKind::UpstreamTimeout, "slow")).0,
            "4"
        );
        let limited = ProxyError::refused(StatusCode::TOO_MANY_REQUESTS, "over 100/s");
        assert_eq!(grpc(limited), ("8".into(), "over 100/s".into()));
        let who = ProxyError::refused(StatusCode::UNAUTHORIZED, "no token");
        assert_eq!(grpc(who).0, "16", "UNAUTHENTICATED");
        let odd = ProxyError::refused(StatusCode::FORBIDDEN, "100% über");
        assert_eq!(grpc(odd), ("7".into(), "100%25 %C3%BCber".into()));
    }
}
