//! The connection to the decorated service: connecting with a timeout, a pool
//! of keep-alive connections, and sending a request with one safe retry.

mod body;
mod pool;

pub(crate) use body::{RequestBody, RequestBodyState, UpstreamBody};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{ErrorKind, ProxyError};

/// A pooled sender: hyper's handle for one upstream HTTP/1 connection.
pub(crate) type Sender = http1::SendRequest<RequestBody>;

/// Where the service is and how to talk to it.
pub(crate) struct Upstream {
    id: u64,
    host: String,
    port: u16,
    connect_timeout: Duration,
    pool: pool::Limits,
    max_header_bytes: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Upstream {
    pub(crate) fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle_per_thread: usize,
        max_header_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Upstream {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            host,
            port,
            connect_timeout,
            pool: pool::Limits {
                idle_timeout,
                max_idle: max_idle_per_thread,
            },
            max_header_bytes,
        })
    }

    /// A plain TCP connection to the service (for tunnels and HTTP alike).
    pub(crate) async fn connect_tcp(&self) -> Result<TcpStream, ProxyError> {
        let connect = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
                .await?
                .collect();
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for target host");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(ProxyError::new(
                    ErrorKind::ConnectTimeout,
                    format!(
                        "no connection to {}:{} within {:?}",
                        self.host, self.port, self.connect_timeout
                    ),
                ));
            }
            Ok(Err(e)) => return Err(connect_error(&self.host, self.port, e)),
            Ok(Ok(s)) => s,
        };
        // Small writes (heads, chunk trailers) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_http(&self) -> Result<Sender, ProxyError> {
        let stream = self.connect_tcp().await?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.max_header_bytes.max(8192))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::new(ErrorKind::ConnectFailed, e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req`, reusing an idle connection when one is free. A request that
    /// never left because the idle connection had just been closed by the
    /// service is sent again on a fresh connection: it is safe whatever the
    /// method, since not a byte of it was written.
    ///
    /// Returns the response and, when the connection may be reused after the
    /// body, its sender.
    pub(crate) async fn send(
        &self,
        mut req: Request<RequestBody>,
        reusable: bool,
    ) -> Result<(Response<Incoming>, Option<PooledSender>), ProxyError> {
        if reusable {
            while let Some(mut sender) = pool::checkout(self.id, &self.pool) {
                if !sender.is_ready() && sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(req).await {
                    Ok(res) => return Ok((res, Some(self.pooled(sender)))),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(send_error(e.into_error())),
                    },
                }
            }
        }
        let mut sender = self.connect_http().await?;
        let res = sender.send_request(req).await.map_err(send_error)?;
        Ok((res, reusable.then(|| self.pooled(sender))))
    }

    fn pooled(&self, sender: Sender) -> PooledSender {
        PooledSender {
            sender,
            upstream_id: self.id,
            limits: self.pool,
        }
    }
}

/// A sender that goes back to its pool once its response body is fully read.
pub(crate) struct PooledSender {
    sender: Sender,
    upstream_id: u64,
    limits: pool::Limits,
}

impl PooledSender {
    pub(crate) fn checkin(self) {
        pool::checkin(self.upstream_id, self.sender, &self.limits);
    }
}

fn connect_error(host: &str, port: u16, e: io::Error) -> ProxyError {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            ErrorKind::ConnectReset
        }
        io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        _ => ErrorKind::ConnectFailed,
    };
    ProxyError::new(kind, format!("connect to {host}:{port}: {e}"))
}

fn send_error(e: hyper::Error) -> ProxyError {
    let kind = if e.is_parse() || e.is_parse_status() {
        ErrorKind::UpstreamProtocol
    } else if e.is_timeout() {
        ErrorKind::UpstreamTimeout
    } else {
        // Closed, reset or cancelled before a complete response head.
        ErrorKind::UpstreamClosed
    };
    ProxyError::new(kind, format!("upstream: {e}"))
}
