//! The connection to the decorated service: connecting with a timeout, a pool
//! of keep-alive connections, and sending a request with one safe retry.

mod body;
mod h2;
mod pool;
mod retry;

pub(crate) use body::{RequestBody, RequestBodyState, Source, UpstreamBody};
pub(crate) use pool::pin_worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{ErrorKind, ProxyError};

/// The most a service connection reads at once, hence the largest body chunk
/// one exchange holds for a client that does not read, and the largest
/// response head accepted (nginx's default: 4 or 8 KiB). With 64 KiB, 1,000
/// slow readers held 227 MiB; see docs/reliability.md.
pub(crate) const UPSTREAM_BUFFER: usize = 16 * 1024;

/// A pooled sender: hyper's handle for one upstream HTTP/1 connection.
pub(crate) type Sender = http1::SendRequest<RequestBody>;

/// What one upstream is made of (the server builds it from the settings).
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Option<Duration>,
    pub(crate) retries: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_shard: usize,
    /// Pool shards: one per worker thread.
    pub(crate) shards: usize,
}

/// Where an upstream (the service, or a named one) is and how to talk to it.
pub(crate) struct Upstream {
    /// Its name in statistics and logs (`service` for the decorated service).
    name: compact_str::CompactString,
    host: String,
    port: u16,
    /// `host:port` as a `Host` value, for requests that came without one.
    authority: http::HeaderValue,
    connect_timeout: Duration,
    pool: pool::Pool,
    h2: h2::H2Pool,
    response_timeout: Option<Duration>,
    retries: bool,
}

impl Upstream {
    /// An upstream as `settings` describe it.
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        let Settings {
            name, host, port, ..
        } = settings;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let limits = pool::Limits {
            idle_timeout: settings.idle_timeout,
            max_idle: settings.max_idle_per_shard,
        };
        Arc::new(Upstream {
            name: name.into(),
            authority: http::HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| http::HeaderValue::from_static("localhost")),
            host,
            port,
            connect_timeout: settings.connect_timeout,
            pool: pool::Pool::new(settings.shards, limits),
            h2: h2::H2Pool::new(settings.shards),
            response_timeout: settings.response_timeout,
            retries: settings.retries,
        })
    }

    /// Its name (`service` for the decorated service).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The service's `host:port`, as a `Host` header value.
    pub(crate) fn authority(&self) -> &http::HeaderValue {
        &self.authority
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
        // A request head (and a small body) goes out flattened with one
        // send(2), cheaper in the kernel than writev(2); see `io::ClientIo`.
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .max_buf_size(UPSTREAM_BUFFER)
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

    /// Sends `req`, reusing an idle connection when one is free, and waits
    /// for the response head at most the upstream timeout (then 504).
    ///
    /// Two kinds of resend, both on a fresh connection: a request that never
    /// left because the pooled connection was already closed (always safe),
    /// and a safe body-less request whose pooled connection, idle for a while,
    /// died before any response byte (the service closed it meanwhile), within
    /// the retry budget.
    ///
    /// With `h2`, the request (an HTTP/2 head, see `headers::for_h2`) goes
    /// over this worker's multiplexed HTTP/2 connection instead. A gRPC
    /// call's `grpc-timeout` (`call_timeout`) shortens the wait when it is
    /// the sooner.
    ///
    /// Returns the response and, when the connection may be reused after the
    /// body, its sender (see [`PooledSender`]).
    pub(crate) async fn send(
        &self,
        req: Request<RequestBody>,
        reusable: bool,
        h2: bool,
        call_timeout: Option<Duration>,
    ) -> Result<(Response<Incoming>, Option<Sender>), ProxyError> {
        let mut sent = std::pin::pin!(self.send_inner(req, reusable, h2));
        let (limit, source) = match (self.response_timeout, call_timeout) {
            (Some(setting), Some(call)) if setting <= call => (setting, "SITIO_UPSTREAM_TIMEOUT"),
            (_, Some(call)) => (call, "the call's grpc-timeout"),
            (Some(setting), None) => (setting, "SITIO_UPSTREAM_TIMEOUT"),
            (None, None) => return sent.await,
        };
        // Raced by reference rather than `timeout(limit, sent)`, which moves
        // the send future (kilobytes) into itself: a memcpy each request.
        let mut expired = std::pin::pin!(tokio::time::sleep(limit));
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(done) = sent.as_mut().poll(cx) {
                return std::task::Poll::Ready(done);
            }
            expired.as_mut().poll(cx).map(|()| {
                Err(ProxyError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("no response head within {limit:?} ({source})"),
                ))
            })
        })
        .await
    }

    async fn send_inner(
        &self,
        mut req: Request<RequestBody>,
        reusable: bool,
        h2: bool,
    ) -> Result<(Response<Incoming>, Option<Sender>), ProxyError> {
        if h2 {
            // Multiplexed: nothing goes back to a pool. Boxed so that its
            // (larger) state does not grow every HTTP/1 send's future.
            return Ok((Box::pin(self.send_h2_inner(req)).await?, None));
        }
        retry::note_request();
        if reusable {
            while let Some((mut sender, idle_for)) = self.pool.checkout() {
                if !sender.is_ready() && sender.ready().await.is_err() {
                    continue;
                }
                // The copy costs a header clone, so only when it may be used.
                let copy = if self.retries && idle_for >= retry::STALE_AFTER {
                    retry::resendable_copy(&req)
                } else {
                    None
                };
                match sender.try_send_request(req).await {
                    Ok(res) => return Ok((res, Some(sender))),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => {
                            let err = e.into_error();
                            match copy {
                                Some(copy)
                                    if retry::closed_before_response(&err) && retry::take() =>
                                {
                                    tracing::debug!(error = %err, "stale pooled connection; sending again");
                                    req = copy;
                                    break;
                                }
                                _ => return Err(send_error(err)),
                            }
                        }
                    },
                }
            }
        }
        let mut sender = self.connect_http().await?;
        let res = sender.send_request(req).await.map_err(send_error)?;
        Ok((res, reusable.then_some(sender)))
    }
}

/// Where a pooled sender finds its pool again: the exchange's per-connection
/// context, so that holding on to it bumps that connection's reference
/// count, not one that every core's requests would share.
pub(crate) trait PoolHome: Send + Sync + 'static {
    /// Upstream `index` (0: the service).
    fn upstream(&self, index: usize) -> &Upstream;
}

/// A sender that goes back to its pool once its response body is fully read.
pub(crate) struct PooledSender {
    sender: Sender,
    home: Arc<dyn PoolHome>,
    upstream: usize,
}

impl PooledSender {
    pub(crate) fn new(sender: Sender, home: Arc<dyn PoolHome>, upstream: usize) -> Self {
        PooledSender {
            sender,
            home,
            upstream,
        }
    }

    pub(crate) fn checkin(self) {
        self.home.upstream(self.upstream).pool.checkin(self.sender);
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
