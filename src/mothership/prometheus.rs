//! The Prometheus HTTP API as the mothership uses it: instant queries
//! (`/api/v1/query`), their samples, and label matchers built safely from
//! values a browser sent.

use std::time::Duration;

use http::{Method, Uri};
use serde_json::Value;

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_LIMIT: usize = 32 << 20;

/// The Prometheus queried, and how to reach it (TLS set up once).
pub(super) struct Source {
    pub(super) url: Uri,
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
}

impl Source {
    /// One instant query: its result vector.
    pub(super) async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let base = self.url.to_string();
        let url: Uri = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
        )
        .parse()
        .map_err(|e| format!("bad URL: {e}"))?;
        let answer = tokio::time::timeout(
            QUERY_TIMEOUT,
            crate::client::request(&url, self.tls.as_ref(), Method::GET, None, ANSWER_LIMIT),
        )
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| format!("unreachable: {e}"))?;
        let doc: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("answered {} with no JSON: {e}", answer.status))?;
        if doc["status"] != "success" {
            return Err(format!("refused {promql}: {}", doc["error"]));
        }
        Ok(doc["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Several queries at once, each result under its name; the first
    /// failure fails them all (a partial page would mislead).
    pub(super) async fn query_all(
        &self,
        queries: &[(&'static str, String)],
    ) -> Result<Vec<(&'static str, Vec<Value>)>, String> {
        let answers =
            futures_util::future::join_all(queries.iter().map(|(_, q)| self.query(q))).await;
        queries
            .iter()
            .zip(answers)
            .map(|((name, _), answer)| answer.map(|a| (*name, a)))
            .collect()
    }
}

/// A sample's value, when it is a finite number.
pub(super) fn number(sample: &Value) -> Option<f64> {
    sample["value"][1]
        .as_str()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

/// A sample's label ("" when absent).
pub(super) fn label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or_default()
}

/// Label matchers (`namespace="shop",workload="web"`) for the given pairs,
/// values escaped as PromQL strings: they come from the browser, and an
/// unescaped quote would let it rewrite the query.
pub(super) fn matchers(pairs: &[(&str, &str)]) -> String {
    let escaped: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", crate::telemetry::prometheus::escape(value)))
        .collect();
    escaped.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_escape_what_would_end_the_string() {
        assert_eq!(matchers(&[]), "");
        assert_eq!(
            matchers(&[("namespace", "shop"), ("workload", "web")]),
            r#"namespace="shop",workload="web""#
        );
        assert_eq!(
            matchers(&[("workload", "a\"} or vector(1) or {x=\"\\")]),
            r#"workload="a\"} or vector(1) or {x=\"\\""#
        );
    }
}
