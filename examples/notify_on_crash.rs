//! The seed's `service.on('http:500', header => send_mail())`: a decorator that
//! reports every failure of the service, whether it answered 5xx or could not
//! be reached at all. Here the "mail" is a warning in the log.
//!
//! ```sh
//! cargo run --example notify_on_crash    # sitio on PORT (8080), service on TARGET_PORT (8087)
//! ```

use http::Response;
use sitio::{Action, Blame, Body, Decorator, Decorators, Exchange, ProxyError};

struct NotifyOnCrash;

impl Decorator for NotifyOnCrash {
    type State = ();
    // No request hooks: request heads may go to the service as they came.
    const ON_REQUEST: bool = false;

    fn on_response(
        &self,
        head: &mut http::response::Parts,
        _: &mut (),
        ex: &mut Exchange,
    ) -> Action<'_> {
        if head.status.is_server_error() {
            send_mail(&format!(
                "{} {} answered {}",
                ex.method(),
                ex.path(),
                head.status
            ));
        }
        Action::Continue
    }

    fn on_error(&self, err: &ProxyError, _: &mut (), ex: &mut Exchange) -> Option<Response<Body>> {
        if err.blame() == Blame::Upstream {
            send_mail(&format!("{} {} failed: {err}", ex.method(), ex.path()));
        }
        None // keep sitio's own 502/504 page
    }
}

fn send_mail(what: &str) {
    tracing::warn!(target: "notify_on_crash", "the service crashed: {what}");
}

/// The stock sitio (every setting, `--help`, logging, exit codes) plus this decorator.
fn main() -> std::process::ExitCode {
    sitio::main(|_config| Decorators::builder().with(NotifyOnCrash).build())
}
