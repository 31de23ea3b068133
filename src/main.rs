//! The `sitio` binary: parse configuration, bind, call [`sitio::run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sitio::{Config, Decorators, ErrorPages, Listeners, StartError};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log = sitio::init_logging(cli.config.log_format);
    let workers = match cli.config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker needs no work-stealing scheduler: a current-thread runtime
    // runs the accept loop and the connections on the same thread, with no
    // cross-thread wake-ups or atomics on every task switch.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sitio: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            None => proxy(cli.config).await,
            Some(Command::Demo) => demo(cli.config).await,
            Some(Command::DemoBackend) => demo_backend(cli.config.target_port).await,
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

async fn proxy(config: Config) -> Result<(), StartError> {
    let decorators = sitio::default_decorators(&config)?;
    let listeners = Listeners::bind(&config)?;
    sitio::run(listeners, config, decorators, sitio::shutdown_signal()).await
}

async fn demo(mut config: Config) -> Result<(), StartError> {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StartError::Io("demo: cannot bind the demo service".into(), e))?;
    let backend_addr = backend
        .local_addr()
        .map_err(|e| StartError::Io("demo".into(), e))?;
    tokio::spawn(sitio::demo::serve_backend(backend));
    config.target_host = "127.0.0.1".into();
    config.target_port = backend_addr.port();
    let pages = ErrorPages::new()
        .not_found(sitio::demo::NOT_FOUND_PAGE)
        .server_error(sitio::demo::SERVER_ERROR_PAGE);
    let decorators = Decorators::builder()
        .with(sitio::AccessLog)
        .with(pages)
        .build();
    let listeners = Listeners::bind(&config)?;
    let traffic = listeners
        .traffic
        .local_addr()
        .map_err(|e| StartError::Io("demo".into(), e))?;
    let admin = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    sitio::demo::print_banner(traffic, admin, backend_addr);
    sitio::run(listeners, config, decorators, sitio::shutdown_signal()).await
}

async fn demo_backend(port: u16) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| StartError::Io(format!("TARGET_PORT: cannot listen on port {port}"), e))?;
    tracing::info!(port, "demo service listening");
    tokio::select! {
        () = sitio::demo::serve_backend(listener) => {}
        () = sitio::shutdown_signal() => {}
    }
    Ok(())
}
