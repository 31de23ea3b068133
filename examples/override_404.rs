//! The seed's `override_404`, as a sitio decorator: the service's boring 404
//! becomes a page of our own, with the connection kept alive.
//!
//! ```sh
//! python3 -m http.server 8087 &          # the service
//! cargo run --example override_404       # sitio on PORT=8080
//! curl -i localhost:8080/nope            # our 404 page
//! ```

use sitio::{Action, Decorators, on_status, response};

const PAGE: &str = "<body><h1>Look Somewhere Else / Not Found</h1></body>\n";

/// The stock sitio (every setting, `--help`, logging, exit codes) plus this
/// decorator: `PORT` (8080) in front of `TARGET_PORT` (8087) by default.
fn main() -> std::process::ExitCode {
    sitio::main(|_config| {
        Decorators::builder()
            .with(on_status(404, |_head, _exchange| {
                Action::Respond(response::html(404, PAGE))
            }))
            .build()
    })
}
