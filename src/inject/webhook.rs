//! `sitio injector`: the mutating admission webhook (`AdmissionReview` v1,
//! JSONPatch) that injects pods as they are created, with the same code as
//! `sitio inject`. Over HTTPS (rustls); the certificate files are read again
//! when they change (cert-manager renews them). It never blocks a pod: what
//! it cannot inject it lets through with a warning, and the manifests set
//! `failurePolicy: Ignore` for when it is down.
//!
//! `POST /mutate`: pods whose annotation says `sitio.io/inject: enabled`;
//! `POST /mutate-namespace`: every pod (its namespace opted in), unless its
//! annotation says `disabled`. `GET /healthz`: 200.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::pod::{self, INJECT, Options, Outcome};
use crate::error::StartError;

/// An AdmissionReview larger than this is refused (a pod is a few KiB).
const REVIEW_LIMIT: usize = 4 << 20;
/// How often the certificate files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A client that does not finish its TLS handshake or request head in this
/// time is dropped: the API server sends both at once.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate now, swapped when its files change.
#[derive(Debug)]
struct Certificate {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("--tls-key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

fn modified(paths: [&Path; 2]) -> Option<[SystemTime; 2]> {
    let t = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some([t(paths[0])?, t(paths[1])?])
}

/// Serves the webhook on `listen` until the process is stopped.
pub(crate) async fn serve(
    cert: PathBuf,
    key: PathBuf,
    listen: SocketAddr,
    opts: Options,
) -> Result<(), StartError> {
    let certificate = Arc::new(Certificate {
        current: ArcSwap::from_pointee(load(&cert, &key).map_err(StartError::Config)?),
        cert,
        key,
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Io(format!("--listen {listen}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Io("--listen".into(), e))?;
    tracing::info!(listen = %local, "sitio injector is ready");
    tokio::spawn(reload(certificate));
    let opts = Arc::new(opts);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let (acceptor, opts) = (acceptor.clone(), opts.clone());
                tokio::spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let opts = opts.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &opts).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(CLIENT_TIMEOUT)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            () = crate::shutdown_signal() => return Ok(()),
        }
    }
}

/// Reads the certificate again whenever its files change; a broken pair
/// (half-written by a renewal) keeps the old one until the next change.
async fn reload(certificate: Arc<Certificate>) {
    let paths = [certificate.cert.as_path(), certificate.key.as_path()];
    let mut seen = modified(paths);
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = modified(paths);
        if now == seen {
            continue;
        }
        match load(&certificate.cert, &certificate.key) {
            Ok(key) => {
                certificate.current.store(Arc::new(key));
                seen = now;
                tracing::info!("injector certificate reloaded");
            }
            Err(e) => tracing::warn!(error = e, "injector certificate not reloaded"),
        }
    }
}

async fn handle(req: Request<Incoming>, opts: &Options) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res
    };
    let whole_namespace = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, "ok\n".into()),
        (&Method::POST, "/mutate") => false,
        (&Method::POST, "/mutate-namespace") => true,
        _ => {
            let usage = "POST /mutate, POST /mutate-namespace or GET /healthz\n";
            return reply(StatusCode::NOT_FOUND, usage.into());
        }
    };
    let body = match Limited::new(req.into_body(), REVIEW_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("unreadable body: {e}\n")),
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not JSON: {e}\n")),
    };
    match review_answer(&review, whole_namespace, opts) {
        Ok(answer) => {
            let mut res = reply(StatusCode::OK, answer.to_string());
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => {
            tracing::warn!(error = e, "malformed AdmissionReview");
            reply(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

/// The AdmissionReview answering `review`: the pod, patched if it is to be
/// injected; always allowed.
pub(super) fn review_answer(
    review: &Value,
    whole_namespace: bool,
    opts: &Options,
) -> Result<Value, String> {
    if review["kind"] != "AdmissionReview" {
        return Err("expected an AdmissionReview (admission.k8s.io/v1)".into());
    }
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or("the review has no request.uid")?;
    let pod = &request["object"];
    if pod["kind"] != "Pod" {
        return Err("expected request.object to be a Pod".into());
    }
    let mut response = json!({"uid": uid, "allowed": true});
    let asked = pod["metadata"]["annotations"][INJECT].as_str();
    let wanted = match asked {
        Some("disabled") => false,
        Some("enabled") => true,
        _ => whole_namespace,
    };
    if wanted {
        let (mut spec, mut meta) = (pod["spec"].clone(), pod["metadata"].clone());
        let mut notes = Vec::new();
        match pod::inject(&mut spec, &mut meta, None, opts, &mut notes) {
            Ok(Outcome::Injected) => {
                let patch = json!([
                    {"op": "replace", "path": "/spec", "value": spec},
                    {"op": "add", "path": "/metadata/annotations", "value": meta["annotations"]},
                ]);
                let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(encoded);
            }
            Ok(Outcome::Unchanged) => {}
            Err(e) => notes.push(format!("not injected: {e}")),
        }
        if !notes.is_empty() {
            let warnings: Vec<String> = notes.into_iter().map(|n| format!("sitio: {n}")).collect();
            response["warnings"] = json!(warnings);
        }
    }
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}
