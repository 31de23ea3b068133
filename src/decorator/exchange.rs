//! Per-exchange context shared by all decorators of one request/response.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use http::{Extensions, HeaderMap, Method, StatusCode, Uri, Version};

use crate::error::ErrorKind;

/// What sitio knows about one request/response exchange. Decorators read it in
/// every hook and may keep their own per-exchange state in [`Exchange::extensions`].
#[derive(Debug)]
pub struct Exchange {
    /// The request method.
    pub method: Method,
    /// The request target as the client sent it.
    pub uri: Uri,
    /// The route the path folds into (ids as `{id}`, query dropped), as used
    /// by statistics; bounded in number (`SITIO_MAX_ROUTES`).
    pub route: CompactString,
    /// The client's HTTP version.
    pub version: Version,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// When the request head was read.
    pub started: Instant,
    /// When the response head was handed to the client connection.
    pub response_started: Option<Instant>,
    /// When the last response byte was handed over (or the exchange failed).
    pub finished: Option<Instant>,
    /// The status sent to the client.
    pub status: Option<StatusCode>,
    /// The status the service answered with, before any decorator replaced
    /// the response (`None` when it never answered).
    pub service_status: Option<StatusCode>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// The failure, if the exchange failed.
    pub error: Option<ErrorKind>,
    /// The client's `Accept` header, kept (a cheap clone) for [`Exchange::wants_json`].
    accept: Option<http::HeaderValue>,
    /// True when the exchange became a two-way tunnel (`101 Switching Protocols`).
    pub upgraded: bool,
    /// Free room for decorators' own per-exchange state (allocates only when used).
    pub extensions: Extensions,
    pub(crate) current: usize,
    pub(crate) body_watchers: u64,
    pub(crate) requested: u64,
    pub(crate) delay: Duration,
}

impl Exchange {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        method: Method,
        uri: Uri,
        route: CompactString,
        version: Version,
        headers: &HeaderMap,
        client_addr: SocketAddr,
        started: Instant,
    ) -> Self {
        Exchange {
            method,
            uri,
            route,
            version,
            client_addr,
            started,
            response_started: None,
            finished: None,
            status: None,
            service_status: None,
            bytes_out: 0,
            bytes_in: 0,
            error: None,
            accept: headers.get(http::header::ACCEPT).cloned(),
            upgraded: false,
            extensions: Extensions::new(),
            current: 0,
            body_watchers: 0,
            requested: 0,
            delay: Duration::ZERO,
        }
    }

    /// True when the client asked for JSON rather than HTML, so generated pages
    /// should be `application/problem+json`. Worked out only when asked.
    pub fn wants_json(&self) -> bool {
        self.accept
            .as_ref()
            .is_some_and(crate::content::accept_prefers_json)
    }

    /// The request path, without the query string.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// Time from the request head to the last response byte, once finished.
    pub fn latency(&self) -> Option<Duration> {
        self.finished.map(|t| t.duration_since(self.started))
    }

    /// Time from the request head to the response head, once it was sent.
    pub fn time_to_first_byte(&self) -> Option<Duration> {
        self.response_started
            .map(|t| t.duration_since(self.started))
    }

    /// True when the calling decorator's `on_request` ran for this exchange
    /// (it does not when the guard refused the request or an outer decorator
    /// answered first). Lets `on_complete` pair up with `on_request`.
    pub fn request_hook_ran(&self) -> bool {
        self.requested & (1u64 << self.current) != 0
    }

    /// From `on_request`: wait `d` before calling the service (delays of
    /// several decorators add up). Lets hooks stay synchronous.
    pub fn delay_by(&mut self, d: Duration) {
        self.delay += d;
    }

    /// Ask for [`crate::Decorator::on_body_chunk`] calls on this exchange's
    /// response body. Call it from `on_response`; exchanges nobody watches stream
    /// their bodies untouched.
    pub fn watch_body(&mut self) {
        self.body_watchers |= 1u64 << self.current;
    }
}
