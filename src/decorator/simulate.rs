//! Running a chain over one exchange without a network, as the proxy would:
//! for a decorator's unit tests and for benchmarks of the chain itself.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, request, response};
use http_body_util::BodyExt;

use super::{Decorators, Exchange};
use crate::body::Body;
use crate::error::ErrorKind;
use crate::telemetry::routes::fold;

/// What the client would have received, and the exchange as the decorators
/// left it after their completion hooks.
#[derive(Debug)]
pub struct Simulated {
    /// The response head sent to the client.
    pub head: response::Parts,
    /// The response body sent to the client, after body hooks.
    pub body: Bytes,
    /// The exchange, completed.
    pub exchange: Exchange,
}

impl Decorators {
    /// Runs `request` through the chain in memory: request hooks outermost
    /// first; unless one of them answered, `service` answers; response hooks
    /// innermost first; the body is read to its end through the body hooks;
    /// then the completion hooks. The client address is `127.0.0.1:0` and the
    /// route is the built-in folding of the path.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use sitio::{Body, Decorators, ErrorPages};
    /// let chain = Decorators::builder().with(ErrorPages::new().not_found("<h1>gone</h1>")).build();
    /// let request = http::Request::get("/users/42").body(()).unwrap();
    /// let done = chain
    ///     .simulate(request, |_| http::Response::builder().status(404).body(Body::empty()).unwrap())
    ///     .await;
    /// assert_eq!(done.head.status, 404);
    /// assert_eq!(done.body, "<h1>gone</h1>");
    /// assert_eq!(done.exchange.route, "/users/{id}");
    /// # });
    /// ```
    pub async fn simulate(
        &self,
        request: Request<()>,
        service: impl FnOnce(&request::Parts) -> Response<Body>,
    ) -> Simulated {
        let (mut head, ()) = request.into_parts();
        let mut ex = Exchange::new(
            head.method.clone(),
            head.uri.clone(),
            fold(head.uri.path()),
            head.version,
            &head.headers,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Instant::now(),
        );
        let res = match self.on_request(&mut head, &mut ex) {
            Err((answered_by, res)) => self.on_response(answered_by, res, &mut ex),
            Ok(()) => {
                let res = service(&head);
                ex.service_status = Some(res.status());
                self.on_response(self.len(), res, &mut ex)
            }
        };
        ex.status = Some(res.status());
        ex.response_started = Some(Instant::now());
        let (head, mut body) = res.into_parts();
        let mut sent = BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(mut data) = frame.into_data() {
                        if ex.body_watchers != 0 {
                            self.on_body_chunk(&mut data, &mut ex);
                        }
                        ex.bytes_out += data.len() as u64;
                        sent.extend_from_slice(&data);
                    }
                }
                Err(_) => {
                    ex.error = Some(ErrorKind::UpstreamBodyAborted);
                    break;
                }
            }
        }
        ex.finished = Some(Instant::now());
        self.on_complete(&mut ex);
        Simulated {
            head,
            body: sent.freeze(),
            exchange: ex,
        }
    }
}
