//! The few requests sitio makes on its own behalf (crash webhooks, the JWKS
//! and OpenID discovery documents of auth): one request per connection, over
//! http or https (`tls`), with a capped answer. They are rare, so no pool: a
//! fresh connection also picks up a moved identity provider at once.

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::error::BoxError;

/// An answer: its status and (capped) body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One `method` request to `url` with `body` (of `content_type`), over TLS when
/// `tls` is given; an answer longer than `limit` bytes is an error.
pub(crate) async fn request(
    url: &Uri,
    tls: Option<&tokio_rustls::TlsConnector>,
    method: Method,
    body: Option<(&'static str, Bytes)>,
    limit: usize,
) -> Result<Answer, BoxError> {
    let host = url.host().ok_or("the URL has no host")?;
    let port = url
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    // An IPv6 literal comes bracketed in the URL, neither in connect nor in the name checked.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((bare, port)).await?;
    let mut sender = match tls {
        None => sender(stream).await?,
        Some(tls) => sender(crate::tls::handshake(tls, bare, stream).await?).await?,
    };
    let authority = url.authority().map_or(host, |a| a.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("sitio/", env!("CARGO_PKG_VERSION")),
        );
    let payload = match body {
        Some((content_type, bytes)) => {
            req = req.header(http::header::CONTENT_TYPE, content_type);
            bytes
        }
        None => Bytes::new(),
    };
    let res = sender.send_request(req.body(Full::new(payload))?).await?;
    let status = res.status();
    let body = Limited::new(res.into_body(), limit)
        .collect()
        .await?
        .to_bytes();
    Ok(Answer { status, body })
}

/// An HTTP/1 request sender over `io`, its connection driven by a task.
async fn sender<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
