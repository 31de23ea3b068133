//! Running a chain over one exchange without a network: the real driver over
//! an in-memory service, for a decorator's unit tests and for benchmarks of
//! the chain itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use compact_str::CompactString;
use http::{HeaderMap, HeaderValue, Request, Response, request, response};
use http_body_util::BodyExt;

use super::{Edits, Leg};
use crate::body::Body;
use crate::decorator::{Decorators, Exchange, Filters};
use crate::error::ProxyError;
use crate::guard::{RawFraming, Refusal};
use crate::headers;
use crate::telemetry::routes::fold;
use crate::upstream::{RequestBody, RequestBodyState, Source};

/// What the client would have received, and the exchange as the decorators
/// left it after their completion hooks.
#[derive(Debug)]
pub struct Simulated {
    /// The response head sent to the client.
    pub head: response::Parts,
    /// The response body sent to the client, after body filters.
    pub body: Bytes,
    /// The response trailers, if any.
    pub trailers: Option<HeaderMap>,
    /// The exchange, completed.
    pub exchange: Exchange,
}

type Service = Box<dyn FnOnce(Request<Body>) -> Result<Response<Body>, ProxyError> + Send>;

/// The in-memory leg: the service is a closure, every upstream is it.
struct Memory {
    chain: Decorators,
    service: Mutex<Option<Service>>,
}

impl Leg for Memory {
    type In = Body;
    type Forward = ();

    fn decorators(&self) -> &Decorators {
        &self.chain
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn route_of(&self, path: &str) -> CompactString {
        fold(path)
    }

    fn exchange_started(&self) -> RawFraming {
        // The head was not read from bytes: the framing is what it says.
        RawFraming::default()
    }

    fn refused(&self, _why: Refusal) {}

    fn upstream_index(&self, name: Option<&str>) -> Option<usize> {
        match name {
            None => Some(0),
            Some(name) => self
                .chain
                .upstreams()
                .iter()
                .position(|t| t.name() == name)
                .map(|i| i + 1),
        }
    }

    fn forward(&self, head: &mut request::Parts, _: &mut Body, _upstream: usize, edits: Edits) {
        let client = headers::ip_header_value(self.client_addr().ip());
        let service = HeaderValue::from_static("service");
        let _ = headers::to_upstream(head, &client, edits.isolate, &service);
    }

    fn request_body(
        &self,
        body: Body,
        filters: Filters,
    ) -> (RequestBody, Option<Arc<RequestBodyState>>) {
        RequestBody::new(Source::Made(body.boxed_unsync()), None, filters)
    }

    async fn send(
        self: &Arc<Self>,
        _upstream: usize,
        req: Request<RequestBody>,
        (): (),
        _as_lines: bool,
    ) -> Result<(Response<Body>, bool), ProxyError> {
        let service = self.service.lock().ok().and_then(|mut s| s.take());
        let Some(service) = service else {
            return Err(ProxyError::new(
                crate::ErrorKind::Internal,
                "the simulated service answers once",
            ));
        };
        let (head, body) = req.into_parts();
        let res = service(Request::from_parts(head, Body::stream(body)))?;
        let (mut head, body) = res.into_parts();
        headers::to_client(&mut head);
        Ok((Response::from_parts(head, body), false))
    }

    fn finished(&self, _at: Instant) {}

    fn written(&self) -> u64 {
        0
    }

    fn poll_room(&self, _cx: &mut Context<'_>, _start: u64, _sent: u64) -> Poll<()> {
        Poll::Ready(())
    }
}

impl Decorators {
    /// Runs `request` through the chain in memory, with the very driver a real
    /// connection uses: the guard, request hooks outermost first, upstream
    /// choice, forwarding edits, upstream-request hooks; unless a hook
    /// answered or failed, `service` answers (or fails, as a service would:
    /// then the error path runs); response hooks innermost first; the body is
    /// read to its end through the body filters; then the completion hooks.
    /// Waiting hooks wait for real. Every named upstream is `service` too.
    /// The client address is `127.0.0.1:0`, the route is the built-in
    /// folding of the path, and a request without `Host` gets one, as from
    /// any HTTP client.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use sitio::{Body, Decorators, ErrorPages};
    /// let chain = Decorators::builder().with(ErrorPages::new().not_found("<h1>gone</h1>")).build();
    /// let request = http::Request::get("/users/42").body(()).unwrap();
    /// let done = chain
    ///     .simulate(request, |_| Ok(http::Response::builder().status(404).body(Body::empty()).unwrap()))
    ///     .await;
    /// assert_eq!(done.head.status, 404);
    /// assert_eq!(done.body, "<h1>gone</h1>");
    /// assert_eq!(done.exchange.route(), "/users/{id}");
    /// # });
    /// ```
    pub async fn simulate(
        &self,
        request: Request<impl Into<Body>>,
        service: impl FnOnce(Request<Body>) -> Result<Response<Body>, ProxyError> + Send + 'static,
    ) -> Simulated {
        let leg = Arc::new(Memory {
            chain: self.clone(),
            service: Mutex::new(Some(Box::new(service))),
        });
        let mut request = request.map(Into::into);
        if !request.headers().contains_key(http::header::HOST) {
            // What every HTTP/1.1 client sends (the guard refuses a request without it).
            let host = request.uri().authority().map_or("service", |a| a.as_str());
            let host = HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("service"));
            request.headers_mut().insert(http::header::HOST, host);
        }
        let Ok(res) = super::exchange(leg, request).await;
        let (head, mut body) = res.into_parts();
        let mut sent = BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            match frame.into_data() {
                Ok(data) => sent.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Simulated {
            head,
            body: sent.freeze(),
            trailers,
            exchange: body.completed(),
        }
    }
}
