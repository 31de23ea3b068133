//! Helpers to build the responses decorators and sitio itself send (the seed's
//! `server.respond(...)`). Framing headers (`Content-Length`, `Date`) are added by
//! the connection, so a decorator only says what to send.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::Body;

fn status_or_500(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A response with `status` and an HTML `body`.
pub fn html(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", body.into())
}

/// A response with `status` and a plain text `body`.
pub fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

/// An RFC 9457 `application/problem+json` response for `status`, with `detail`.
pub fn problem(status: u16, detail: &str) -> Response<Body> {
    let code = status_or_500(status);
    let body = serde_json::json!({
        "type": "about:blank",
        "title": code.canonical_reason().unwrap_or("Error"),
        "status": code.as_u16(),
        "detail": detail,
    });
    let mut res = with_type(status, "application/problem+json", body.to_string().into());
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn with_type(status: u16, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Body::full(body));
    *res.status_mut() = status_or_500(status);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
