//! `sitio mothership`: one view of every decorated pod, the seed series'
//! "mothership", built on the Prometheus that already scrapes them rather
//! than on a collector of its own (federation, Thanos or Mimir take it past
//! one server). Every figure is a PromQL query (`QUERIES`, listed in
//! `docs/fleet.md`), so an operator can reproduce any number in Prometheus or
//! Grafana.
//!
//! - `GET /`: the page (`fleet.html`, embedded);
//! - `GET /fleet.json`: its data, for scripts;
//! - `GET /live`: 200.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use crate::error::StartError;

const PAGE: &str = include_str!("fleet.html");
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_LIMIT: usize = 32 << 20;
/// Routes listed in the fleet-wide "worst routes" table.
const WORST: usize = 10;

/// What each figure is, and the PromQL that computes it (per instance,
/// method, route and upstream where it applies).
pub(crate) const QUERIES: [(&str, &str); 9] = [
    (
        "hits",
        "sum by (instance, method, route, upstream) (sitio_requests_total)",
    ),
    (
        "rps",
        "sum by (instance, method, route, upstream) (rate(sitio_requests_total[1m]))",
    ),
    (
        "errors_per_s",
        "sum by (instance, method, route, upstream) (rate(sitio_requests_total{status=~\"5..\"}[1m]))",
    ),
    (
        "p50_s",
        "histogram_quantile(0.5, sum by (instance, method, route, upstream, le) (rate(sitio_request_duration_seconds_bucket[1m])))",
    ),
    (
        "p99_s",
        "histogram_quantile(0.99, sum by (instance, method, route, upstream, le) (rate(sitio_request_duration_seconds_bucket[1m])))",
    ),
    (
        "cpu",
        "rate(process_cpu_seconds_total[1m]) and on (instance) sitio_build_info",
    ),
    (
        "memory",
        "process_resident_memory_bytes and on (instance) sitio_build_info",
    ),
    ("circuit", "sitio_circuit_state == 1"),
    ("in_flight", "sum by (instance) (sitio_requests_in_flight)"),
];

/// The Prometheus queried, and how to reach it (TLS set up once).
struct Source {
    url: Uri,
    tls: Option<tokio_rustls::TlsConnector>,
}

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
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (&Method::GET, "/live") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/fleet.json") => match fleet(prometheus).await {
            Ok(doc) => reply(StatusCode::OK, "application/json", doc.to_string()),
            Err(e) => {
                let doc = json!({"error": format!("Prometheus at {}: {e}", prometheus.url)});
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    doc.to_string(),
                )
            }
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "GET /, /fleet.json or /live\n",
        ),
    }
}

/// One instant query: its result vector.
async fn query(prometheus: &Source, promql: &str) -> Result<Vec<Value>, String> {
    let base = prometheus.url.to_string();
    let url: Uri = format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
    )
    .parse()
    .map_err(|e| format!("bad URL: {e}"))?;
    let answer = tokio::time::timeout(
        QUERY_TIMEOUT,
        crate::client::request(
            &url,
            prometheus.tls.as_ref(),
            Method::GET,
            None,
            ANSWER_LIMIT,
        ),
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

fn number(sample: &Value) -> Option<f64> {
    sample["value"][1]
        .as_str()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

fn label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or_default()
}

/// (method, route, upstream).
type RouteKey = (String, String, String);
/// A route's or an instance's figures, by name.
type Figures = Map<String, Value>;

/// The fleet document: every instance with its routes, and the worst routes.
async fn fleet(prometheus: &Source) -> Result<Value, String> {
    let answers =
        futures_util::future::join_all(QUERIES.iter().map(|(_, q)| query(prometheus, q))).await;
    let mut results = BTreeMap::new();
    for ((name, _), answer) in QUERIES.iter().zip(answers) {
        results.insert(*name, answer?);
    }
    // instance -> (method, route, upstream) -> figures
    let mut routes: BTreeMap<String, BTreeMap<RouteKey, Figures>> = BTreeMap::new();
    let mut instances: BTreeMap<String, Figures> = BTreeMap::new();
    for name in ["hits", "rps", "errors_per_s", "p50_s", "p99_s"] {
        for sample in results.get(name).into_iter().flatten() {
            let instance = label(sample, "instance").to_owned();
            let key = (
                label(sample, "method").to_owned(),
                label(sample, "route").to_owned(),
                label(sample, "upstream").to_owned(),
            );
            let entry = routes
                .entry(instance.clone())
                .or_default()
                .entry(key)
                .or_default();
            entry.insert(name.into(), json!(number(sample)));
            instances.entry(instance).or_default();
        }
    }
    for (name, field, scale) in [
        ("cpu", "cpu_percent", 100.0),
        ("memory", "memory_bytes", 1.0),
        ("in_flight", "in_flight", 1.0),
    ] {
        for sample in results.get(name).into_iter().flatten() {
            let i = instances
                .entry(label(sample, "instance").to_owned())
                .or_default();
            i.insert(field.into(), json!(number(sample).map(|v| v * scale)));
            for l in ["namespace", "pod", "job"] {
                if let Some(v) = sample["metric"][l].as_str() {
                    i.insert(l.into(), json!(v));
                }
            }
        }
    }
    for sample in results.get("circuit").into_iter().flatten() {
        let i = instances
            .entry(label(sample, "instance").to_owned())
            .or_default();
        i.insert("circuit".into(), json!(label(sample, "state")));
    }
    let mut all = Vec::new();
    let list: Vec<Value> = instances
        .into_iter()
        .map(|(instance, mut figures)| {
            let its: Vec<Value> = routes
                .remove(&instance)
                .unwrap_or_default()
                .into_iter()
                .map(|((method, route, upstream), f)| {
                    let rps = f.get("rps").and_then(Value::as_f64).unwrap_or(0.0);
                    let errors = f.get("errors_per_s").and_then(Value::as_f64).unwrap_or(0.0);
                    let ms = |k: &str| f.get(k).and_then(Value::as_f64).map(|s| (s * 1e5).round() / 100.0);
                    let r = json!({
                        "method": method, "route": route, "upstream": upstream,
                        "hits": f.get("hits").and_then(Value::as_f64).unwrap_or(0.0),
                        "rps": (rps * 100.0).round() / 100.0,
                        "error_rate": if rps > 0.0 { ((errors / rps) * 1e4).round() / 1e4 } else { 0.0 },
                        "p50_ms": ms("p50_s"), "p99_ms": ms("p99_s"),
                    });
                    let mut worst = r.clone();
                    worst["instance"] = json!(instance);
                    all.push(worst);
                    r
                })
                .collect();
            figures.insert("instance".into(), json!(instance));
            figures.insert("routes".into(), json!(its));
            Value::Object(figures)
        })
        .collect();
    // Worst first: error rate, then p99.
    all.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["error_rate"].as_f64().unwrap_or(0.0),
                v["p99_ms"].as_f64().unwrap_or(0.0),
            )
        };
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    all.truncate(WORST);
    Ok(json!({
        "queries": QUERIES.iter().map(|(n, q)| json!({"figure": n, "promql": q})).collect::<Vec<_>>(),
        "instances": list,
        "worst_routes": all,
    }))
}
