//! HTTP/2 with prior knowledge (h2c) to the service: one multiplexed
//! connection per worker, dialled on first use and again once it has closed.
//! gRPC services need it; HTTP/2 clients get it by default
//! (`SITIO_TARGET_PROTOCOL`).

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{RequestBody, Upstream, pool};
use crate::error::{ErrorKind, ProxyError};

/// hyper's handle on one HTTP/2 connection; clones share it.
type H2Sender = http2::SendRequest<RequestBody>;

/// The live HTTP/2 connection of each worker. The lock is async and held
/// while dialling, so streams that start together share one new connection
/// instead of each dialling its own.
pub(super) struct H2Pool {
    shards: Vec<tokio::sync::Mutex<Option<H2Sender>>>,
}

impl H2Pool {
    pub(super) fn new(shards: usize) -> Self {
        H2Pool {
            shards: (0..shards.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        }
    }
}

impl Upstream {
    /// Sends `req` (an HTTP/2 head, see `headers::for_h2`) over this worker's
    /// HTTP/2 connection, dialling one if there is none.
    ///
    /// A request the connection never took (it closed after the liveness
    /// check: the service restarted, or sent GOAWAY) goes once more over a
    /// fresh connection: it never reached the service, so any method may.
    pub(super) async fn send_h2_inner(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut sender = self.live_h2().await?;
        // Waits while the connection has no stream free (the service's
        // SETTINGS_MAX_CONCURRENT_STREAMS); fails only once it closed.
        let unsent = match sender.ready().await {
            Err(_) => req,
            Ok(()) => match sender.try_send_request(req).await {
                Ok(res) => return Ok(res),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => unsent,
                    None => return Err(super::send_error(e.into_error())),
                },
            },
        };
        tracing::debug!(
            "the service's HTTP/2 connection closed before the request left; sending again"
        );
        let mut sender = self.live_h2().await?;
        sender.ready().await.map_err(super::send_error)?;
        sender.send_request(unsent).await.map_err(super::send_error)
    }

    /// This worker's HTTP/2 connection to the service, dialled if it has
    /// none or the last one closed.
    async fn live_h2(&self) -> Result<H2Sender, ProxyError> {
        let shard = &self.h2.shards[pool::shard_of_thread(self.h2.shards.len()).0];
        let mut live = shard.lock().await;
        if let Some(s) = live.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let s = self.connect_h2().await?;
        *live = Some(s.clone());
        Ok(s)
    }

    async fn connect_h2(&self) -> Result<H2Sender, ProxyError> {
        let stream = self.connect_tcp().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                ProxyError::new(ErrorKind::ConnectFailed, format!("HTTP/2 handshake: {e}"))
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}
