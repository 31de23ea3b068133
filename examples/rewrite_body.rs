//! The seed's very first example: the service says "Boring", the client reads
//! "Cool!". `text/html` responses are rewritten as they stream, whatever their
//! framing (`Content-Length` or chunked) and wherever the chunks split a match;
//! sitio re-frames the shorter body, so keep-alive goes on working.
//!
//! ```sh
//! echo '<h1>Boring page</h1>' > index.html
//! python3 -m http.server 8087 &          # the service
//! cargo run --example rewrite_body       # sitio on PORT (8080)
//! curl localhost:8080/                   # <h1>Cool! page</h1>
//! ```

use sitio::bytes::{Bytes, BytesMut};
use sitio::http::{StatusCode, header, response};
use sitio::{Action, BodyFilter, Decorator, Decorators, Exchange};

const FROM: &[u8] = b"Boring";
const TO: &[u8] = b"Cool!";

/// Replaces `FROM` with `TO` in one body. Bytes that may be the start of a
/// match split across chunks are held back until the next chunk (or the end).
#[derive(Default)]
struct Replace {
    held: BytesMut,
}

impl BodyFilter for Replace {
    fn on_chunk(&mut self, chunk: &mut Bytes) {
        self.held.extend_from_slice(chunk);
        let text = self.held.split().freeze();
        let mut out = BytesMut::with_capacity(text.len());
        let mut rest = &text[..];
        while let Some(at) = find(rest, FROM) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(TO);
            rest = &rest[at + FROM.len()..];
        }
        // The longest tail that could still become a match waits.
        let keep = (1..FROM.len())
            .rev()
            .find(|&n| rest.len() >= n && rest.ends_with(&FROM[..n]))
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.held.extend_from_slice(&rest[rest.len() - keep..]);
        *chunk = out.freeze();
    }

    fn on_end(&mut self) -> Option<Bytes> {
        // A partial match at the very end is no match: it goes out as it was.
        (!self.held.is_empty()).then(|| self.held.split().freeze())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Installs [`Replace`] on the responses it can rewrite.
struct RewriteBody;

impl Decorator for RewriteBody {
    type State = ();
    const ON_REQUEST: bool = false;

    fn name(&self) -> &'static str {
        "rewrite_body"
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        (): &mut (),
        ex: &mut Exchange,
    ) -> Action<'_> {
        let html = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
        // Compressed bytes cannot be searched, and a byte range is not the
        // whole page: both pass untouched.
        let encoded = head.headers.contains_key(header::CONTENT_ENCODING);
        if html && !encoded && head.status != StatusCode::PARTIAL_CONTENT {
            // The validators describe the service's bytes, not these.
            head.headers.remove(header::ETAG);
            head.headers.remove(header::ACCEPT_RANGES);
            ex.filter_response_body(Replace::default());
        }
        Action::Continue
    }
}

/// The stock sitio (every setting, `--help`, logging, exit codes) plus this decorator.
fn main() -> std::process::ExitCode {
    sitio::main(|_config| Decorators::builder().with(RewriteBody).build())
}
