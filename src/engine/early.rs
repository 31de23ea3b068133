//! Failures before any request exists (a request head that did not arrive
//! within the header timeout): they take the same path as an exchange's, so
//! decorators' error and response hooks (error pages for 408, a request id)
//! and sitio's one response builder answer them too, over an exchange with
//! no request in it (`GET /`, route `{none}`). The answer goes out as bytes
//! on a connection about to close.

use std::net::SocketAddr;

use bytes::Bytes;
use compact_str::CompactString;
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Request, Response};

use super::{Reached, decorator_made, respond};
use crate::body::Body;
use crate::decorator::{Decorators, Exchange, States};
use crate::error::ProxyError;
use crate::rescue;

/// The route such an exchange is known by.
const NO_ROUTE: &str = "{none}";

/// The answer to `err` for the client at `client`, as HTTP/1.1 bytes; `None`
/// when a hook wanted to wait or made a streamed body (the caller then
/// answers with its plain fallback).
pub(crate) fn answer(chain: &Decorators, err: &ProxyError, client: SocketAddr) -> Option<Bytes> {
    let (head, ()) = Request::get("/").body(()).ok()?.into_parts();
    let route = CompactString::const_new(NO_ROUTE);
    let mut ex = Exchange::new(&head, route, client, crate::clock::now());
    ex.error = Some(err.kind());
    let mut states = States::default();
    let n = chain.len();
    let res = (0..n)
        .rev()
        .find_map(|i| chain.error(i, err, &mut states, &mut ex))
        .map(decorator_made)
        .unwrap_or_else(|| rescue::failure(err, false));
    let reached = Reached::Response { upto: n, res };
    let res = respond(chain, reached, &mut states, &mut ex).now_or_never()?;
    serialise(res)
}

/// A response with a body in hand, as HTTP/1.1 bytes that end the connection.
fn serialise(res: Response<Body>) -> Option<Bytes> {
    let (mut head, body) = res.into_parts();
    let body = body.into_full()?;
    // The framing is this function's: the body in hand, then the close.
    for name in [CONTENT_LENGTH, CONNECTION, TRANSFER_ENCODING] {
        head.headers.remove(name);
    }
    let mut out = Vec::with_capacity(256 + body.len());
    crate::headers::write_head(&mut out, head.status, &head.headers);
    let framing = format!(
        "connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(framing.as_bytes());
    out.extend_from_slice(&body);
    Some(Bytes::from(out))
}
