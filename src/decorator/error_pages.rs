//! Custom error pages, the seed's headline feature: the service's 404 and 5xx
//! bodies are replaced by the operator's pages, keeping status and keep-alive.

use std::path::Path;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::response;

use super::{Action, Decorator, Exchange};
use crate::error::StartError;
use crate::response as build;

/// Replaces 404 and/or 5xx response bodies with fixed HTML pages; clients that
/// ask for JSON get `application/problem+json` instead.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    not_found: Option<Bytes>,
    server_error: Option<Bytes>,
}

impl ErrorPages {
    /// No pages yet; add them with [`ErrorPages::not_found`] and [`ErrorPages::server_error`].
    pub fn new() -> Self {
        ErrorPages::default()
    }

    /// The HTML page sent for 404.
    pub fn not_found(mut self, html: impl Into<Bytes>) -> Self {
        self.not_found = Some(html.into());
        self
    }

    /// The HTML page sent for every 5xx.
    pub fn server_error(mut self, html: impl Into<Bytes>) -> Self {
        self.server_error = Some(html.into());
        self
    }

    /// Reads the pages from files; the error names the variable whose file is unreadable.
    pub fn from_files(
        not_found: Option<&Path>,
        server_error: Option<&Path>,
    ) -> Result<Self, StartError> {
        fn read(var: &str, path: Option<&Path>) -> Result<Option<Bytes>, StartError> {
            path.map(|p| {
                std::fs::read(p).map(Bytes::from).map_err(|e| {
                    StartError::Config(format!(
                        "{var}: cannot read error page {}: {e} (expected a readable HTML file)",
                        p.display()
                    ))
                })
            })
            .transpose()
        }
        Ok(ErrorPages {
            not_found: read("SITIO_ERROR_PAGE_404", not_found)?,
            server_error: read("SITIO_ERROR_PAGE_5XX", server_error)?,
        })
    }

    /// True when no page is configured (the decorator would do nothing).
    pub fn is_empty(&self) -> bool {
        self.not_found.is_none() && self.server_error.is_none()
    }
}

impl Decorator for ErrorPages {
    fn name(&self) -> &'static str {
        "error_pages"
    }

    fn on_response(&self, head: &mut response::Parts, ex: &mut Exchange) -> Action {
        let code = head.status.as_u16();
        let page = match code {
            404 => self.not_found.as_ref(),
            500..=599 => self.server_error.as_ref(),
            _ => None,
        };
        let Some(page) = page else {
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
