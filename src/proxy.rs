//! One exchange, from request head to the last response byte: guard, request
//! hooks, the service, response hooks, then a tracked body that reports
//! completion. This is the per-request hot path.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::Body;
use crate::decorator::{Decorators, Exchange};
use crate::error::{ErrorKind, ProxyError};
use crate::interim::MAX_INTERIM;
use crate::io::ConnPhase;
use crate::telemetry::{Routes, Telemetry};
use crate::tracked::TrackedBody;
use crate::upstream::{PoolHome, PooledSender, RequestBody, Upstream, UpstreamBody};
use crate::{guard, headers, rescue, tunnel};

/// What all connections of one sitio instance share.
pub(crate) struct Shared {
    pub(crate) decorators: Decorators,
    pub(crate) routes: Routes,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// The HTTP/1 connections, for eviction at the connection cap.
    pub(crate) connections: Arc<crate::idle::Registry>,
}

/// What the exchanges of one client connection share. Cloned per request, so
/// the reference count it bumps is this connection's alone, not a global one.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) phase: Arc<ConnPhase>,
    pub(crate) peer: SocketAddr,
    /// `peer`'s address as an `X-Forwarded-For` value, built once.
    pub(crate) forwarded_for: http::HeaderValue,
    /// The service's 1xx responses go to this connection's relay; built once
    /// and cloned into each request (see [`interim_hook`]).
    pub(crate) interim_hook: http::Extensions,
}

impl PoolHome for ConnCtx {
    fn upstream(&self) -> &Upstream {
        &self.shared.upstream
    }
}

/// The request extension through which hyper hands the service's 1xx
/// responses to `phase`'s interim relay. hyper's `on_informational` allocates a
/// callback per request; built once per connection, each request clones it
/// (a reference count). The callback holds the connection's phase, which
/// holds no callback: no cycle.
pub(crate) fn interim_hook(phase: &Arc<ConnPhase>) -> http::Extensions {
    let phase = phase.clone();
    let mut template = http::Request::new(());
    hyper::ext::on_informational(&mut template, move |interim| {
        phase.interim.received(interim.status(), interim.headers());
    });
    std::mem::take(template.extensions_mut())
}

/// The hyper service for one client connection.
#[derive(Clone)]
pub(crate) struct ProxyService(pub(crate) Arc<ConnCtx>);

type HandleFuture = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = HandleFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let conn = self.0.clone();
        Box::pin(async move { Ok(handle(conn, req).await) })
    }
}

async fn handle(conn: Arc<ConnCtx>, req: Request<Incoming>) -> Response<TrackedBody> {
    let raw_framing = conn.phase.exchange_started();
    let started = Instant::now();
    let (mut head, body) = req.into_parts();
    let route = conn.shared.routes.route_of(head.uri.path());
    let mut ex = Exchange::new(
        head.method.clone(),
        head.uri.clone(),
        route,
        head.version,
        &head.headers,
        conn.peer,
        started,
    );
    let verdict = match guard::check(&head, raw_framing) {
        Ok(verdict) => verdict,
        Err(rejection) => {
            tracing::warn!(
                client = %conn.peer,
                method = %head.method,
                path = head.uri.path(),
                status = rejection.status.as_u16(),
                reason = rejection.reason,
                "refused request"
            );
            ex.error = Some(ErrorKind::BadRequest);
            conn.shared.telemetry.connections.refused(rejection.kind);
            let res = rescue::reject(rejection.status, rejection.reason, ex.wants_json());
            return TrackedBody::respond(conn, res, ex, None);
        }
    };

    let chain = &conn.shared.decorators;
    let mut bytes_in = None;
    let res = match chain.on_request(&mut head, &mut ex) {
        Err((answered_by, res)) => chain.on_response(answered_by, res, &mut ex),
        Ok(()) => {
            if !ex.delay.is_zero() {
                tokio::time::sleep(ex.delay).await;
            }
            let client_upgrade = if headers::is_upgrade_request(&head.headers) {
                head.extensions.remove::<OnUpgrade>()
            } else {
                None
            };
            let relay_early_hints = head.version == http::Version::HTTP_11;
            let service = conn.shared.upstream.authority();
            headers::to_upstream(&mut head, &conn.forwarded_for, verdict.isolate, service);
            let (body, body_state) = RequestBody::new(body, &conn.phase);
            bytes_in = body_state;
            let reusable = !verdict.isolate && client_upgrade.is_none();
            let mut req = Request::from_parts(head, body);
            req.extensions_mut().extend(conn.interim_hook.clone());
            conn.phase.interim.begin(relay_early_hints);
            let sent = tokio::select! {
                biased; // no RNG draw per request; the answer first
                sent = conn.shared.upstream.send(req, reusable) => sent,
                () = conn.phase.interim.overflowed() => Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("more than {MAX_INTERIM} interim (1xx) responses"),
                )),
            };
            conn.phase.interim.end();
            let res = sent.and_then(|(res, sender)| {
                let (mut rhead, incoming) = res.into_parts();
                ex.service_status = Some(rhead.status);
                if rhead.status == StatusCode::SWITCHING_PROTOCOLS {
                    let upstream_upgrade = rhead.extensions.remove::<OnUpgrade>();
                    let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) else {
                        return Err(ProxyError::new(
                            ErrorKind::UpstreamProtocol,
                            "101 Switching Protocols to a request that asked for no upgrade",
                        ));
                    };
                    ex.upgraded = true;
                    conn.phase.tunnel();
                    tunnel::spawn_upgraded(&conn.shared.tasks, client, upstream, conn.peer);
                }
                let framing_clear = headers::to_client(&mut rhead);
                let sender = sender
                    .filter(|_| framing_clear)
                    .map(|s| PooledSender::new(s, conn.clone()));
                let body = Body::upstream(UpstreamBody::new(incoming, sender, bytes_in.clone()));
                Ok(Response::from_parts(rhead, body))
            });
            let client_body_broken = bytes_in.as_ref().is_some_and(|b| b.malformed());
            match res {
                Ok(res) => chain.on_response(chain.len(), res, &mut ex),
                Err(_) if client_body_broken => {
                    // The service saw an aborted request, never a complete one.
                    tracing::warn!(
                        client = %conn.peer,
                        method = %ex.method,
                        path = ex.path(),
                        status = 400,
                        "refused request: malformed body"
                    );
                    ex.error = Some(ErrorKind::BadRequest);
                    let connections = &conn.shared.telemetry.connections;
                    connections.refused(guard::Refusal::MalformedBody);
                    let res = rescue::reject(
                        StatusCode::BAD_REQUEST,
                        "malformed request body",
                        ex.wants_json(),
                    );
                    chain.on_response(chain.len(), res, &mut ex)
                }
                Err(err) => {
                    tracing::warn!(
                        client = %conn.peer,
                        method = %ex.method,
                        path = ex.path(),
                        error = %err,
                        "service failed"
                    );
                    ex.error = Some(err.kind());
                    let res = chain
                        .on_upstream_error(&err, &mut ex)
                        .unwrap_or_else(|| rescue::upstream_failure(&err, ex.wants_json()));
                    chain.on_response(chain.len(), res, &mut ex)
                }
            }
        }
    };
    TrackedBody::respond(conn, res, ex, bytes_in)
}
