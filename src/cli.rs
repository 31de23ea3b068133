//! The command line of `sitio` and of every custom binary built on it (see
//! [`crate::main`]): settings from flags and env vars (accepted before or
//! after a subcommand), `--help`/`--version` as clap prints them, logging,
//! the runtime (`SITIO_WORKERS`), the subcommands, and exit codes (0 done,
//! 1 failed, 2 a setting or its use is wrong).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::decorator::{Decorators, ErrorPages};
use crate::error::StartError;
use crate::server::Listeners;

/// sitio: a sidecar that decorates an HTTP service without touching its code.
#[derive(Parser)]
#[command(name = "sitio", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Runs an embedded demo service with sitio in front of it (no setup needed).
    Demo,
    /// Runs only the embedded demo service, on TARGET_PORT.
    DemoBackend,
    /// Prints Kubernetes manifests with sitio added to every workload's pods
    /// (native sidecar, port swap by name, probes, resources, locked down).
    Inject {
        /// Manifests to read, YAML or JSON (`-`: standard input).
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
        /// sitio's image.
        #[arg(long, default_value = concat!("sitio:", env!("CARGO_PKG_VERSION")))]
        image: String,
        /// A plain sidecar container, for clusters before Kubernetes 1.29.
        #[arg(long)]
        legacy: bool,
    },
    /// Serves the mutating admission webhook that injects sitio into pods as
    /// they are created (HTTPS; POST /mutate, GET /healthz).
    Injector {
        /// PEM certificate chain (read again when the file changes).
        #[arg(long, value_name = "FILE")]
        tls_cert: std::path::PathBuf,
        /// PEM private key (read again when the file changes).
        #[arg(long, value_name = "FILE")]
        tls_key: std::path::PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
        listen: std::net::SocketAddr,
        /// sitio's image.
        #[arg(long, default_value = concat!("sitio:", env!("CARGO_PKG_VERSION")))]
        image: String,
        /// A plain sidecar container, for clusters before Kubernetes 1.29.
        #[arg(long)]
        legacy: bool,
    },
    /// Serves the fleet view of every sitio a Prometheus scrapes, on PORT
    /// (GET /, /fleet.json).
    Mothership {
        /// The Prometheus (or Thanos, Mimir) HTTP API to query, e.g. http://prometheus:9090.
        #[arg(long, value_name = "URL", value_parser = parse_prometheus)]
        prometheus: http::Uri,
    },
    /// Asks the running sitio's admin port (SITIO_ADMIN_PORT on 127.0.0.1)
    /// whether it is live: exit 0 if so, 1 if not (a container health check).
    Health {
        /// The admin path to ask: /live, or /ready to include the service.
        #[arg(long, default_value = "/live", value_parser = ["/live", "/ready"])]
        path: String,
    },
    /// Prints Kubernetes manifests with what `sitio inject` added taken out.
    Uninject {
        /// Manifests to read, YAML or JSON (`-`: standard input).
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
    },
}

/// See [`crate::main`].
pub(crate) fn main<R: IntoDecorators>(decorate: impl FnOnce(&Config) -> R) -> ExitCode {
    let mut cli = Cli::parse(); // prints --help/--version, or a usage error (exit 2)
    // Manifest tools: no settings, no runtime, no logging.
    match &cli.command {
        Some(Command::Inject {
            file,
            image,
            legacy,
        }) => {
            let opts = crate::inject::Options {
                image: image.clone(),
                legacy: *legacy,
            };
            return crate::inject::run(file, crate::inject::Direction::Inject, &opts);
        }
        Some(Command::Uninject { file }) => {
            let opts = crate::inject::Options {
                image: String::new(),
                legacy: false,
            };
            return crate::inject::run(file, crate::inject::Direction::Uninject, &opts);
        }
        _ => {}
    }
    // SITIO_ERROR_PAGE_<code> for any status: names clap cannot declare.
    let checked = cli
        .config
        .with_error_page_vars(std::env::vars())
        .and_then(|c| c.check().map(|()| c));
    cli.config = match checked {
        Ok(config) => config,
        Err(msg) => {
            eprintln!("sitio: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Health { path }) = &cli.command {
        return crate::health::check(cli.config.admin_port, path);
    }
    let _log = crate::init_logging(cli.config.log_format);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sitio: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            None => proxy(cli.config, decorate).await,
            Some(Command::Demo) => demo(cli.config).await,
            Some(Command::DemoBackend) => demo_backend(cli.config.target_port).await,
            Some(Command::Injector {
                tls_cert,
                tls_key,
                listen,
                image,
                legacy,
            }) => {
                let opts = crate::inject::Options { image, legacy };
                crate::inject::serve_webhook(tls_cert, tls_key, listen, opts).await
            }
            Some(Command::Mothership { prometheus }) => {
                let listen = std::net::SocketAddr::from(([0, 0, 0, 0], cli.config.port));
                crate::mothership::serve(listen, prometheus, cli.config.ca_file.as_ref()).await
            }
            Some(Command::Inject { .. } | Command::Uninject { .. } | Command::Health { .. }) => {
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(msg)) => {
            eprintln!("sitio: {msg}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("sitio: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the closure given to [`crate::main`] returns: decorators, or (when
/// the custom binary has settings of its own) a result whose
/// [`StartError::Config`] stops startup with exit code 2 and its message.
pub trait IntoDecorators {
    /// The decorators, or why sitio cannot start.
    fn into_decorators(self) -> Result<Decorators, StartError>;
}

impl IntoDecorators for Decorators {
    fn into_decorators(self) -> Result<Decorators, StartError> {
        Ok(self)
    }
}

impl IntoDecorators for Result<Decorators, StartError> {
    fn into_decorators(self) -> Result<Decorators, StartError> {
        self
    }
}

/// A current-thread runtime: it runs the admin server, the background tasks
/// and worker 0; `run` starts the other workers (`SITIO_WORKERS`), each on a
/// current-thread runtime of its own (thread per core, see `workers`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn proxy<R: IntoDecorators>(
    config: Config,
    decorate: impl FnOnce(&Config) -> R,
) -> Result<(), StartError> {
    let user = decorate(&config).into_decorators()?;
    let decorators = crate::compose::stock(&config, user)?;
    let listeners = Listeners::bind(&config)?;
    crate::run(listeners, config, decorators, crate::shutdown_signal()).await
}

async fn demo(mut config: Config) -> Result<(), StartError> {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StartError::Io("demo: cannot bind the demo service".into(), e))?;
    let backend_addr = backend
        .local_addr()
        .map_err(|e| StartError::Io("demo".into(), e))?;
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StartError::Io("demo: cannot bind the canary service".into(), e))?;
    let canary_addr = canary
        .local_addr()
        .map_err(|e| StartError::Io("demo".into(), e))?;
    let shared = crate::demo::Shared::default();
    tokio::spawn(crate::demo::serve_backend(
        backend,
        crate::demo::Version::Stable,
        shared.clone(),
    ));
    tokio::spawn(crate::demo::serve_backend(
        canary,
        crate::demo::Version::Canary,
        shared,
    ));
    config.target_host = "127.0.0.1".into();
    config.target_port = backend_addr.port();
    crate::demo::configure(&mut config, backend_addr, canary_addr);
    let pages = ErrorPages::new()
        .not_found(crate::demo::NOT_FOUND_PAGE)
        .server_error(crate::demo::SERVER_ERROR_PAGE);
    let decorators = Decorators::builder()
        .with(crate::AccessLog)
        .with(pages)
        .build();
    let listeners = Listeners::bind(&config)?;
    let traffic = listeners
        .traffic
        .local_addr()
        .map_err(|e| StartError::Io("demo".into(), e))?;
    let admin = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    crate::demo::print_banner(traffic, admin, backend_addr);
    crate::run(listeners, config, decorators, crate::shutdown_signal()).await
}

async fn demo_backend(port: u16) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| StartError::Io(format!("TARGET_PORT: cannot listen on port {port}"), e))?;
    tracing::info!(port, "demo service listening");
    tokio::select! {
        () = crate::demo::serve_backend(listener, crate::demo::Version::Stable, Default::default()) => {}
        () = crate::shutdown_signal() => {}
    }
    Ok(())
}

fn parse_prometheus(s: &str) -> Result<http::Uri, String> {
    crate::units::parse_http_url(s, "http://prometheus:9090")
}
