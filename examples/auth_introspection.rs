//! Auth that asks another service, the seed's `KeycloakSupportDecorator`: a
//! bearer token is checked by an RFC 7662 introspection call to
//! `INTROSPECT_URL` (e.g. Keycloak's `.../protocol/openid-connect/token/introspect`)
//! before the request goes on. The hook *waits* for the answer without
//! holding a thread, so it works the same on one worker (`SITIO_WORKERS=1`)
//! as on many. Answers are cached until the token's `exp` (at most 30 s).
//!
//! - no token, or an inactive one: 401 with `WWW-Authenticate: Bearer`;
//! - an active one: the request goes on with `X-Auth-User: <username>` (a
//!   client's own `X-Auth-User` is always removed);
//! - the introspection endpoint down or slow (5 s): 503.
//!
//! `INTROSPECT_CLIENT_ID` and `INTROSPECT_CLIENT_SECRET`, when set, authenticate
//! sitio to the endpoint (HTTP Basic, as RFC 7662 asks).
//!
//! ```sh
//! INTROSPECT_URL=http://127.0.0.1:8180/introspect cargo run --example auth_introspection
//! curl -i -H 'Authorization: Bearer abc' localhost:8080/
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use sitio::bytes::Bytes;
use sitio::http::{HeaderName, HeaderValue, Request, StatusCode, Uri, header, request};
use sitio::{Action, Decorator, Decorators, ErrorKind, Exchange, ProxyError, StartError};

static X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
/// Longest an answer is trusted, whatever the token's `exp`.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// Most answers kept; beyond that the expired ones go, then all.
const CACHE_ENTRIES: usize = 10_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint said about a token: its user when active.
#[derive(Clone)]
struct Answer {
    user: Option<String>,
    until: Instant,
}

struct Introspection {
    url: Uri,
    /// `Basic ...` for the endpoint, when configured.
    credentials: Option<HeaderValue>,
    cache: Mutex<HashMap<String, Answer>>,
}

impl Introspection {
    fn cached(&self, token: &str) -> Option<Answer> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(token)
            .filter(|a| a.until > Instant::now())
            .cloned()
    }

    fn remember(&self, token: &str, answer: Answer) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, a| a.until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), answer);
    }

    /// One RFC 7662 call: `POST token=...`, form-encoded.
    async fn ask(&self, token: &str) -> Result<Answer, String> {
        let authority = self.url.authority().ok_or("INTROSPECT_URL has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| format!("connect to {authority}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = self.url.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::post(path)
            .header(header::HOST, authority.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(format!(
                "token={}",
                form_encode(token)
            ))))
            .map_err(|e| e.to_string())?;
        if let Some(credentials) = &self.credentials {
            req.headers_mut()
                .insert(header::AUTHORIZATION, credentials.clone());
        }
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if res.status() != StatusCode::OK {
            return Err(format!("introspection answered {}", res.status()));
        }
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_slice(&body.to_bytes()).map_err(|e| format!("not JSON: {e}"))?;
        let active = json["active"].as_bool() == Some(true);
        let user = json["username"]
            .as_str()
            .or(json["sub"].as_str())
            .unwrap_or("");
        Ok(Answer {
            user: active.then(|| user.to_owned()),
            until: Instant::now() + trust_for(json["exp"].as_u64()),
        })
    }
}

/// Until the token's expiry, at most [`CACHE_FOR`].
fn trust_for(exp: Option<u64>) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    exp.map_or(CACHE_FOR, |exp| {
        Duration::from_secs(exp).saturating_sub(now)
    })
    .min(CACHE_FOR)
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// 401 as RFC 6750 says: an error code only when a token was presented.
fn unauthorized(error: Option<&'static str>) -> Action<'static> {
    let mut res = sitio::response::problem(401, "a valid bearer token is required");
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"sitio\", error=\"{e}\""),
        None => "Bearer realm=\"sitio\"".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Action::Respond(res)
}

/// Applies an answer to the request on its way.
fn admit(head: &mut request::Parts, answer: &Answer) -> Action<'static> {
    let Some(user) = &answer.user else {
        return unauthorized(Some("invalid_token"));
    };
    match HeaderValue::from_str(user) {
        Ok(v) => {
            head.headers.insert(X_AUTH_USER.clone(), v);
            Action::Continue
        }
        Err(_) => unauthorized(Some("invalid_token")),
    }
}

impl Decorator for Introspection {
    type State = ();
    // No response hook: with none in the chain, sitio sends the service's
    // response head on without building a field map for it.
    const ON_RESPONSE: bool = false;

    fn name(&self) -> &'static str {
        "auth_introspection"
    }

    fn on_request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        (): &'a mut (),
        _: &'a mut Exchange,
    ) -> Action<'a> {
        // Whatever happens next, the service never sees a client's own claim.
        head.headers.remove(&X_AUTH_USER);
        let token = head
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return unauthorized(None);
        };
        if let Some(answer) = self.cached(&token) {
            return admit(head, &answer); // no wait, no allocation
        }
        Action::wait(async move {
            match tokio::time::timeout(CALL_TIMEOUT, self.ask(&token)).await {
                Ok(Ok(answer)) => {
                    self.remember(&token, answer.clone());
                    admit(head, &answer)
                }
                Ok(Err(why)) => Action::Fail(unavailable(why)),
                Err(_) => Action::Fail(unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
            }
        })
    }
}

fn unavailable(why: String) -> ProxyError {
    ProxyError::new(
        ErrorKind::Refused,
        format!("token introspection failed: {why}"),
    )
    .with_status(StatusCode::SERVICE_UNAVAILABLE)
}

fn setup() -> Result<Introspection, StartError> {
    let raw = std::env::var("INTROSPECT_URL").unwrap_or_default();
    let url: Uri = raw
        .parse()
        .ok()
        .filter(|u: &Uri| u.scheme_str() == Some("http") && u.authority().is_some())
        .ok_or_else(|| {
            StartError::Config(format!(
                "INTROSPECT_URL: expected an http:// URL of an RFC 7662 endpoint, got {raw:?}"
            ))
        })?;
    let credentials = match (
        std::env::var("INTROSPECT_CLIENT_ID"),
        std::env::var("INTROSPECT_CLIENT_SECRET"),
    ) {
        (Ok(id), Ok(secret)) => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            Some(
                HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
                    StartError::Config("INTROSPECT_CLIENT_ID: expected printable text".into())
                })?,
            )
        }
        _ => None,
    };
    Ok(Introspection {
        url,
        credentials,
        cache: Mutex::new(HashMap::new()),
    })
}

/// The stock sitio (every setting, `--help`, logging, exit codes) plus the
/// check; a missing or bad `INTROSPECT_URL` stops it with exit code 2.
fn main() -> std::process::ExitCode {
    sitio::main(|_config| Ok(Decorators::builder().with(setup()?).build()))
}
