//! # sitio
//!
//! A sidecar that decorates an HTTP service without touching its code: it
//! listens on `PORT`, forwards to the service on `TARGET_PORT`, and applies
//! [`Decorator`]s to every exchange on the way (error pages, logs, and whatever
//! you write in a few lines of Rust).
//!
//! A custom sitio, with every setting, flag and built-in of the stock binary,
//! plus a decorator that adds a header to every answer:
//!
//! ```no_run
//! use sitio::{Action, Decorator, Decorators, Exchange, http};
//!
//! struct PoweredBy;
//!
//! impl Decorator for PoweredBy {
//!     type State = ();
//!
//!     fn on_response(&self, head: &mut http::response::Parts, _: &mut (), _: &mut Exchange) -> Action<'_> {
//!         head.headers.insert("x-powered-by", http::HeaderValue::from_static("sitio"));
//!         Action::Continue
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     sitio::main(|_config| Decorators::builder().with(PoweredBy).build())
//! }
//! ```
//!
//! The phases, their order and what each hook may do: `docs/decorators.md` in
//! the repository; runnable custom binaries: `examples/`.
//!
//! # Layout
//!
//! - [`main`] and `cli`: the command line of `sitio` and of custom binaries (one call);
//!   [`run`] in [`server`]: listeners, preparation, drain on shutdown; the binary, custom
//!   binaries and the tests all start through it. `connection`: the accept loop (with
//!   `idle`, which makes room at the connection cap and ends parked connections at the
//!   idle timeout) and one connection from protocol detection to close (HTTP/1, HTTP/2
//!   or a tunnel). `lot`: each worker's idle keep-alive sockets, parked in an `epoll` set
//!   of its own outside any task with about a hundred bytes each (the connection's state
//!   is rebuilt when its next request comes); it stands in the idle registry for them.
//! - `workers`: thread per core (`SITIO_WORKERS`): a current-thread runtime and a listening
//!   socket (SO_REUSEPORT) per worker, all serving through the same accept loop.
//! - `compose`: the order of every decorator, built-in or yours, in one place.
//! - `clock`: the one clock of exchange timings and built-in timers (Tokio's, so tests
//!   pause and advance time instead of sleeping).
//! - `detect`: tells HTTP/1 from other protocols by the first bytes, whatever their split.
//! - `io`: the client connection as hyper sees it (replayed bytes, header, idle, body and
//!   send timeouts, the parking of idle keep-alive connections without hyper's buffers, the
//!   lingering close after an early answer); `deadline`: the timers behind them; `send_window`: keeps a response
//!   body from running ahead of its client's socket; `interim`: relays `103 Early Hints`.
//! - `engine`: the exchange driver, the one owner of the phase order (guard, request
//!   hooks, upstream choice, forwarding, send, error path, response hooks, body,
//!   completion) over a `Leg`, the seam to the protocol; its in-memory leg is
//!   [`Decorators::simulate`]; `engine::tracked` is the response body that runs the
//!   filters and completes the exchange.
//! - `proxy`: the HTTP/1 leg: a client connection's decorators, upstreams, forwarding
//!   edits, the send with interim responses and upgrades, its send window.
//! - `h2c`: the HTTP/2 leg: h2c clients (prior knowledge) served stream by stream through
//!   the same driver; `upstream::h2` speaks HTTP/2 to the service.
//! - `filter`: body filters ([`BodyFilter`]) with their end-of-stream flush.
//! - `guard`: refuses requests whose framing or target is ambiguous (smuggling);
//!   `head_scan` notes the raw framing headers before hyper normalises them.
//! - `headers`: hop-by-hop removal, canonical lengths, forwarding headers; `names`: the
//!   common header names found fast (both HTTP/1 parsers).
//! - `upstream`: connections to the service and named upstreams: connect timeout, sharded pool (a connection
//!   is reused only once both directions of its exchange ended; idle ones swept once a
//!   second), retries, bodies;
//!   `upstream::h1` is sitio's own HTTP/1 client (on `httparse`), driven inline in the
//!   exchange's task: request head encoded in one buffer, response head parsed into one
//!   (into the request's field map, which it is done with), its hop-by-hop fields read
//!   and left out as the map is built (`upstream::h1::hops`); or, when nothing on the way
//!   reads response heads ([`Decorator::ON_RESPONSE`]), its fields kept as the lines the
//!   client gets, with no map (`upstream::h1::lines`).
//! - `h1`: sitio's own server side of HTTP/1 on the client connection: request head
//!   (`httparse`), response encoder and the connection loop, one read and one write buffer
//!   per awake connection. It serves requests with no body, one of known length or a
//!   chunked one (read as the exchange asks, `client_body`; response trailers for `TE:
//!   trailers`) and upgrades (the tunnel relayed in the loop after the `101`), and
//!   hands a head its parser refuses with every byte read to hyper's server
//!   (`connection::serve_awake`), which answers it; both sides are held to the same
//!   bytes out (unit tests, the desync corpus, fuzz targets).
//!   `client_body`: a request body that loop reads as the exchange asks for it.
//!   `chunked`: the chunked coding's decoder by hyper's rules, for request bodies there
//!   and response bodies in `upstream::h1`.
//!   `splice`: when no decorator has request hooks ([`Decorator::ON_REQUEST`]), the
//!   head the service gets made from the client's bytes as they are read (hop-by-hop
//!   lines cut, forwarding fields added), not from an edited field map.
//! - `tunnel`: opaque TCP and upgraded (WebSocket) tunnels.
//! - [`decorator`]: the decorator API (hooks, [`Action`], typed state, [`Exchange`]),
//!   the chain and how one hook is called (state found, panic caught), named upstreams
//!   ([`Target`]), the built-in access log, error pages and `on_status`.
//! - [`resilience`]: built-in decorators next to the service: circuit breaker, crash
//!   notifications (webhook and mail), stale copies, fault injection, rate limits.
//! - [`auth`]: bearer-token (OIDC / JWT) auth, the built-in Keycloak decorator: its
//!   settings, the identity provider's key set (fetched, discovered, refreshed), token checks.
//! - [`split`]: A/B testing: variants as named upstreams, sticky clients, the guard that
//!   sends traffic back to the service when a variant is worse.
//! - [`error`]: who failed and how (kind, status, source chain); `rescue` turns any
//!   failure into the response; [`content`]: what format a client wants it in.
//! - [`body`], [`response`]: the body type and response helpers for decorators.
//! - [`telemetry`]: per-endpoint and per-upstream statistics (sharded per thread), route
//!   folding, connection, tunnel and refusal counters, Prometheus text, `/stats` JSON, the
//!   tap, process figures; built-ins report their own sections through `Report`.
//! - [`config`]: settings from env vars and flags (`units` parses durations); `admin`: health, metrics, stats,
//!   tap and the dashboard (`src/dashboard.html`); `memory`: returns free memory after load.
//! - `mothership`: `sitio mothership`, the fleet view over Prometheus.
//! - `inject`: `sitio inject` / `uninject`, sitio added to (taken from) Kubernetes manifests.
//! - `health`: `sitio health`, the container health check that asks the admin port.
//! - `demo`: the embedded photo-library service behind `sitio demo`; `client` and `tls`:
//!   sitio's own requests (webhooks, key sets) over http or https.
//! - `log`: log output ([`init_logging`]): `tracing` for every line, and a direct writer
//!   that formats the access line as `tracing` would, at a fraction of its cost.
//! - [`grpc`]: gRPC status codes (names, HTTP equivalents), `grpc-status` of answers, the
//!   `grpc-timeout` deadline held for the whole call.
//! - `fuzzing` (tests and the `fuzzing` feature): drives one connection in memory for `fuzz/`.

pub mod auth;
pub mod body;
pub mod config;
pub mod content;
pub mod decorator;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod grpc;
pub mod resilience;
pub mod response;
pub mod server;
pub mod split;
pub mod telemetry;

mod admin;
mod chunked;
mod cli;
mod client;
mod client_body;
mod clock;
mod compose;
mod connection;
mod deadline;
mod demo;
mod detect;
mod engine;
mod filter;
mod guard;
mod h1;
mod h2c;
mod head_scan;
mod headers;
mod health;
mod idle;
mod inject;
mod interim;
mod io;
mod log;
mod lot;
mod memory;
mod mothership;
mod names;
mod proxy;
mod rescue;
mod send_window;
mod splice;
mod tls;
mod tunnel;
mod units;
mod upstream;
mod workers;

/// The `bytes` crate of body chunks.
pub use bytes;
/// The `http` crate sitio's hooks speak (request and response heads, headers).
pub use http;

pub use body::Body;
pub use cli::IntoDecorators;
pub use config::{Config, LogFormat, PageFor};
pub use decorator::{
    AccessLog, Action, BodyFilter, Decorator, Decorators, DecoratorsBuilder, ErrorPages, Exchange,
    OnStatus, StatusMatch, Target, Waiting, on_status,
};
pub use engine::Simulated;
pub use error::{Blame, ErrorKind, ProxyError, StartError};
pub use log::{LogGuard, init_logging};
pub use server::{Listeners, run};

/// The decorators `sitio` runs with by default for `config`: the access log
/// (outermost, so it logs what the client got), then the error pages. For
/// [`run`]; [`main`] adds them itself.
pub fn default_decorators(config: &Config) -> Result<Decorators, StartError> {
    compose::stock(config, Decorators::none())
}

/// Runs sitio exactly as the stock binary does, with your decorators: every
/// env var and flag (before or after a subcommand), `--help` and `--version`,
/// logging, `SITIO_WORKERS`, the built-in decorators the settings switch on,
/// the `demo` subcommands, and the exit codes (2: a bad setting, named).
/// `decorate` receives the parsed settings; its decorators sit between the
/// access log and the error pages (the order is in the `compose` module). It
/// may return `Result<Decorators, StartError>` to refuse settings of its own:
/// a [`StartError::Config`] exits with code 2 and its message.
///
/// ```no_run
/// use sitio::{Action, Decorators, on_status, response};
///
/// fn main() -> std::process::ExitCode {
///     sitio::main(|_config| {
///         Decorators::builder()
///             .with(on_status(404, |_head, _exchange| {
///                 Action::Respond(response::html(404, "<h1>Look Somewhere Else</h1>"))
///             }))
///             .build()
///     })
/// }
/// ```
pub fn main<R: IntoDecorators>(decorate: impl FnOnce(&Config) -> R) -> std::process::ExitCode {
    cli::main(decorate)
}

/// Resolves on SIGTERM or SIGINT: what an orchestrator sends to stop a container.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
