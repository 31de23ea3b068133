//! Configuration, 12-factor style: every setting is both an environment variable
//! and a command-line flag. The value name shown in errors is the environment
//! variable, so a bad value is reported by the name the operator set.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use crate::content::PageFor;
pub use crate::tls::CaFile;
pub use crate::units::parse_duration;
use crate::units::parse_switch;

pub use crate::log::LogFormat;

/// What sitio does with a connection whose first bytes are clearly not
/// HTTP/1 (a TLS ClientHello, the HTTP/2 preface, another protocol's line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OpaqueMode {
    /// Tunnel it to the service as opaque TCP.
    #[default]
    Auto,
    /// Treat every connection as HTTP/1: what does not parse gets 400.
    Off,
}

/// The protocol sitio speaks to the service (`SITIO_TARGET_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TargetProtocol {
    /// HTTP/2 (h2c) to clients that spoke HTTP/2, HTTP/1.1 to the others.
    #[default]
    Auto,
    /// HTTP/1.1 always (an HTTP/2 client's requests are translated).
    Http1,
    /// HTTP/2 with prior knowledge (h2c) always, as gRPC services need.
    H2c,
}

fn parse_error_page(s: &str) -> Result<(PageFor, PathBuf), String> {
    let (code, file) = s
        .split_once('=')
        .ok_or_else(|| format!("expected CODE=FILE (e.g. 503=/pages/busy.html), got {s:?}"))?;
    Ok((PageFor::parse(code)?, PathBuf::from(file)))
}

/// A period that may be switched off (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval(pub Option<Duration>);

/// Everything that shapes one sitio instance.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Port sitio listens on, all interfaces, IPv4 and IPv6.
    #[arg(long, global = true, env = "PORT", value_name = "PORT", default_value_t = defaults::PORT)]
    pub port: u16,

    /// Port of the decorated service.
    #[arg(long, global = true, env = "TARGET_PORT", value_name = "TARGET_PORT", default_value_t = defaults::TARGET_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub target_port: u16,

    /// Host of the decorated service (a name or an address).
    #[arg(long, global = true, env = "SITIO_TARGET_HOST", value_name = "SITIO_TARGET_HOST", default_value = defaults::TARGET_HOST)]
    pub target_host: String,

    /// Port of the admin server (dashboard, /stats, /metrics, /tap, /live, /ready); must differ from PORT.
    #[arg(long, global = true, env = "SITIO_ADMIN_PORT", value_name = "SITIO_ADMIN_PORT", default_value_t = defaults::ADMIN_PORT)]
    pub admin_port: u16,

    /// HTML file that replaces the service's 404 pages.
    #[arg(
        long,
        global = true,
        env = "SITIO_ERROR_PAGE_404",
        value_name = "SITIO_ERROR_PAGE_404"
    )]
    pub error_page_404: Option<PathBuf>,

    /// HTML file that replaces the service's 5xx pages (and sitio's 502/504).
    #[arg(
        long,
        global = true,
        env = "SITIO_ERROR_PAGE_5XX",
        value_name = "SITIO_ERROR_PAGE_5XX"
    )]
    pub error_page_5xx: Option<PathBuf>,

    /// HTML file for any 4xx/5xx status or class, e.g. `503=/pages/busy.html` or
    /// `4XX=/pages/client.html`; repeatable. Env: `SITIO_ERROR_PAGE_<code>` (`_401`, `_4XX`, ...).
    #[arg(long = "error-page", global = true, value_name = "CODE=FILE",
          value_parser = parse_error_page)]
    pub error_pages: Vec<(PageFor, PathBuf)>,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, global = true, env = "SITIO_DRAIN_SECONDS", value_name = "SITIO_DRAIN_SECONDS", default_value_t = defaults::DRAIN_SECONDS)]
    pub drain_seconds: u64,

    /// Log format.
    #[arg(long, global = true, env = "SITIO_LOG_FORMAT", value_name = "SITIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest request head in bytes (8192..=1048576); larger heads get 431.
    #[arg(long, global = true, env = "SITIO_MAX_HEADER_BYTES", value_name = "SITIO_MAX_HEADER_BYTES",
          default_value_t = defaults::MAX_HEADER_BYTES, value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,

    /// Most request headers (1..=1000); more get 431.
    #[arg(long, global = true, env = "SITIO_MAX_HEADERS", value_name = "SITIO_MAX_HEADERS",
          default_value_t = defaults::MAX_HEADERS, value_parser = parse_max_headers)]
    pub max_headers: usize,

    /// Time a client has to send a whole request head (e.g. 10s, 500ms); then 408.
    #[arg(long, global = true, env = "SITIO_HEADER_TIMEOUT", value_name = "SITIO_HEADER_TIMEOUT",
          default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time an idle keep-alive client connection is kept open.
    #[arg(long, global = true, env = "SITIO_IDLE_TIMEOUT", value_name = "SITIO_IDLE_TIMEOUT",
          default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Longest pause while a request body is still arriving; then the connection closes.
    #[arg(long, global = true, env = "SITIO_BODY_TIMEOUT", value_name = "SITIO_BODY_TIMEOUT",
          default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Longest a response write may wait on a client that does not read; then it closes.
    #[arg(long, global = true, env = "SITIO_SEND_TIMEOUT", value_name = "SITIO_SEND_TIMEOUT",
          default_value = "60s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// Time allowed to open a TCP connection to the service; then 504. Above
    /// Linux's SYN retransmissions at 1 s and 3 s, so a SYN dropped by a full
    /// backlog is a short wait, not an error.
    #[arg(long, global = true, env = "SITIO_CONNECT_TIMEOUT", value_name = "SITIO_CONNECT_TIMEOUT",
          default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time an idle pooled connection to the service is kept for reuse.
    #[arg(long, global = true, env = "SITIO_UPSTREAM_IDLE_TIMEOUT", value_name = "SITIO_UPSTREAM_IDLE_TIMEOUT",
          default_value = "30s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// Longest wait for the service's response head; then 504 (`off` to wait forever).
    #[arg(long, global = true, env = "SITIO_UPSTREAM_TIMEOUT", value_name = "SITIO_UPSTREAM_TIMEOUT",
          default_value = "60s", value_parser = parse_interval)]
    pub upstream_timeout: Interval,

    /// Send a safe request again when a stale pooled connection fails (on|off).
    #[arg(long, global = true, env = "SITIO_RETRIES", value_name = "SITIO_RETRIES",
          default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub retries: bool,

    /// PEM file of CA certificates trusted besides the public roots (https webhooks).
    #[arg(long, global = true, env = "SITIO_CA_FILE", value_name = "SITIO_CA_FILE",
          value_parser = crate::tls::parse_ca_file)]
    pub ca_file: Option<CaFile>,

    /// Most client connections served at once; further ones wait in the backlog.
    #[arg(long, global = true, env = "SITIO_MAX_CONNECTIONS", value_name = "SITIO_MAX_CONNECTIONS",
          default_value_t = defaults::MAX_CONNECTIONS, value_parser = parse_max_connections)]
    pub max_connections: usize,

    /// Workers: threads with a runtime and a listening socket each, thread per core (0: one per CPU core).
    #[arg(
        long,
        global = true,
        env = "SITIO_WORKERS",
        value_name = "SITIO_WORKERS",
        default_value_t = 0
    )]
    pub workers: usize,

    /// Per-endpoint statistics, `/stats`, `/metrics` requests, tap and dashboard (on|off).
    #[arg(long, global = true, env = "SITIO_STATS", value_name = "SITIO_STATS",
          default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub stats: bool,

    /// Route patterns for statistics, comma-separated (e.g. `/users/{id},/static/*`).
    #[arg(long, global = true, env = "SITIO_ROUTES", value_name = "SITIO_ROUTES", default_value = "", hide_default_value = true,
          value_parser = parse_routes)]
    pub routes: String,

    /// Most distinct routes counted (1..=100000); later ones count as `{other}`.
    #[arg(long, global = true, env = "SITIO_MAX_ROUTES", value_name = "SITIO_MAX_ROUTES",
          default_value_t = defaults::MAX_ROUTES, value_parser = parse_max_routes)]
    pub max_routes: usize,

    /// Log a summary table this often (e.g. 2s); `off` by default.
    #[arg(long, global = true, env = "SITIO_STATS_INTERVAL", value_name = "SITIO_STATS_INTERVAL",
          default_value = "off", value_parser = parse_interval)]
    pub stats_interval: Interval,

    /// Tunnel connections that are clearly not HTTP/1 (TLS, h2c, other protocols) as
    /// opaque TCP (`auto`), or refuse them as malformed HTTP (`off`).
    #[arg(long, global = true, env = "SITIO_OPAQUE", value_name = "SITIO_OPAQUE", value_enum,
          default_value_t = OpaqueMode::Auto)]
    pub opaque: OpaqueMode,

    /// Protocol to the service: auto (HTTP/2 for HTTP/2 clients, else HTTP/1.1), http1 or h2c.
    #[arg(long, global = true, env = "SITIO_TARGET_PROTOCOL", value_name = "SITIO_TARGET_PROTOCOL",
          value_enum, default_value_t = TargetProtocol::Auto)]
    pub target_protocol: TargetProtocol,

    /// Share PORT with another process with SO_REUSEPORT, for a rolling restart
    /// on one host (on|off). Off: a busy PORT stops startup.
    #[arg(long, global = true, env = "SITIO_REUSE_PORT", value_name = "SITIO_REUSE_PORT",
          default_value = "off", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub reuse_port: bool,

    /// `/ready` answers 503 until a connection to the service succeeds (on|off).
    #[arg(long, global = true, env = "SITIO_READY_REQUIRES_SERVICE", value_name = "SITIO_READY_REQUIRES_SERVICE",
          default_value = "off", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub ready_requires_service: bool,

    /// Per-request access log lines (on|off).
    #[arg(long, global = true, env = "SITIO_ACCESS_LOG", value_name = "SITIO_ACCESS_LOG",
          default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// The circuit breaker, `SITIO_BREAKER_*`.
    #[command(flatten)]
    pub breaker: crate::resilience::breaker::BreakerSettings,

    /// Crash notifications (webhook and mail), `SITIO_NOTIFY_*`.
    #[command(flatten)]
    pub notify: crate::resilience::notify::NotifySettings,

    /// Fault injection, `SITIO_FAULT_*`.
    #[command(flatten)]
    pub faults: crate::resilience::faults::FaultSettings,

    /// Rate limits, `SITIO_RATE_LIMIT*` and `SITIO_TRUSTED_PROXIES`.
    #[command(flatten)]
    pub rate_limit: crate::resilience::rate_limit::RateLimitSettings,

    /// Stale copies, `SITIO_STALE_*`.
    #[command(flatten)]
    pub stale: crate::resilience::stale::StaleSettings,

    /// A/B testing, `SITIO_SPLIT*`.
    #[command(flatten)]
    pub split: crate::split::SplitSettings,

    /// Bearer-token (OIDC / JWT) auth, `SITIO_AUTH_*`.
    #[command(flatten)]
    pub auth: crate::auth::AuthSettings,
}

impl Config {
    /// Adds the pages set by `SITIO_ERROR_PAGE_<code>` variables in `vars`
    /// (the process environment, for the binary), beyond the two that have
    /// flags of their own (`_404`, `_5XX`). A variable of that prefix that
    /// names no 4xx/5xx status or class is an error naming it.
    pub fn with_error_page_vars(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        for (name, value) in vars {
            let Some(code) = name.strip_prefix("SITIO_ERROR_PAGE_") else {
                continue;
            };
            if code == "404" || code.eq_ignore_ascii_case("5XX") {
                continue; // read by clap, into their own fields
            }
            let target = PageFor::parse(code).map_err(|e| format!("{name}: {e}"))?;
            self.error_pages.push((target, PathBuf::from(value)));
        }
        Ok(self)
    }

    /// Checks the settings that only make sense together (those clap checks
    /// one by one); the error names the variable and what it accepts.
    pub fn check(&self) -> Result<(), String> {
        self.notify.mail.check()
    }

    /// Every configured error page: the 404 and 5xx ones, then the others.
    pub fn error_page_files(&self) -> Vec<(PageFor, &std::path::Path)> {
        let mut files = Vec::new();
        if let Some(p) = &self.error_page_404 {
            files.push((PageFor::Status(404), p.as_path()));
        }
        if let Some(p) = &self.error_page_5xx {
            files.push((PageFor::ServerErrors, p.as_path()));
        }
        files.extend(self.error_pages.iter().map(|(t, p)| (*t, p.as_path())));
        files
    }

    /// Parses command-line style arguments (without the program name), as the
    /// binary does; the error says which setting is wrong and what it accepts.
    pub fn from_args<I, T>(args: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        #[derive(Parser)]
        #[command(name = "sitio", no_binary_name = true)]
        struct Flags {
            #[command(flatten)]
            config: Config,
        }
        let flags = Flags::try_parse_from(args).map_err(|e| e.to_string())?;
        Ok(flags.config)
    }
}

/// Default values, shared by the flags and [`Config::default`].
pub mod defaults {
    /// `PORT`.
    pub const PORT: u16 = 8080;
    /// `TARGET_PORT`.
    pub const TARGET_PORT: u16 = 8087;
    /// `SITIO_TARGET_HOST`.
    pub const TARGET_HOST: &str = "127.0.0.1";
    /// `SITIO_ADMIN_PORT`.
    pub const ADMIN_PORT: u16 = 9901;
    /// `SITIO_DRAIN_SECONDS`.
    pub const DRAIN_SECONDS: u64 = 30;
    /// `SITIO_MAX_HEADER_BYTES`.
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    /// `SITIO_MAX_HEADERS`.
    pub const MAX_HEADERS: usize = 100;
    /// `SITIO_MAX_CONNECTIONS`.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// `SITIO_MAX_ROUTES`.
    pub const MAX_ROUTES: usize = 500;
    /// Idle upstream connections kept per worker thread.
    pub const MAX_IDLE_PER_THREAD: usize = 64;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: defaults::PORT,
            target_port: defaults::TARGET_PORT,
            target_host: defaults::TARGET_HOST.to_owned(),
            admin_port: defaults::ADMIN_PORT,
            error_page_404: None,
            error_page_5xx: None,
            error_pages: Vec::new(),
            drain_seconds: defaults::DRAIN_SECONDS,
            log_format: LogFormat::Text,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_headers: defaults::MAX_HEADERS,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(30),
            max_connections: defaults::MAX_CONNECTIONS,
            workers: 0,
            access_log: true,
            stats: true,
            routes: String::new(),
            max_routes: defaults::MAX_ROUTES,
            stats_interval: Interval(None),
            upstream_timeout: Interval(Some(Duration::from_secs(60))),
            retries: true,
            ca_file: None,
            opaque: OpaqueMode::Auto,
            target_protocol: TargetProtocol::Auto,
            reuse_port: false,
            ready_requires_service: false,
            auth: crate::auth::AuthSettings::default(),
            breaker: Default::default(),
            notify: Default::default(),
            faults: Default::default(),
            rate_limit: Default::default(),
            stale: Default::default(),
            split: crate::split::SplitSettings::default(),
        }
    }
}

fn parse_range(s: &str, lo: usize, hi: usize, what: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("expected {what} from {lo} to {hi}")),
    }
}

fn parse_header_bytes(s: &str) -> Result<usize, String> {
    parse_range(s, 8192, 1 << 20, "a number of bytes")
}

fn parse_max_headers(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 1000, "a number of headers")
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 1_000_000, "a number of connections")
}

fn parse_max_routes(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 100_000, "a number of routes")
}

use crate::telemetry::routes::parse_routes;

fn parse_interval(s: &str) -> Result<Interval, String> {
    match s.trim() {
        "off" | "0" | "" => Ok(Interval(None)),
        other => parse_duration(other)
            .map(|d| Interval(Some(d)))
            .map_err(|e| format!("{e}, or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_the_binary_and_errors_name_the_setting() {
        let c = Config::from_args(["--port", "9000", "--fault-abort", "5%:503"]).unwrap();
        assert_eq!(c.port, 9000);
        assert!(c.faults.fault_abort.is_some());
        let e = Config::from_args(["--header-timeout", "soon"]).unwrap_err();
        assert!(
            e.contains("SITIO_HEADER_TIMEOUT") && e.contains("10s"),
            "{e}"
        );
        // Found by fuzz/config_parsing: a dash-led value still names its setting.
        let e = Config::from_args(["--port=-\u{1}"]).unwrap_err();
        assert!(e.contains("PORT"), "{e}");
    }

    #[test]
    fn error_pages_for_any_status_from_flags_and_variables() {
        let c = Config::from_args([
            "--error-page",
            "503=/p/busy.html",
            "--error-page",
            "4xx=/p/c.html",
        ])
        .unwrap();
        assert_eq!(
            c.error_pages[0],
            (PageFor::Status(503), PathBuf::from("/p/busy.html"))
        );
        assert_eq!(c.error_pages[1].0, PageFor::ClientErrors);
        let e = Config::from_args(["--error-page", "200=/p.html"]).unwrap_err();
        assert!(e.contains("400 to 599"), "{e}");
        let vars = |name: &str| vec![(name.to_owned(), "/p.html".to_owned())];
        let c = Config::default()
            .with_error_page_vars(vars("SITIO_ERROR_PAGE_401"))
            .unwrap();
        assert_eq!(c.error_page_files()[0].0, PageFor::Status(401));
        let e = Config::default()
            .with_error_page_vars(vars("SITIO_ERROR_PAGE_OOPS"))
            .unwrap_err();
        assert!(e.starts_with("SITIO_ERROR_PAGE_OOPS: expected"), "{e}");
        assert!(
            Config::default()
                .with_error_page_vars(vars("SITIO_ERROR_PAGE_5XX"))
                .unwrap()
                .error_pages
                .is_empty()
        );
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
        // Found by fuzz/config_parsing: overflow is refused, not wrapped or a panic.
        assert!(parse_duration("8888888888888888889h").is_err());
        assert!(parse_duration("18446744073709551615m").is_err());
    }
}
