//! What sitio knows about one exchange (read-only to decorators), and the few
//! controls a hook may use on it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::error::ErrorKind;
use crate::filter::{BodyFilter, Filters};

/// One request/response exchange as sitio sees it. The facts (status, timings,
/// bytes, error) are set by the driver and only read by decorators, so no
/// decorator can hide a failure from another (the circuit breaker judges the
/// service's own status whatever the others did). Decorators keep their own
/// per-exchange data in their [`crate::Decorator::State`].
#[derive(Debug)]
pub struct Exchange {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) route: CompactString,
    pub(crate) version: Version,
    pub(crate) client_addr: SocketAddr,
    pub(crate) started: Instant,
    pub(crate) response_started: Option<Instant>,
    pub(crate) finished: Option<Instant>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) service_status: Option<StatusCode>,
    /// The `grpc-status` the client got (gRPC calls only).
    pub(crate) grpc_status: Option<u16>,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) error: Option<ErrorKind>,
    /// The client's `Accept` header, kept (a cheap clone) for [`Exchange::wants_json`].
    accept: Option<http::HeaderValue>,
    /// The request is a gRPC call (`content-type: application/grpc…`).
    grpc: bool,
    pub(crate) upgraded: bool,
    /// The upstream a request hook asked for (`None`: the service).
    pub(crate) upstream: Option<CompactString>,
    /// Set once the upstream is fixed; `set_upstream` no longer applies.
    pub(crate) upstream_fixed: bool,
    /// The decorator whose hook runs now.
    pub(crate) current: usize,
    /// Bit `i`: decorator `i`'s request hook ran.
    pub(crate) requested: u64,
    pub(crate) request_filters: Filters,
    pub(crate) response_filters: Filters,
}

impl Exchange {
    pub(crate) fn new(
        head: &http::request::Parts,
        route: CompactString,
        client_addr: SocketAddr,
        started: Instant,
    ) -> Self {
        Exchange {
            method: head.method.clone(),
            uri: head.uri.clone(),
            route,
            version: head.version,
            client_addr,
            started,
            response_started: None,
            finished: None,
            status: None,
            service_status: None,
            grpc_status: None,
            bytes_out: 0,
            bytes_in: 0,
            error: None,
            accept: accept_of(&head.headers),
            grpc: head
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
            upgraded: false,
            upstream: None,
            upstream_fixed: false,
            current: 0,
            requested: 0,
            request_filters: Filters::default(),
            response_filters: Filters::default(),
        }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target as the client sent it.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The request path, without the query string.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The route the path folds into (ids as `{id}`, query dropped), as used by
    /// statistics; bounded in number (`SITIO_MAX_ROUTES`).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The client's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The client's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// When the request head was read.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The status sent to the client, once the response head is final.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The status the service answered with, whatever decorators did with the
    /// response (`None` when it never answered).
    pub fn service_status(&self) -> Option<StatusCode> {
        self.service_status
    }

    /// For a gRPC call, the `grpc-status` the client got: from the trailers
    /// (final in `on_complete`), or from the head of a trailers-only answer
    /// (sitio's own failures are those). [`crate::grpc::code_name`] names it.
    pub fn grpc_status(&self) -> Option<u16> {
        self.grpc_status
    }

    /// True when the service failed this exchange, whatever decorators made
    /// of its answer: it could not be reached or did not answer in time, it
    /// answered with a 5xx, or (gRPC) its call ended with a status whose
    /// HTTP equivalent is a 5xx (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED…,
    /// see [`crate::grpc::is_server_error`]). What the circuit breaker, the
    /// A/B guard and crash notifications judge by (in `on_complete`).
    pub fn service_failed(&self) -> bool {
        self.error
            .is_some_and(|e| e.blame() == crate::error::Blame::Upstream)
            || self.service_status.is_some_and(|s| {
                s.is_server_error() || self.grpc_status.is_some_and(crate::grpc::is_server_error)
            })
    }

    /// Response body bytes sent to the client.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Request body bytes read from the client (final in `on_complete`).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// The failure, if the exchange failed.
    pub fn error(&self) -> Option<ErrorKind> {
        self.error
    }

    /// True when the exchange became a two-way tunnel (`101 Switching Protocols`).
    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// The name of the upstream the request goes (or went) to; `"service"`
    /// for the decorated service on `TARGET_PORT`.
    pub fn upstream(&self) -> &str {
        self.upstream.as_deref().unwrap_or(super::chain::SERVICE)
    }

    /// True for a gRPC call: sitio's own failures are then gRPC statuses
    /// (trailers-only responses), never pages.
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// True when the client asked for JSON rather than HTML, so generated pages
    /// should be `application/problem+json`. Worked out only when asked.
    pub fn wants_json(&self) -> bool {
        self.accept
            .as_ref()
            .is_some_and(crate::content::accept_prefers_json)
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
    /// answered first; with [`crate::Decorator::ON_REQUEST`] `false`: when
    /// it would have run). Lets `on_complete` pair up with `on_request`.
    pub fn request_hook_ran(&self) -> bool {
        self.requested & (1u64 << self.current) != 0
    }

    /// From `on_request`: send this request to the upstream registered under
    /// `name` ([`crate::DecoratorsBuilder::upstream`]) instead of the service;
    /// the last call wins. An unknown name fails the exchange with a 500 that
    /// names it. Later calls (once the request is on its way) are ignored.
    pub fn set_upstream(&mut self, name: &str) {
        if !self.upstream_fixed {
            self.upstream = Some(CompactString::from(name));
        }
    }

    /// From `on_request` or `on_upstream_request`: run the request body
    /// through `filter` on its way to the upstream. Filters run in the order
    /// they were installed (outermost decorator first).
    pub fn filter_request_body(&mut self, filter: impl BodyFilter) {
        self.request_filters.push(self.current, Box::new(filter));
    }

    /// From `on_response`: run this response's body through `filter` on its
    /// way to the client. Filters run in the order they were installed
    /// (innermost decorator first); a decorator that replaces the response
    /// drops the filters inner decorators installed on the old one.
    pub fn filter_response_body(&mut self, filter: impl BodyFilter) {
        self.response_filters.push(self.current, Box::new(filter));
    }
}

fn accept_of(headers: &HeaderMap) -> Option<http::HeaderValue> {
    headers.get(http::header::ACCEPT).cloned()
}
