//! The smallest useful Pingora reverse proxy: every request goes to one
//! upstream over plain HTTP/1.1 with Pingora's connection pool. It is a
//! benchmark peer for sitio, so it does nothing sitio's bare mode would not.
//!
//! `PINGORA_LISTEN` (default 127.0.0.1:6188) and `PINGORA_UPSTREAM`
//! (default 127.0.0.1:8087) choose the addresses; Pingora's own flags
//! (`-c conf.yaml` for `threads: 1`) are parsed as usual.

use async_trait::async_trait;
use pingora::prelude::*;

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let listen = std::env::var("PINGORA_LISTEN").unwrap_or_else(|_| "127.0.0.1:6188".into());
    let upstream = std::env::var("PINGORA_UPSTREAM").unwrap_or_else(|_| "127.0.0.1:8087".into());
    let mut server = Server::new(Some(Opt::parse_args())).expect("pingora server");
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Forward { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
