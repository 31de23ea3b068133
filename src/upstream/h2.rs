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
    pub(super) async fn send_h2_inner(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut sender = {
            let shard = &self.h2.shards[pool::shard_of_thread(self.h2.shards.len()).0];
            let mut live = shard.lock().await;
            match live.as_ref().filter(|s| !s.is_closed()) {
                Some(s) => s.clone(),
                None => {
                    let s = self.connect_h2().await?;
                    *live = Some(s.clone());
                    s
                }
            }
        };
        // Waits while the connection has no stream free (the service's
        // SETTINGS_MAX_CONCURRENT_STREAMS).
        sender.ready().await.map_err(super::send_error)?;
        sender.send_request(req).await.map_err(super::send_error)
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
