//! In-memory driver for fuzzing the request path: arbitrary client bytes go
//! through protocol detection, the HTTP/1 parser, the guard and the proxy to a
//! real (loopback) service, and whatever sitio answers comes back.
//!
//! Built only for tests and with the `fuzzing` feature (used by `fuzz/`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::connection::{Instance, serve_connection};
use crate::decorator::{AccessLog, Decorators, ErrorPages};
use crate::server::prepare;

/// How sitio tells protocols apart by the first bytes (internal elsewhere).
pub use crate::detect::{Protocol, classify};

/// A loopback service answering every request, shared by all runs.
fn service_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                crate::demo::serve_backend(
                    listener,
                    crate::demo::Version::Stable,
                    Default::default(),
                )
                .await;
            });
        });
        port
    })
}

/// Feeds `input` to sitio as one client connection, followed by a request that
/// asks to close (so complete inputs end fast; incomplete ones end by the short
/// header timeout), and returns every byte sitio sent back. Panics only if
/// sitio does.
pub fn serve_bytes(input: &[u8]) -> Vec<u8> {
    let config = Config {
        target_port: service_port(),
        header_timeout: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(50),
        access_log: false,
        ..Config::default()
    };
    let decorators = Decorators::builder()
        .with(AccessLog)
        .with(
            ErrorPages::new()
                .not_found("<h1>404</h1>")
                .server_error("<h1>5xx</h1>"),
        )
        .build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tasks = tokio_util::task::TaskTracker::new();
        let Ok((shared, config, http)) = prepare(config, decorators, tasks) else {
            return Vec::new();
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let instance = Instance {
            shared,
            config,
            http,
            stop: stop_rx,
        };
        let conn = tokio::spawn(serve_connection((instance, None), server, peer));
        let _ = client.write_all(input).await;
        let _ = client
            .write_all(b"GET /end HTTP/1.1\r\nHost: end\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
        conn.abort();
        out
    })
}

#[cfg(test)]
mod tests {
    use super::serve_bytes;

    #[test]
    fn the_fuzz_driver_proxies_and_refuses() {
        let ok = serve_bytes(b"GET /photos/1.svg HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(
            ok.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&ok)
        );
        let bad = serve_bytes(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(
            bad.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&bad)
        );
        let _ = serve_bytes(b"\x00\x01\x02 not http at all");
    }
}

/// The service connection's HTTP/1 codec reading `input` as a response
/// delivered in reads of at most `piece` bytes, then the end of the stream:
/// what it decoded (status, fields, body, trailers, reuse) or why it refused,
/// as text, so that two ways of splitting the same bytes can be compared.
pub fn decode_response(input: &[u8], piece: usize, head_request: bool) -> String {
    format!(
        "{:?}",
        crate::upstream::h1::replay::replay(input, piece, head_request)
    )
}

/// The service connection's codec step by step, for `benches/codec.rs`.
pub mod codec {
    use bytes::BytesMut;

    /// Reads one response from `input` as a keep-alive exchange does: the
    /// bytes land in the connection's buffer (a copy, as a read would
    /// make), the head is parsed into the response's parts, the body framed
    /// and split off. Returns the body's length; panics on a bad response.
    pub fn read_response(buf: &mut BytesMut, input: &[u8]) -> usize {
        use crate::upstream::h1::replay::read_once;
        buf.extend_from_slice(input);
        read_once(buf)
    }

    /// Encodes `head` (and an empty body) as the request the service gets.
    /// Returns the encoded length.
    pub fn write_request(head: http::request::Parts) -> usize {
        crate::upstream::h1::replay::encode_once(head)
    }
}
