//! The HTTP/1 leg of the exchange driver: what one client connection gives
//! the driver (`engine`) — its decorators, upstreams, forwarding edits, the
//! send with interim responses and upgrades, and its send window. The phase
//! order lives in the driver, not here.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use compact_str::CompactString;
use http::{Request, Response, StatusCode, request};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::Body;
use crate::decorator::{Decorators, Filters};
use crate::engine::{Edits, Leg, Tracked};
use crate::error::{ErrorKind, ProxyError};
use crate::guard::{RawFraming, Refusal};
use crate::headers;
use crate::io::ConnPhase;
use crate::telemetry::{Routes, Telemetry};
use crate::tunnel::{self, ClientSide};
use crate::upstream::{
    How, PoolHome, RequestBody, RequestBodyState, Source, Upstream, UpstreamBody, Wire,
};

/// What all connections of one sitio instance share.
pub(crate) struct Shared {
    pub(crate) decorators: Decorators,
    pub(crate) routes: Routes,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The service (index 0), then the decorators' named upstreams.
    pub(crate) upstreams: Box<[Arc<Upstream>]>,
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// The HTTP/1 connections, for eviction at the connection cap.
    pub(crate) connections: Arc<crate::idle::Registry>,
    /// `SITIO_TARGET_PROTOCOL`.
    pub(crate) target_protocol: crate::config::TargetProtocol,
}

impl Shared {
    /// The index of the upstream named `name` (`None`: the service).
    pub(crate) fn upstream_index(&self, name: Option<&str>) -> Option<usize> {
        match name {
            None => Some(0),
            Some(name) => self.upstreams.iter().position(|u| u.name() == name),
        }
    }
}

/// What the exchanges of one client connection share. Cloned per request, so
/// the reference count it bumps is this connection's alone, not a global one.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) phase: Arc<ConnPhase>,
    pub(crate) peer: SocketAddr,
    /// `peer`'s address as an `X-Forwarded-For` value, built once.
    pub(crate) forwarded_for: http::HeaderValue,
    /// The wait for the service's response head, one exchange after another.
    pub(crate) response_timer: crate::deadline::Reused,
}

impl crate::io::EarlyAnswer for ConnCtx {
    fn header_timeout(&self) -> Option<bytes::Bytes> {
        let err = ProxyError::new(
            ErrorKind::BadRequest,
            "The request head did not arrive in time.",
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)
        .with_cause("header-timeout");
        crate::engine::early_answer(&self.shared.decorators, &err, self.peer)
    }
}

impl PoolHome for ConnCtx {
    fn upstream(&self, index: usize) -> &Upstream {
        &self.shared.upstreams[index]
    }
}

/// The hyper service for one client connection.
#[derive(Clone)]
pub(crate) struct ProxyService(pub(crate) Arc<ConnCtx>);

type HandleFuture =
    Pin<Box<dyn Future<Output = Result<Response<Tracked<ConnCtx>>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<Tracked<ConnCtx>>;
    type Error = Infallible;
    type Future = HandleFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let conn = self.0.clone();
        conn.phase
            .request_arrived(!hyper::body::Body::is_end_stream(req.body()));
        // Room first, then the future written into it: `Box::pin(future)`
        // built the 3.7 KiB future on the stack and copied it into the box,
        // once per request.
        let req = req.map(|body| Arrived {
            body: Source::Wire(body),
            head: None,
            upgrade: None,
        });
        let exchange = Box::write(Box::new_uninit(), crate::engine::exchange(conn, req));
        Box::into_pin(exchange)
    }
}

/// The service's response as the client gets it: head normalised, body
/// read through `UpstreamBody`, which returns the connection to `home`'s
/// pool once both directions ended, if it may serve another exchange (the
/// service connection decides: keep-alive on both sides, a framing with no
/// ambiguity, nothing left unsent or unread).
pub(crate) fn relay(
    home: Arc<dyn PoolHome>,
    upstream: usize,
    res: Response<Wire>,
) -> Response<Body> {
    let (mut rhead, wire) = res.into_parts();
    // sitio's own HTTP/1 client hands over heads already made for the
    // client (`upstream::h1::send`); hyper's HTTP/2 client does not.
    if matches!(wire, Wire::H2(_)) {
        headers::to_client(&mut rhead);
    }
    let body = Body::upstream(UpstreamBody::new(wire, (home, upstream)));
    Response::from_parts(rhead, body)
}

/// A request's body as the client connection delivers it, and the head
/// the service gets, already made from the client's bytes where it can be.
pub(crate) struct Arrived {
    pub(crate) body: Source,
    /// Made by sitio's own HTTP/1 server side (`splice`) for the service,
    /// with no edit to make but asking it to close: sent when nothing may
    /// change the head on its way ([`Edits::as_bytes`]).
    pub(crate) head: Option<Bytes>,
    /// The request asks for an upgrade, and sitio's own server side serves
    /// it: where the service's side goes if the service switches.
    pub(crate) upgrade: Option<tokio::sync::oneshot::Sender<tunnel::ServiceSide>>,
}

/// What forwarding leaves for the send: the client's side of an upgrade, and
/// whether the service connection may serve other exchanges.
pub(crate) struct Forward {
    client_upgrade: Option<ClientSide>,
    reusable: bool,
    relay_early_hints: bool,
    /// To the service over HTTP/2 (`SITIO_TARGET_PROTOCOL=h2c`).
    h2: bool,
    /// The head as bytes, made from the client's (see [`Arrived`]).
    head: Option<Bytes>,
}

impl Leg for ConnCtx {
    type In = Arrived;
    type Forward = Forward;

    fn decorators(&self) -> &Decorators {
        &self.shared.decorators
    }

    fn client_addr(&self) -> SocketAddr {
        self.peer
    }

    fn route_of(&self, path: &str) -> CompactString {
        self.shared.routes.route_of(path)
    }

    fn exchange_started(&self) -> RawFraming {
        self.phase.exchange_started()
    }

    fn refused(&self, why: Refusal) {
        self.shared.telemetry.connections.refused(why);
    }

    fn upstream_index(&self, name: Option<&str>) -> Option<usize> {
        self.shared.upstream_index(name)
    }

    fn forward(
        &self,
        head: &mut request::Parts,
        body: &mut Arrived,
        upstream: usize,
        edits: Edits,
    ) -> Forward {
        let relay_early_hints = head.version == http::Version::HTTP_11;
        let authority = self.shared.upstreams[upstream].authority();
        let isolate = edits.isolate;
        let h2c = self.shared.target_protocol == crate::config::TargetProtocol::H2c;
        let spliced = edits.as_bytes && !isolate && !h2c && upstream == 0;
        if let Some(bytes) = body.head.take().filter(|_| spliced) {
            // Nothing changed the head since it was read: its bytes go on.
            return Forward {
                reusable: true,
                client_upgrade: None,
                relay_early_hints,
                h2: false,
                head: Some(bytes),
            };
        }
        let upgrading = headers::to_upstream(head, &self.forwarded_for, isolate, authority);
        let client_upgrade = if upgrading {
            let own = body.upgrade.take().map(ClientSide::Own);
            own.or_else(|| head.extensions.remove::<OnUpgrade>().map(ClientSide::Hyper))
        } else {
            None
        };
        // An upgrade (WebSocket) exists only in HTTP/1.1: it stays there.
        let h2 = h2c && client_upgrade.is_none();
        if h2 {
            headers::for_h2(head);
        }
        Forward {
            reusable: !isolate && client_upgrade.is_none(),
            client_upgrade,
            relay_early_hints,
            h2,
            head: None,
        }
    }

    fn request_body(
        &self,
        body: Arrived,
        filters: Filters,
    ) -> (RequestBody, Option<Arc<RequestBodyState>>) {
        RequestBody::new(body.body, Some(&self.phase), filters)
    }

    fn takes_lines(&self, body: &Arrived) -> bool {
        // sitio's own server side reads these bodies, and its encoder sends
        // the response; hyper's server takes only a field map.
        matches!(body.body, Source::Empty | Source::Client(_))
    }

    async fn send(
        self: &Arc<Self>,
        upstream: usize,
        req: Request<RequestBody>,
        forward: Forward,
        as_lines: bool,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let interim = forward.relay_early_hints.then_some(&self.phase.interim);
        let target = &self.shared.upstreams[upstream];
        let how = How {
            reusable: forward.reusable,
            h2: forward.h2,
            // An upgrade's `101` is read whole anyway.
            as_lines,
            head: forward.head,
        };
        let sent = target
            .send(req, how, None, interim, Some(&self.response_timer))
            .await;
        let (rhead, mut wire) = sent?.into_parts();
        let mut upgraded = false;
        if rhead.status == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client), Some(service)) = (forward.client_upgrade, wire.take_upgraded())
            else {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    "101 Switching Protocols to a request that asked for no upgrade",
                ));
            };
            upgraded = true;
            if matches!(client, ClientSide::Hyper(_)) {
                // sitio's own side says so once its `101` is out.
                self.phase.tunnel();
            }
            client.join(&self.shared.tasks, service, self.peer);
        }
        let res = Response::from_parts(rhead, wire);
        let res = relay(self.clone(), upstream, res);
        Ok((res, upgraded))
    }

    fn finished(&self, at: Instant) {
        self.phase.exchange_finished(at);
    }

    fn written(&self) -> u64 {
        self.phase.window.written()
    }

    fn poll_room(&self, cx: &mut Context<'_>, start: u64, sent: u64) -> Poll<()> {
        self.phase.window.poll_room(cx, start, sent)
    }
}
