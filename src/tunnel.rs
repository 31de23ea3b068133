//! Two-way byte tunnels: for connections that are not HTTP/1 (opaque TCP, the
//! seed's plain tunnel) and for upgraded HTTP connections (WebSocket) after 101.

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, copy_bidirectional};
use tokio_util::task::TaskTracker;

use crate::telemetry::Connections;
use crate::upstream::Upstream;

/// Joins client and service once the client's side of an upgrade has
/// switched; `early` holds what the service sent right after its `101`.
pub(crate) fn spawn_upgraded(
    tasks: &TaskTracker,
    client: OnUpgrade,
    (mut upstream, early): (tokio::net::TcpStream, Bytes),
    peer: SocketAddr,
) {
    tasks.spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        if let Err(e) = client.write_all(&early).await {
            tracing::debug!(client = %peer, error = %e, "upgraded tunnel failed");
            return;
        }
        match copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::info!(
                target: "sitio::access",
                client = %peer,
                protocol = "upgrade",
                bytes_in = up,
                bytes_out = down,
                "tunnel closed"
            ),
            Err(e) => tracing::debug!(client = %peer, error = %e, "upgraded tunnel failed"),
        }
    });
}

/// Relays a non-HTTP/1 connection to the service untouched; `prefix` holds the
/// bytes read while detecting the protocol. Half-closes are passed on.
pub(crate) async fn opaque<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    prefix: Bytes,
    upstream: &Upstream,
    peer: SocketAddr,
    protocol: &'static str,
    connections: &Connections,
) {
    let mut service = match upstream.connect_tcp().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, protocol, error = %e, "cannot open tunnel to the service");
            return;
        }
    };
    if let Err(e) = service.write_all(&prefix).await {
        tracing::debug!(client = %peer, error = %e, "tunnel write failed");
        return;
    }
    match copy_bidirectional(&mut client, &mut service).await {
        Ok((up, down)) => {
            let up = up + prefix.len() as u64;
            connections.tunnelled(up, down);
            tracing::info!(
                target: "sitio::access",
                client = %peer,
                protocol,
                bytes_in = up,
                bytes_out = down,
                "tunnel closed"
            );
        }
        Err(e) => tracing::debug!(client = %peer, protocol, error = %e, "tunnel failed"),
    }
}
