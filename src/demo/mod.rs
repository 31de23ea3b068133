//! The embedded demo: a small photo-library service like the seed's, and the
//! pages sitio puts in front of it. `sitio demo` needs no files and no setup;
//! `sitio demo-backend` serves the library alone (e.g. as the "app" container).
//! The demo also runs a canary version of the library (an A/B split: its
//! photo API is slower and fails now and then) and protects `/account` with
//! bearer tokens from its own identity provider (`idp`).

mod idp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::response;

/// The 404 page sitio shows in the demo instead of the service's own.
pub(crate) const NOT_FOUND_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Not found</title></head>
<body style="font-family:sans-serif;text-align:center;margin-top:4em;background:#10131a;color:#eee">
<div style="font-size:6em">🔭</div>
<h1>Look Somewhere Else / Not Found</h1>
<p>This page was put here by <b>sitio</b>, not by the service: the service answered a plain 404.</p>
<p><a style="color:#8cf" href="/">Back to the photos</a></p>
</body></html>
"#;

/// The 5xx page sitio shows in the demo.
pub(crate) const SERVER_ERROR_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Service trouble</title></head>
<body style="font-family:sans-serif;text-align:center;margin-top:4em;background:#1a1010;color:#eee">
<div style="font-size:6em">🛠️</div>
<h1>The service is having trouble</h1>
<p>sitio replaced the service's error page. Try again in a moment.</p>
<p><a style="color:#8cf" href="/">Back to the photos</a></p>
</body></html>
"#;

const PHOTOS: [(&str, &str); 6] = [
    ("Sunrise", "#f6a21e"),
    ("Lagoon", "#1e8ff6"),
    ("Forest", "#2fa84f"),
    ("Dunes", "#d9b26f"),
    ("Aurora", "#7b4fd6"),
    ("Lava", "#d6452f"),
];

/// Which version of the library a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// The one in production.
    Stable,
    /// The new one under test: its photo API is slower and fails one call in five.
    Canary,
}

/// What the versions of one demo share: the flaky endpoint's count (every
/// third call fails, whichever version serves it).
#[derive(Debug, Default, Clone)]
pub(crate) struct Shared {
    flaky: Arc<AtomicU64>,
    canary_calls: Arc<AtomicU64>,
}

/// The most fields a head sitio forwards can have (`SITIO_MAX_HEADERS` at
/// most 1,000, and `Host` and the `X-Forwarded-*` fields added).
pub(crate) const MAX_FORWARDED_FIELDS: usize = 1_000 + 3;

/// Serves the demo photo library on `listener` until the task is dropped.
pub(crate) async fn serve_backend(listener: TcpListener, version: Version, shared: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, version, &shared).await) }
            });
            let _ = http1::Builder::new()
                // Whatever sitio forwards: up to the largest
                // `SITIO_MAX_HEADERS` and the fields forwarding adds.
                .max_headers(MAX_FORWARDED_FIELDS)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The library's answer to `req`, whose body it does not read (the fuzzing
/// harness's service adds an echo of request bodies to it).
pub(crate) async fn route(
    req: Request<Incoming>,
    version: Version,
    shared: &Shared,
) -> Response<Body> {
    let path = req.uri().path();
    match path {
        "/" | "/index.html" => response::html(200, index()),
        "/account" => {
            // sitio let the request through only with a valid token, and
            // passed the user's name on.
            let user = req
                .headers()
                .get("x-auth-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nobody");
            response::text(200, format!("Hello {user}: sitio checked your token.\n"))
        }
        "/demo-idp/certs" => {
            let mut res = response::text(200, idp::jwks());
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            res
        }
        "/demo-idp/token" => match idp::token() {
            Some(token) => response::text(200, token),
            None => response::text(500, "the demo token could not be made\n"),
        },
        "/api/photos" if version == Version::Canary => {
            tokio::time::sleep(Duration::from_millis(40)).await;
            if shared.canary_calls.fetch_add(1, Ordering::Relaxed) % 5 == 4 {
                return response::text(500, "the canary's photo API failed\n");
            }
            photo_list()
        }
        "/api/photos" => photo_list(),
        "/flaky" => {
            // Every third call fails, so the 5xx page is easy to see.
            if shared.flaky.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                response::text(500, "Internal Server Error: the flaky endpoint failed\n")
            } else {
                response::text(200, "the flaky endpoint worked this time\n")
            }
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            response::text(200, "slow answer after 1.2 s\n")
        }
        _ => match photo(path) {
            Some(svg) => {
                let mut res = response::text(200, svg);
                res.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("image/svg+xml"),
                );
                res
            }
            None => response::html(
                404,
                "<html><body><h1>Error response</h1><p>Error code: 404</p><p>Message: File not found.</p></body></html>\n",
            ),
        },
    }
}

fn photo_list() -> Response<Body> {
    let list: Vec<_> = PHOTOS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| serde_json::json!({"id": i + 1, "title": name, "url": format!("/photos/{}.svg", i + 1)}))
        .collect();
    let mut res = response::text(200, serde_json::Value::from(list).to_string());
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// Settings the demo turns on unless the user set their own: a canary taking
/// a quarter of the requests, and bearer-token auth on `/account` with the
/// demo's identity provider (served by the stable version at `stable`).
pub(crate) fn configure(config: &mut crate::Config, stable: SocketAddr, canary: SocketAddr) {
    if config.split.split.0.is_empty() {
        config.split.split = crate::split::Variants(vec![crate::split::Variant {
            name: "canary".into(),
            host: canary.ip().to_string(),
            port: canary.port(),
            percent: 25.0,
        }]);
    }
    if !config.auth.enabled()
        && let Ok(url) = format!("http://{stable}/demo-idp/certs").parse()
    {
        config.auth.auth_jwks_url = Some(url);
        config.auth.auth_issuer = Some(idp::ISSUER.into());
        config.auth.auth_routes = "/account".into();
        config.auth.auth_forward = crate::auth::Forward(vec![(
            vec!["preferred_username".into()],
            http::HeaderName::from_static("x-auth-user"),
        )]);
    }
}

fn photo(path: &str) -> Option<String> {
    let n: usize = path
        .strip_prefix("/photos/")?
        .strip_suffix(".svg")?
        .parse()
        .ok()?;
    let (name, colour) = PHOTOS.get(n.checked_sub(1)?)?;
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200" viewBox="0 0 320 200">
<rect width="320" height="200" fill="{colour}"/><circle cx="{cx}" cy="70" r="36" fill="#fff" opacity="0.6"/>
<path d="M0 200 L110 90 L190 170 L250 120 L320 200 Z" fill="#000" opacity="0.35"/>
<text x="16" y="188" font-family="sans-serif" font-size="22" fill="#fff">{name}</text></svg>
"##,
        cx = 60 + n * 30
    ))
}

fn index() -> String {
    let mut tiles = String::new();
    for (i, (name, _)) in PHOTOS.iter().enumerate() {
        tiles.push_str(&format!(
            "<figure><img src=\"/photos/{n}.svg\" alt=\"{name}\" width=\"320\" height=\"200\"><figcaption>{name}</figcaption></figure>\n",
            n = i + 1
        ));
    }
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Photo library</title>
<style>body{{font-family:sans-serif;margin:2em}}figure{{display:inline-block;margin:.5em}}</style></head>
<body><h1>Photo library</h1>
<p>A tiny service decorated by sitio. Try <a href="/photos/7.svg">the broken photo</a> (404),
<a href="/flaky">the flaky endpoint</a> (fails every third call), <a href="/slow">the slow one</a>,
<a href="/api/photos">the JSON API</a> (a canary version serves a quarter of its calls: compare
them on the dashboard) and <a href="/account">your account</a> (needs a bearer token).</p>
{tiles}</body></html>
"#
    )
}

/// Prints where to look once the demo is up.
pub(crate) fn print_banner(sitio: SocketAddr, admin: Option<SocketAddr>, backend: SocketAddr) {
    let port = sitio.port();
    println!("sitio demo: a photo library, decorated\n");
    if let Some(admin) = admin {
        let admin = admin.port();
        println!("  live dashboard:            http://localhost:{admin}/");
        println!(
            "  statistics, Prometheus:    http://localhost:{admin}/stats  http://localhost:{admin}/metrics"
        );
        println!("  live request feed:         http://localhost:{admin}/tap");
        println!("  health:                    http://localhost:{admin}/ready");
    }
    println!("  through sitio:             http://localhost:{port}/");
    println!("  custom 404 page:           http://localhost:{port}/photos/7.svg");
    println!("  5xx page (every 3rd call): http://localhost:{port}/flaky");
    println!(
        "  JSON error for API calls:  curl -H 'Accept: application/json' http://localhost:{port}/nope"
    );
    println!(
        "  A/B: a canary serves 25%:  curl http://localhost:{port}/api/photos  (then the dashboard)"
    );
    println!("  auth on /account (401):    http://localhost:{port}/account");
    println!(
        "  with a token:              curl -H \"Authorization: Bearer $(curl -s http://localhost:{port}/demo-idp/token)\" http://localhost:{port}/account"
    );
    println!("  the bare service:          http://{backend}/");
    println!("\nCtrl-C stops it.");
}
