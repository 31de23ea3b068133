//! # sitio
//!
//! A sidecar that decorates an HTTP service without touching its code: it
//! listens on `PORT`, forwards to the service on `TARGET_PORT`, and applies
//! [`Decorator`]s to every exchange on the way (error pages, logs, and whatever
//! you write in a few lines of Rust).
//!
//! # Layout
//!
//! - [`server`]: listeners, the accept loop, per-connection serving, drain on shutdown;
//!   its [`run`] is the single entry point of the binary and the tests.
//! - `detect`: tells HTTP/1 from other protocols by the first bytes.
//! - `io`: the client connection as hyper sees it (replayed bytes, header and idle timeouts);
//!   `deadline`: the timers behind those timeouts, cheap to push back.
//! - `proxy`: one exchange on the hot path (guard, hooks, service, response).
//! - `guard`: refuses requests whose framing is ambiguous (smuggling);
//!   `head_scan` notes the raw framing headers before hyper normalises them.
//! - `headers`: hop-by-hop removal and forwarding headers.
//! - `upstream`: connections to the service: connect timeout, sharded pool, retries, bodies.
//! - `tracked`: the response body that reports completion.
//! - `tunnel`: opaque TCP and upgraded (WebSocket) tunnels.
//! - [`decorator`]: the decorator API, the chain, the built-in decorators, and
//!   `Decorators::simulate`, which runs a chain in memory (unit tests, `benches/`).
//! - [`resilience`]: the circuit breaker and crash notifications.
//! - [`error`]: who failed and how; [`rescue`] turns failures into responses.
//! - [`body`], [`response`]: the body type and response helpers for decorators.
//! - [`telemetry`]: per-endpoint statistics (sharded per thread), route folding,
//!   Prometheus text, `/stats` JSON, the tap, process figures.
//! - [`config`]: settings from env vars and flags; `admin`: health, metrics, stats,
//!   tap and the dashboard (`src/dashboard.html`).
//! - [`demo`]: the embedded photo-library service behind `sitio demo`.
//! - `fuzzing` (tests and the `fuzzing` feature): drives one connection in memory for `fuzz/`.

pub mod body;
pub mod config;
pub mod content;
pub mod decorator;
pub mod demo;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod rescue;
pub mod resilience;
pub mod response;
pub mod server;
pub mod telemetry;

mod admin;
mod deadline;
mod detect;
mod guard;
mod head_scan;
mod headers;
mod idle;
mod interim;
mod io;
mod memory;
mod proxy;
mod send_window;
mod tracked;
mod tunnel;
mod upstream;

pub use body::Body;
pub use config::{Config, LogFormat};
pub use decorator::{
    AccessLog, Action, Decorator, Decorators, ErrorPages, Exchange, OnStatus, StatusMatch,
    on_status,
};
pub use detect::{Protocol, classify};
pub use error::{Blame, ErrorKind, ProxyError, StartError};
pub use guard::{RawFraming, Rejection, Verdict, check as check_request};
pub use server::{Listeners, run};

/// The decorators `sitio` runs with by default for `config`: the access log
/// (outermost, so it logs what the client got), then the error pages.
pub fn default_decorators(config: &Config) -> Result<Decorators, StartError> {
    let mut chain = Decorators::builder();
    if config.access_log {
        chain = chain.with(AccessLog);
    }
    let pages = ErrorPages::from_files(
        config.error_page_404.as_deref(),
        config.error_page_5xx.as_deref(),
    )?;
    if !pages.is_empty() {
        chain = chain.with(pages);
    }
    Ok(chain.build())
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

/// Log lines queued for the background writer before new ones are dropped.
const LOG_QUEUE_LINES: usize = 8192;

/// Keeps the background log writer running; logs are flushed when it drops.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Sets up `tracing` output: `RUST_LOG` picks levels (default `info`), `format`
/// picks text or JSON lines. Lines are written by a background thread, so a
/// request never waits on the stderr lock every core would share; under
/// extreme load lines are dropped rather than traffic slowed. Keep the
/// returned guard alive. Safe to call more than once.
pub fn init_logging(format: LogFormat) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The writer's queue is allocated (and touched) whole at startup: the
    // default 128k lines cost 4 MiB of resident memory for nothing. 8k lines
    // (256 KiB) absorb bursts; beyond that lines are dropped, as documented.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}
