//! The pages sitio generates or substitutes: which format a client wants,
//! and which statuses an error page covers.

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};

/// True when the client asks for JSON and not for HTML, so an error should be
/// `application/problem+json` rather than a page. Browsers always list
/// `text/html`, API clients list `application/json` (or `*+json`) without it.
pub fn prefers_json(headers: &HeaderMap) -> bool {
    let mut json = false;
    for value in headers.get_all(ACCEPT) {
        match accept_verdict(value) {
            Some(false) => return false,
            Some(true) => json = true,
            None => {}
        }
    }
    json
}

/// [`prefers_json`] for a single `Accept` value.
pub fn accept_prefers_json(value: &HeaderValue) -> bool {
    accept_verdict(value) == Some(true)
}

/// `Some(false)`: HTML is acceptable; `Some(true)`: JSON and not HTML; `None`: neither.
fn accept_verdict(value: &HeaderValue) -> Option<bool> {
    let mut json = None;
    for item in value.to_str().ok()?.split(',') {
        let media = item.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("text/html")
            || media.eq_ignore_ascii_case("application/xhtml+xml")
        {
            return Some(false);
        }
        if media.eq_ignore_ascii_case("application/json")
            || media.to_ascii_lowercase().ends_with("+json")
        {
            json = Some(true);
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn api_clients_get_json_browsers_get_html() {
        assert!(prefers_json(&accept("application/json")));
        assert!(prefers_json(&accept("application/problem+json; q=0.9")));
        assert!(!prefers_json(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!prefers_json(&accept("application/json, text/html")));
        assert!(!prefers_json(&accept("*/*")));
        assert!(!prefers_json(&HeaderMap::new()));
    }
}

/// Which responses an error page replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFor {
    /// One status code (400 to 599).
    Status(u16),
    /// Every 4xx without a page of its own.
    ClientErrors,
    /// Every 5xx without a page of its own.
    ServerErrors,
}

impl PageFor {
    /// Reads `404`, `4XX` or `5xx`; the error says what is accepted.
    pub fn parse(s: &str) -> Result<PageFor, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "4XX" => Ok(PageFor::ClientErrors),
            "5XX" => Ok(PageFor::ServerErrors),
            code => match code.parse::<u16>() {
                Ok(n) if (400..=599).contains(&n) => Ok(PageFor::Status(n)),
                _ => Err(format!(
                    "expected a status from 400 to 599, 4XX or 5XX, got {s:?}"
                )),
            },
        }
    }

    /// The environment variable that sets this page.
    pub fn variable(self) -> String {
        match self {
            PageFor::Status(n) => format!("SITIO_ERROR_PAGE_{n}"),
            PageFor::ClientErrors => "SITIO_ERROR_PAGE_4XX".to_owned(),
            PageFor::ServerErrors => "SITIO_ERROR_PAGE_5XX".to_owned(),
        }
    }
}
