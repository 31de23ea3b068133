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

/// The service's side of an upgraded connection: its stream, and what it
/// sent right after its `101`.
pub(crate) type ServiceSide = (tokio::net::TcpStream, Bytes);

/// Where the client's side of an upgrade is taken from once the service
/// switched protocols.
pub(crate) enum ClientSide {
    /// hyper's server serves the client: the connection it hands over.
    Hyper(OnUpgrade),
    /// sitio's own server side serves it: the service's side goes to the
    /// client's connection loop, which joins the two once its `101` is out.
    Own(tokio::sync::oneshot::Sender<ServiceSide>),
}

impl ClientSide {
    /// Joins the service's side to the client's: in a task of its own for
    /// hyper's connections, in the client's loop for sitio's own.
    pub(crate) fn join(self, tasks: &TaskTracker, service: ServiceSide, peer: SocketAddr) {
        match self {
            ClientSide::Hyper(client) => spawn_upgraded(tasks, client, service, peer),
            // Dropped (with the stream) if the loop no longer waits.
            ClientSide::Own(to_loop) => drop(to_loop.send(service)),
        }
    }
}

/// Joins client and service once the client's side of an upgrade has
/// switched; `early` holds what the service sent right after its `101`.
fn spawn_upgraded(tasks: &TaskTracker, client: OnUpgrade, service: ServiceSide, peer: SocketAddr) {
    tasks.spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "upgrade did not complete");
                return;
            }
        };
        upgraded(&mut TokioIo::new(client), Bytes::new(), service, peer).await;
    });
}

/// Relays an upgraded connection both ways until both ends closed: first
/// what the client sent after its request (`client_early`) to the service,
/// and what the service sent after its `101` to the client (both buffers
/// freed once written: a tunnel may last hours).
pub(crate) async fn upgraded<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    client_early: Bytes,
    (mut upstream, early): ServiceSide,
    peer: SocketAddr,
) {
    let (early_in, early_out) = (client_early.len() as u64, early.len() as u64);
    let started = async {
        upstream.write_all(&client_early).await?;
        drop(client_early);
        client.write_all(&early).await
    };
    if let Err(e) = started.await {
        tracing::debug!(client = %peer, error = %e, "upgraded tunnel failed");
        return;
    }
    drop(early);
    match copy_bidirectional(client, &mut upstream).await {
        Ok((up, down)) => tracing::info!(
            target: "sitio::access",
            client = %peer,
            protocol = "upgrade",
            bytes_in = up + early_in,
            bytes_out = down + early_out,
            "tunnel closed"
        ),
        Err(e) => tracing::debug!(client = %peer, error = %e, "upgraded tunnel failed"),
    }
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
