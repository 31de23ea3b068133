//! Custom error pages, the seed's headline feature: the service's (or sitio's)
//! 4xx and 5xx bodies are replaced by the operator's pages, keeping the status
//! and keep-alive. A page for one status wins over a page for its class.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::response;

use super::{Action, Decorator, Exchange};
pub use crate::content::PageFor;
use crate::response as build;

/// Replaces 4xx/5xx response bodies with fixed HTML pages; clients that ask
/// for JSON get `application/problem+json` instead.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    /// Pages for single statuses (a handful: a list beats a map).
    exact: Vec<(u16, Bytes)>,
    client_errors: Option<Bytes>,
    server_errors: Option<Bytes>,
}

impl ErrorPages {
    /// No pages yet; add them with [`ErrorPages::page`], [`ErrorPages::not_found`]
    /// and [`ErrorPages::server_error`].
    pub fn new() -> Self {
        ErrorPages::default()
    }

    /// The HTML page sent for `target` (a later page for the same target wins).
    pub fn page(mut self, target: PageFor, html: impl Into<Bytes>) -> Self {
        let html = html.into();
        match target {
            PageFor::Status(code) => {
                self.exact.retain(|(c, _)| *c != code);
                self.exact.push((code, html));
            }
            PageFor::ClientErrors => self.client_errors = Some(html),
            PageFor::ServerErrors => self.server_errors = Some(html),
        }
        self
    }

    /// The HTML page sent for 404.
    pub fn not_found(self, html: impl Into<Bytes>) -> Self {
        self.page(PageFor::Status(404), html)
    }

    /// The HTML page sent for every 5xx without a page of its own.
    pub fn server_error(self, html: impl Into<Bytes>) -> Self {
        self.page(PageFor::ServerErrors, html)
    }

    /// The page for `code`, if any.
    fn for_status(&self, code: u16) -> Option<&Bytes> {
        let exact = self.exact.iter().find(|(c, _)| *c == code).map(|(_, p)| p);
        exact.or(match code {
            400..=499 => self.client_errors.as_ref(),
            500..=599 => self.server_errors.as_ref(),
            _ => None,
        })
    }

    /// True when no page is configured (the decorator would do nothing).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.client_errors.is_none() && self.server_errors.is_none()
    }
}

impl Decorator for ErrorPages {
    type State = ();
    const ON_REQUEST: bool = false;
    fn name(&self) -> &'static str {
        "error_pages"
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        (): &mut (),
        ex: &mut Exchange,
    ) -> Action<'_> {
        let code = head.status.as_u16();
        // A page is no answer to a gRPC client.
        let Some(page) = self.for_status(code).filter(|_| !ex.is_grpc()) else {
            return Action::Continue;
        };
        let mut res = if ex.wants_json() {
            build::problem(code, head.status.canonical_reason().unwrap_or("Error"))
        } else {
            build::html(code, page.clone())
        };
        copy_non_content_headers(&head.headers, res.headers_mut());
        Action::Respond(res)
    }
}

/// Keeps the service's headers that describe the exchange (request ids,
/// cookies, `sitio-error`...) but drops those that describe the old body.
fn copy_non_content_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let describes_body = name.as_str().starts_with("content-")
            || name == header::ETAG
            || name == header::LAST_MODIFIED
            || name == header::ACCEPT_RANGES
            || name == header::TRANSFER_ENCODING
            || name == header::CACHE_CONTROL
            || name == header::EXPIRES;
        if !describes_body {
            to.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_a_status_wins_over_its_class() {
        let pages = ErrorPages::new()
            .server_error("5xx")
            .page(PageFor::Status(503), "busy")
            .page(PageFor::ClientErrors, "4xx")
            .not_found("gone");
        let got = |code| pages.for_status(code).map(|b| b.as_ref().to_vec());
        assert_eq!(got(503), Some(b"busy".to_vec()));
        assert_eq!(got(500), Some(b"5xx".to_vec()));
        assert_eq!(got(404), Some(b"gone".to_vec()));
        assert_eq!(got(401), Some(b"4xx".to_vec()));
        assert_eq!(got(302), None);
    }
}
