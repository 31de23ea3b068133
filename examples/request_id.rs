//! Request ids: every request reaches the service with an `X-Request-Id` (the
//! client's own, or a new one), and every response carries it back, sitio's
//! own answers included (a 502 when the service is down, a 400 for a refused
//! request), so a client can quote it and the service's logs can be searched.
//!
//! ```sh
//! python3 -m http.server 8087 &          # the service
//! cargo run --example request_id         # sitio on PORT (8080)
//! curl -i localhost:8080/                # x-request-id: 3f2a...
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use sitio::http::{HeaderName, HeaderValue, request, response};
use sitio::{Action, Decorator, Decorators, Exchange};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds and echoes `X-Request-Id`.
struct RequestId {
    /// Ids are this process's start time and a counter: unique across
    /// restarts without a random source on the request path.
    prefix: u64,
    next: AtomicU64,
}

impl RequestId {
    fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        RequestId {
            prefix: now ^ u64::from(std::process::id()).rotate_left(40),
            next: AtomicU64::new(0),
        }
    }

    fn fresh(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:016x}-{n:08x}", self.prefix))
            .unwrap_or(HeaderValue::from_static("unknown"))
    }
}

impl Decorator for RequestId {
    /// The id of this exchange, once known.
    type State = Option<HeaderValue>;

    fn name(&self) -> &'static str {
        "request_id"
    }

    fn on_request(
        &self,
        head: &mut request::Parts,
        id: &mut Option<HeaderValue>,
        _: &mut Exchange,
    ) -> Action<'_> {
        // A client's id is kept if it is a sane token; anything else is replaced.
        let given = head
            .headers
            .get(&X_REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
            .cloned();
        let value = given.unwrap_or_else(|| self.fresh());
        head.headers.insert(X_REQUEST_ID.clone(), value.clone());
        *id = Some(value);
        Action::Continue
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        id: &mut Option<HeaderValue>,
        _: &mut Exchange,
    ) -> Action<'_> {
        // A request the guard refused never reached `on_request`: it gets an
        // id here, so even a 400 can be quoted.
        let value = id.get_or_insert_with(|| self.fresh()).clone();
        head.headers.insert(X_REQUEST_ID.clone(), value);
        Action::Continue
    }
}

/// The stock sitio (every setting, `--help`, logging, exit codes) plus this decorator.
fn main() -> std::process::ExitCode {
    sitio::main(|_config| Decorators::builder().with(RequestId::new()).build())
}
