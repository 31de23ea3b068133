//! The connection to the decorated service: connecting with a timeout, a pool
//! of keep-alive connections, and sending a request with one safe retry.

mod body;
pub(crate) mod h1;
mod h2;
mod pool;
mod retry;

pub(crate) use body::{RequestBody, RequestBodyState, Source, UpstreamBody, Wire};
pub(crate) use h1::Lines;
pub(crate) use pool::pin_worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::net::TcpStream;

use crate::error::{ErrorKind, ProxyError};
use crate::interim::InterimRelay;

/// The most a service connection reads at once, hence the largest body chunk
/// one exchange holds for a client that does not read, and the largest
/// response head accepted (nginx's default: 4 or 8 KiB). With 64 KiB, 1,000
/// slow readers held 227 MiB; see docs/reliability.md.
pub(crate) const UPSTREAM_BUFFER: usize = 16 * 1024;

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

    /// Closes its connections idle past the timeout and frees the buffers
    /// of those idle a while (see `pool::Pool::sweep`); about once a second.
    pub(crate) fn sweep_idle(&self, now: std::time::Instant) {
        self.pool.sweep(now);
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

    /// Sends `req`, reusing an idle connection when one is free, and waits
    /// for the response head at most the upstream timeout (then 504).
    ///
    /// A pooled connection the service closed while it was idle is found
    /// at checkout and never used. One the service closes as the request
    /// goes (dead before any response byte) has a safe body-less request
    /// sent again on a fresh connection, within the retry budget. The service's 1xx responses go to `interim`.
    ///
    /// With `h2`, the request (an HTTP/2 head, see `headers::for_h2`) goes
    /// over this worker's multiplexed HTTP/2 connection instead. A gRPC
    /// call's `grpc-timeout` (`call_timeout`) shortens the wait when it is
    /// the sooner. `timer`: the client connection's, when its exchanges wait
    /// one after another (HTTP/1); without it the wait has a timer of its own.
    ///
    /// An HTTP/1 response body owns its connection; whether it may be pooled
    /// after it is decided with the body (see [`UpstreamBody`]).
    pub(crate) async fn send(
        &self,
        req: Request<RequestBody>,
        how: How,
        call_timeout: Option<Duration>,
        interim: Option<&InterimRelay>,
        timer: Option<&crate::deadline::Reused>,
    ) -> Result<Response<Wire>, ProxyError> {
        let mut sent = std::pin::pin!(self.send_inner(req, how, interim));
        let (limit, source) = match (self.response_timeout, call_timeout) {
            (Some(setting), Some(call)) if setting <= call => (setting, "SITIO_UPSTREAM_TIMEOUT"),
            (_, Some(call)) => (call, "the call's grpc-timeout"),
            (Some(setting), None) => (setting, "SITIO_UPSTREAM_TIMEOUT"),
            (None, None) => return sent.await,
        };
        // Raced by reference rather than `timeout(limit, sent)`, which moves
        // the send future (kilobytes) into itself: a memcpy each request.
        if let Some(timer) = timer {
            timer.restart(tokio::time::Instant::now() + limit);
        }
        let mut own = std::pin::pin!(timer.is_none().then(|| tokio::time::sleep(limit)));
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(done) = sent.as_mut().poll(cx) {
                return std::task::Poll::Ready(done);
            }
            let expired = match (own.as_mut().as_pin_mut(), timer) {
                (Some(own), _) => own.poll(cx),
                (None, Some(timer)) => timer.poll_expired(cx),
                (None, None) => std::task::Poll::Pending,
            };
            expired.map(|()| {
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
        req: Request<RequestBody>,
        how: How,
        interim: Option<&InterimRelay>,
    ) -> Result<Response<Wire>, ProxyError> {
        let How {
            reusable,
            h2,
            as_lines,
            head: wire,
        } = how;
        if h2 {
            // Multiplexed: nothing goes back to a pool. Boxed so that its
            // (larger) state does not grow every HTTP/1 send's future.
            return Ok(Box::pin(self.send_h2_inner(req)).await?.map(Wire::H2));
        }
        retry::note_request();
        let (head, body) = req.into_parts();
        let mut msg = match wire {
            Some(wire) => h1::Message::spliced(wire, head, body),
            None => h1::Message::new(head, body),
        };
        msg.as_lines = as_lines;
        if reusable && let Some((conn, _idle_for)) = self.pool.checkout() {
            // Closed by the service before any response byte: a safe,
            // body-less request goes again on a fresh connection, however
            // briefly the pooled one sat idle. A service may close a
            // connection at any moment after a response (nginx resends on
            // its cached connections alike); the budget bounds a request
            // that makes the service drop every connection it comes on.
            let may_resend = msg.resendable && self.retries;
            match h1::send(conn, &mut msg, interim, true).await {
                Ok(res) => return Ok(res.map(Wire::H1)),
                Err(failed) => {
                    if !(may_resend && failed.closed_before_response && retry::take()) {
                        return Err(failed.error);
                    }
                    tracing::debug!(error = %failed.error, "stale pooled connection; sending again");
                }
            }
        }
        let conn = h1::Conn::new(self.connect_tcp().await?);
        match h1::send(conn, &mut msg, interim, reusable).await {
            Ok(res) => Ok(res.map(Wire::H1)),
            Err(failed) => Err(failed.error),
        }
    }

    /// Keeps a service connection whose exchange ended for the next one.
    pub(crate) fn checkin(&self, conn: h1::Conn) {
        self.pool.checkin(conn);
    }
}

/// How a request goes to an upstream.
#[derive(Debug, Clone)]
pub(crate) struct How {
    /// Its connection may be pooled (and a pooled one used).
    pub(crate) reusable: bool,
    /// Over HTTP/2 (`SITIO_TARGET_PROTOCOL=h2c`).
    pub(crate) h2: bool,
    /// The final response head's fields may stay lines ([`h1::Lines`]):
    /// the client's HTTP/1 encoder takes them, and nothing on the way reads
    /// the head. Only sitio's own HTTP/1 client keeps them.
    pub(crate) as_lines: bool,
    /// The request head as bytes, made from the client's (`splice`); its
    /// field map is only read for the framing. Over HTTP/1 only.
    pub(crate) head: Option<bytes::Bytes>,
}

/// Where a finished service connection finds its pool again (see [`Home`]).
pub(crate) trait PoolHome: Send + Sync + 'static {
    /// Upstream `index` (0: the service).
    fn upstream(&self, index: usize) -> &Upstream;
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
