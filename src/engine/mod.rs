//! The exchange driver: the one place that owns the phase order of an
//! exchange and every framework fact in it (status, service status, timings,
//! bytes, error). It runs over a [`Leg`], the seam to the protocol: today's
//! HTTP/1 connection (`proxy`) and the in-memory service of
//! `Decorators::simulate` run the very same phases.
//!
//! ```text
//!  guard ─▶ on_request (outermost first) ─▶ upstream choice ─▶ forwarding edits
//!        ─▶ on_upstream_request ─▶ send ─▶ on_response (innermost first)
//!        ─▶ response body (filters) ─▶ on_complete (innermost first)
//!  any failure before a head ─▶ on_error (innermost first) ─▶ rescue ─▶ on_response
//! ```

mod early;
mod memory;
mod tracked;

pub(crate) use early::answer as early_answer;
pub use memory::Simulated;
pub(crate) use tracked::Tracked;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use compact_str::CompactString;
use futures_util::FutureExt;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response, request};

use crate::body::Body;
use crate::decorator::{Action, Decorators, Exchange, Filters, States};
use crate::error::{Blame, ErrorKind, ProxyError};
use crate::guard::{self, RawFraming, Refusal};
use crate::upstream::RequestBodyState;
use crate::{headers, rescue};

/// What the driver needs from the protocol side of one client connection.
pub(crate) trait Leg: Send + Sync + Sized + 'static {
    /// The request body as the connection delivers it.
    type In: Send + 'static;
    /// What forwarding edits leave for the send (e.g. an upgrade handle).
    type Forward: Send;
    /// Complete an exchange whose response has no body when its head is
    /// handed over, not when the protocol drops the body. HTTP/2 streams run
    /// as tasks of their own, so on a multi-threaded runtime the head may
    /// reach the client (and its next call reach sitio) before the stream's
    /// task drops the body: the breaker would judge the next call without
    /// this one. HTTP/1 does not need it (the connection's next request is
    /// read only after the body is dropped), and must not: completing there
    /// marks the connection idle while its head is still being written.
    const COMPLETE_BODILESS_AT_HEAD: bool = false;

    fn decorators(&self) -> &Decorators;
    fn client_addr(&self) -> SocketAddr;
    fn route_of(&self, path: &str) -> CompactString;
    /// A new exchange begins: the framing facts its head arrived with.
    fn exchange_started(&self) -> RawFraming;
    /// A request was refused (for the `refused{reason}` counters).
    fn refused(&self, why: Refusal);
    /// The index of the upstream named `name` (`None`: the service).
    fn upstream_index(&self, name: Option<&str>) -> Option<usize>;
    /// Turns the client's head into the one `upstream` receives, as `edits`
    /// allow: with `edits.as_bytes` nothing on the way may change the head
    /// (no request hooks), so it may go as the client's bytes where the leg
    /// has them (`splice`).
    fn forward(
        &self,
        head: &mut request::Parts,
        body: &mut Self::In,
        upstream: usize,
        edits: Edits,
    ) -> Self::Forward;
    /// Wraps the request body; the state reports its bytes and health.
    fn request_body(
        &self,
        body: Self::In,
        filters: Filters,
    ) -> (crate::upstream::RequestBody, Option<Arc<RequestBodyState>>);
    /// Whether the response to a request with this body goes out through
    /// an encoder that takes a head's fields as lines (`upstream::Lines`):
    /// sitio's own HTTP/1 server side.
    fn takes_lines(&self, _body: &Self::In) -> bool {
        false
    }
    /// Sends the request; the response head is normalised for the client.
    /// `as_lines`: its fields may stay the client's lines (nothing reads
    /// them on the way; see [`Leg::takes_lines`]). `Ok((response, upgraded))`.
    fn send(
        self: &Arc<Self>,
        upstream: usize,
        req: Request<crate::upstream::RequestBody>,
        forward: Self::Forward,
        as_lines: bool,
    ) -> impl Future<Output = Result<(Response<Body>, bool), ProxyError>> + Send;
    /// The exchange is over (its completion hooks ran).
    fn finished(&self, at: Instant);
    /// Bytes written to the client so far, and a wait while the client is
    /// too far behind (see `send_window`); the in-memory leg never waits.
    fn written(&self) -> u64;
    fn poll_room(&self, cx: &mut Context<'_>, start: u64, sent: u64) -> Poll<()>;
}

/// How the forwarding edits may be made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edits {
    /// Ask the service to close its connection after this request (the
    /// guard's verdict: a body with no defined meaning).
    pub(crate) isolate: bool,
    /// No request hooks: the head may go as the client's bytes.
    pub(crate) as_bytes: bool,
}

/// A hook's decision once any waiting is over.
enum Decided {
    Continue,
    Respond(Response<Body>),
    Fail(ProxyError),
}

/// A decision that needs no wait, without building a future (the common case).
fn decided(action: Action<'_>) -> Result<Decided, crate::decorator::Waiting<'_>> {
    match action {
        Action::Continue => Ok(Decided::Continue),
        Action::Respond(res) => Ok(Decided::Respond(res)),
        Action::Fail(err) => Ok(Decided::Fail(err)),
        Action::Wait(waiting) => Err(waiting),
    }
}

/// Waits out an [`Action::Wait`] (a panic inside it fails the exchange).
async fn wait_out(
    mut waiting: crate::decorator::Waiting<'_>,
    chain: &Decorators,
    i: usize,
) -> Decided {
    loop {
        let next = match AssertUnwindSafe(waiting.0).catch_unwind().await {
            Ok(next) => next,
            Err(payload) => {
                let name = chain.name_of(i);
                Action::Fail(crate::decorator::panicked(name, &*payload))
            }
        };
        match decided(next) {
            Ok(decision) => return decision,
            Err(again) => waiting = again,
        }
    }
}

/// A hook's decision; only a waiting hook makes the exchange await.
macro_rules! settle {
    ($action:expr, $chain:expr, $i:expr) => {{
        // Bound here so the hook's borrows end with this statement.
        let decision = match decided($action) {
            Ok(decision) => decision,
            // Boxed: only waiting hooks pay for it, and the exchange's own
            // future (moved whole, every request) stays small.
            Err(waiting) => Box::pin(wait_out(waiting, $chain, $i)).await,
        };
        decision
    }};
}

/// How the request phases ended.
enum Reached {
    /// A response to pass through the response hooks of decorators `0..upto`.
    Response { upto: usize, res: Response<Body> },
    /// A failure: error hooks of `0..errors`, response hooks of `0..responses`.
    Failure {
        errors: usize,
        responses: usize,
        err: ProxyError,
    },
}

/// One exchange, from request head to the response handed to the client.
/// Infallible (every failure is a response), but typed as hyper's service
/// result so the connection boxes this future itself: a wrapping `async`
/// block would move it (kilobytes) once more per request.
pub(crate) async fn exchange<L: Leg>(
    leg: Arc<L>,
    req: Request<L::In>,
) -> Result<Response<Tracked<L>>, std::convert::Infallible> {
    let raw = leg.exchange_started();
    let started = crate::clock::now();
    let (head, body) = req.into_parts();
    let route = leg.route_of(head.uri.path());
    let mut ex = Exchange::new(&head, route, leg.client_addr(), started);
    let mut states = States::default();
    let chain = leg.decorators();
    let n = chain.len();
    chain.start(&mut states, &mut ex);
    let mut bytes_in = None;
    let reached = match guard::check(&head, raw) {
        Err(rejection) => {
            leg.refused(rejection.kind);
            let err = ProxyError::new(ErrorKind::BadRequest, rejection.reason)
                .with_status(rejection.status);
            failure(n, err)
        }
        Ok(verdict) => {
            let phases = Phases {
                leg: &leg,
                chain,
                isolate: verdict.isolate,
            };
            phases
                .run(head, body, &mut states, &mut ex, &mut bytes_in)
                .await
        }
    };
    let res = respond(chain, reached, &mut states, &mut ex).await;
    Ok(Tracked::new(leg.clone(), res, ex, states, bytes_in))
}

/// The request side of one exchange.
struct Phases<'l, L: Leg> {
    leg: &'l Arc<L>,
    chain: &'l Decorators,
    isolate: bool,
}

impl<L: Leg> Phases<'_, L> {
    async fn run(
        &self,
        mut head: request::Parts,
        mut body: L::In,
        states: &mut States,
        ex: &mut Exchange,
        bytes_in: &mut Option<Arc<RequestBodyState>>,
    ) -> Reached {
        let chain = self.chain;
        let n = chain.len();
        for i in 0..n {
            let action = chain.request(i, &mut head, states, ex);
            if let Some(reached) = early(settle!(action, chain, i), i) {
                return reached;
            }
        }
        ex.upstream_fixed = true;
        let Some(upstream) = self.leg.upstream_index(ex.upstream.as_deref()) else {
            let err = ProxyError::new(
                ErrorKind::Internal,
                format!("no upstream named {:?}", ex.upstream()),
            );
            return failure(n, err);
        };
        let edits = Edits {
            isolate: self.isolate,
            as_bytes: !chain.has_request_hooks(),
        };
        let forward = self.leg.forward(&mut head, &mut body, upstream, edits);
        for i in 0..n {
            let action = chain.upstream_request(i, &mut head, states, ex);
            if let Some(reached) = early(settle!(action, chain, i), i) {
                return reached;
            }
        }
        let filters = std::mem::take(&mut ex.request_filters);
        if filters.change_length() {
            head.headers.remove(CONTENT_LENGTH);
        }
        // Nothing reads the response head on its way to the client: no
        // response hook, no body filter that changes its length, no gRPC
        // status to find in it.
        let as_lines = !chain.has_response_hooks()
            && ex.response_filters.is_empty()
            && !ex.is_grpc()
            && self.leg.takes_lines(&body);
        let (body, state) = self.leg.request_body(body, filters);
        *bytes_in = state;
        let req = Request::from_parts(head, body);
        let sent = self.leg.send(upstream, req, forward, as_lines).await;
        match sent {
            Ok((res, upgraded)) => {
                ex.service_status = Some(res.status());
                ex.upgraded = upgraded;
                Reached::Response { upto: n, res }
            }
            Err(_) if bytes_in.as_ref().is_some_and(|b| b.malformed()) => {
                // The service saw an aborted request, never a complete one.
                self.leg.refused(Refusal::MalformedBody);
                let err = ProxyError::new(ErrorKind::BadRequest, "malformed request body");
                failure(n, err)
            }
            Err(err) => failure(n, err),
        }
    }
}

fn failure(n: usize, err: ProxyError) -> Reached {
    Reached::Failure {
        errors: n,
        responses: n,
        err,
    }
}

/// What decorator `i`'s request-side decision means for the exchange.
fn early(decided: Decided, i: usize) -> Option<Reached> {
    match decided {
        Decided::Continue => None,
        Decided::Respond(res) => Some(Reached::Response {
            upto: i,
            res: decorator_made(res),
        }),
        Decided::Fail(err) => Some(Reached::Failure {
            errors: i + 1,
            responses: i,
            err,
        }),
    }
}

/// A response a decorator made, normalised like sitio's own: HTTP/1.1 (the
/// connection speaks the client's version), no hop-by-hop fields, a
/// canonical length.
fn decorator_made(res: Response<Body>) -> Response<Body> {
    let (mut head, body) = res.into_parts();
    headers::to_client(&mut head);
    Response::from_parts(head, body)
}

/// The response side: the error path if the request side failed, then the
/// response hooks, innermost first.
async fn respond(
    chain: &Decorators,
    reached: Reached,
    states: &mut States,
    ex: &mut Exchange,
) -> Response<Body> {
    let (mut upto, res) = match reached {
        Reached::Response { upto, res } => (upto, res),
        Reached::Failure {
            errors,
            responses,
            err,
        } => (responses, rescue_with(chain, errors, &err, states, ex)),
    };
    // Split once: hooks edit the head in place, and the (large) response
    // moves only when a hook replaces it.
    let (mut head, mut body) = res.into_parts();
    while upto > 0 {
        upto -= 1;
        let action = chain.response(upto, &mut head, states, ex);
        let replacement = match settle!(action, chain, upto) {
            Decided::Continue => continue,
            Decided::Respond(replacement) => decorator_made(replacement),
            Decided::Fail(err) => rescue_with(chain, upto + 1, &err, states, ex),
        };
        ex.response_filters.drop_inside(upto);
        let (new_head, new_body) = replacement.into_parts();
        std::mem::replace(&mut body, new_body).discard();
        head = new_head;
    }
    let mut res = Response::from_parts(head, body);
    if ex.error == Some(ErrorKind::BadRequest) {
        // Whoever answered, a client whose framing was refused is not trusted
        // with another request on this connection.
        res.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// The one error path: the failure is recorded and logged, decorators
/// `0..upto` may answer it (innermost first), else sitio answers.
fn rescue_with(
    chain: &Decorators,
    upto: usize,
    err: &ProxyError,
    states: &mut States,
    ex: &mut Exchange,
) -> Response<Body> {
    ex.error = Some(err.kind());
    log_failure(err, ex);
    for i in (0..upto).rev() {
        if let Some(res) = chain.error(i, err, states, ex) {
            return decorator_made(res);
        }
    }
    rescue::failure_for(err, ex)
}

fn log_failure(err: &ProxyError, ex: &Exchange) {
    let status = err.status().as_u16();
    let (client, method, path) = (ex.client_addr, &ex.method, ex.path());
    match err.kind() {
        ErrorKind::BadRequest => {
            tracing::warn!(%client, %method, path, status, reason = err.detail(), "refused request");
        }
        ErrorKind::Internal => {
            tracing::error!(%client, %method, path, status, error = %err, "sitio failed");
        }
        kind if kind.blame() == Blame::Upstream => {
            tracing::warn!(%client, %method, path, status, error = %err, "service failed");
        }
        _ => {
            tracing::debug!(%client, %method, path, status, error = %err, "refused by a decorator");
        }
    }
}
