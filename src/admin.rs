//! The admin server: health for the orchestrator (`/live`, `/ready`). Read-only.
//! Other parts (metrics, stats, dashboard) add their routes here.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::response;

/// State the admin server reports.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    /// True while sitio accepts traffic; false before listening and while draining.
    pub(crate) ready: AtomicBool,
}

/// Serves the admin API on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
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

fn route(req: &Request<Incoming>, state: &AdminState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = response::text(405, "the admin API is read-only\n");
        res.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return res;
    }
    match req.uri().path() {
        "/live" => response::text(200, "live\n"),
        "/ready" if state.ready.load(Ordering::Relaxed) => response::text(200, "ready\n"),
        "/ready" => response::text(StatusCode::SERVICE_UNAVAILABLE.as_u16(), "draining\n"),
        _ => response::text(404, "not found: try /live or /ready\n"),
    }
}
