//! `sitio mothership`: one view of every decorated pod, the seed series'
//! "mothership", built on the Prometheus that already scrapes them rather
//! than on a collector of its own (federation, Thanos or Mimir take it past
//! one server). Every figure is a PromQL query (listed in `docs/fleet.md` and
//! in every answer), so an operator can reproduce any number in Prometheus
//! or Grafana.
//!
//! - `GET /`: the page (`fleet.html`, embedded);
//! - `GET /workloads.json`: per workload and route, from the recording rules
//!   (`workloads`);
//! - `GET /fleet.json[?namespace=N&workload=W]`: every pod with its routes,
//!   or one workload's (`pods`);
//! - `GET /live`: 200.

mod pods;
mod prometheus;
mod workloads;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::error::StartError;
use prometheus::Source;

const PAGE: &str = include_str!("fleet.html");

/// Serves the fleet view on `listen`, reading `prometheus` (an https one
/// checked against the public roots and `ca_file`'s CAs), until stopped.
pub(crate) async fn serve(
    listen: SocketAddr,
    prometheus: Uri,
    ca_file: Option<&crate::tls::CaFile>,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Io(format!("PORT: cannot listen on {listen}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Io("PORT".into(), e))?;
    tracing::info!(listen = %local, prometheus = %prometheus, "sitio mothership is ready");
    let tls = (prometheus.scheme_str() == Some("https")).then(|| crate::tls::connector(ca_file));
    let prometheus = Arc::new(Source {
        url: prometheus,
        tls,
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let prometheus = prometheus.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let prometheus = prometheus.clone();
                        async move { Ok::<_, Infallible>(handle(req, &prometheus).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
            () = crate::shutdown_signal() => return Ok(()),
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    res
}

async fn handle(req: Request<Incoming>, prometheus: &Source) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    let answer = match req.uri().path() {
        "/" => return reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/live" => return reply(StatusCode::OK, "text/plain", "ok\n"),
        "/workloads.json" => workloads::document(prometheus).await,
        "/fleet.json" => match drill_down(req.uri().query().unwrap_or_default()) {
            Ok(filter) => {
                let filter: Vec<(&str, &str)> =
                    filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
                pods::document(prometheus, &filter).await
            }
            Err(e) => {
                let doc = json!({ "error": e });
                return reply(StatusCode::BAD_REQUEST, "application/json", doc.to_string());
            }
        },
        _ => {
            let text = "GET /, /workloads.json, /fleet.json or /live\n";
            return reply(StatusCode::NOT_FOUND, "text/plain", text);
        }
    };
    match answer {
        Ok(doc) => reply(StatusCode::OK, "application/json", doc.to_string()),
        Err(e) => {
            let doc = json!({"error": format!("Prometheus at {}: {e}", prometheus.url)});
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                doc.to_string(),
            )
        }
    }
}

/// `/fleet.json`'s query: at most a namespace and a workload to narrow to.
fn drill_down(query: &str) -> Result<Vec<(&'static str, String)>, String> {
    let mut filter = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = match key {
            "namespace" => "namespace",
            "workload" => "workload",
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: expected namespace or workload"
                ));
            }
        };
        let value = value.replace('+', " ");
        let value = percent_encoding::percent_decode_str(&value)
            .decode_utf8()
            .map_err(|_| format!("{key}: not UTF-8"))?;
        filter.push((key, value.into_owned()));
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drill_down_takes_a_namespace_and_a_workload() {
        assert_eq!(drill_down(""), Ok(vec![]));
        assert_eq!(
            drill_down("namespace=shop&workload=web%2Dv2"),
            Ok(vec![
                ("namespace", "shop".into()),
                ("workload", "web-v2".into())
            ])
        );
        assert!(
            drill_down("instance=x")
                .unwrap_err()
                .contains("namespace or workload")
        );
    }
}
