//! The admin server: health for the orchestrator (`/live`, `/ready`),
//! `/metrics` for Prometheus, `/stats` as JSON, the live `/tap`, and the
//! dashboard at `/`. Read-only; everything it serves is embedded in the binary.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::response;
use crate::telemetry::{Telemetry, prometheus, report};

const DASHBOARD: &str = include_str!("dashboard.html");

/// State the admin server reports.
pub(crate) struct AdminState {
    /// True while sitio accepts traffic; false before listening and while draining.
    pub(crate) ready: AtomicBool,
    /// False while `SITIO_READY_REQUIRES_SERVICE` is on and the last attempt
    /// to connect to the service failed (or none succeeded yet).
    pub(crate) service_up: AtomicBool,
    telemetry: Arc<Telemetry>,
}

impl AdminState {
    pub(crate) fn new(telemetry: Arc<Telemetry>, requires_service: bool) -> Self {
        AdminState {
            ready: AtomicBool::new(false),
            service_up: AtomicBool::new(!requires_service),
            telemetry,
        }
    }
}

/// Probes the service while `/ready` depends on it: every 200 ms until it
/// first answers (a pod must not be Ready before its app listens), then
/// every second, so an app that stopped takes the pod out of its endpoints.
pub(crate) async fn watch_service(
    state: Arc<AdminState>,
    upstream: Arc<crate::upstream::Upstream>,
) {
    loop {
        let up = upstream.connect_tcp().await.is_ok();
        let was = state.service_up.swap(up, Ordering::Relaxed);
        if up != was {
            tracing::info!(
                service_up = up,
                "readiness follows the service (SITIO_READY_REQUIRES_SERVICE)"
            );
        }
        let pause = if up { 1000 } else { 200 };
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    }
}

/// Serves the admin API on `listener` until the task is aborted (which also
/// ends its connections, long-lived tap streams included).
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn with_type(mut res: Response<Body>, content_type: &'static str) -> Response<Body> {
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn route(req: &Request<Incoming>, state: &AdminState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = response::text(405, "the admin API is read-only\n");
        res.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let t = &state.telemetry;
    match req.uri().path() {
        "/live" => response::text(200, "live\n"),
        "/ready" if !state.ready.load(Ordering::Relaxed) => {
            response::text(StatusCode::SERVICE_UNAVAILABLE.as_u16(), "draining\n")
        }
        "/ready" if !state.service_up.load(Ordering::Relaxed) => response::text(
            StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            "service not reachable\n",
        ),
        "/ready" => response::text(200, "ready\n"),
        "/metrics" => with_type(
            response::text(200, prometheus::render(t)),
            prometheus::CONTENT_TYPE,
        ),
        "/stats" => with_type(
            response::text(200, report::stats_json(t).to_string()),
            "application/json",
        ),
        "/tap" => {
            let query = req.uri().query().unwrap_or("");
            let ndjson = query.split('&').any(|kv| kv == "format=ndjson");
            let limit = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|n| n.parse().ok());
            tap(t, ndjson, limit)
        }
        "/" | "/index.html" => {
            with_type(response::html(200, DASHBOARD), "text/html; charset=utf-8")
        }
        _ => response::text(
            404,
            "not found: try / (dashboard), /stats, /metrics, /tap, /live or /ready\n",
        ),
    }
}

/// Streams completed exchanges as Server-Sent Events (or NDJSON).
fn tap(t: &Telemetry, ndjson: bool, limit: Option<u64>) -> Response<Body> {
    let content_type = if ndjson {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    };
    let frames = futures_util::StreamExt::map(t.tap.stream(ndjson, limit), |chunk| {
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    with_type(
        Response::new(Body::stream(StreamBody::new(frames))),
        content_type,
    )
}
