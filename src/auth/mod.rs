//! Bearer-token auth, the seed's `KeycloakSupportDecorator`: JWTs signed by
//! the identity provider (Keycloak or any OpenID provider) are checked before
//! the service sees the request; chosen claims are passed on as headers.
//!
//! - `settings`: `SITIO_AUTH_*`;
//! - `keys`: the key set, fetched (or discovered), refreshed, swapped in whole;
//! - `verify`: one token against the keys, and why it was refused.
//!
//! Opaque tokens (RFC 7662 introspection) are the `auth_introspection`
//! example's pattern, not this decorator's.

mod cache;
mod keys;
mod settings;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, request};
use serde_json::{Map, Value, json};

pub use settings::{Audiences, AuthSettings, Forward};

use crate::body::Body;
use crate::decorator::{Action, Decorator, Exchange};
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::Report;
use crate::telemetry::prometheus::family;
use crate::telemetry::routes::Patterns;
use keys::{KeyStore, Source};
pub use verify::Reason;
use verify::Rules;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The configured auth: keys, rules, and what it refused.
pub struct Auth {
    /// Tells this instance's verified tokens apart in the per-thread cache.
    id: u64,
    keys: Arc<KeyStore>,
    rules: Rules,
    /// Routes that need a token (empty: all).
    protected: Patterns,
    public: Patterns,
    forward: Forward,
    refresh: std::time::Duration,
    /// Tokens let through. One shared counter is fine here: a signature
    /// check costs thousands of times more than the increment.
    accepted: AtomicU64,
    public_passed: AtomicU64,
    refused: [AtomicU64; Reason::ALL.len()],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// Auth as `settings` say, `None` when they do not turn it on; https key
    /// sets are checked against the public roots and `ca_file`'s CAs.
    pub fn new(settings: &AuthSettings, ca_file: Option<&crate::tls::CaFile>) -> Option<Self> {
        let source = match (&settings.auth_jwks_url, &settings.auth_issuer) {
            (Some(url), _) => Source::Jwks(url.clone()),
            (None, Some(issuer)) => Source::Discovery(issuer.parse().ok()?),
            (None, None) => return None,
        };
        // Whatever other crates of the binary enable, verify with RustCrypto.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        Some(Auth {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            keys: Arc::new(KeyStore::new(source, ca_file)),
            rules: Rules {
                issuer: settings.auth_issuer.clone(),
                audience: settings.auth_audience.as_ref().map(|a| a.0.clone()),
                leeway_secs: settings.auth_leeway.as_secs(),
            },
            // Validated when the settings were parsed.
            protected: Patterns::parse(&settings.auth_routes).unwrap_or_default(),
            public: Patterns::parse(&settings.auth_public).unwrap_or_default(),
            forward: settings.auth_forward.clone(),
            refresh: settings.auth_jwks_refresh,
            accepted: AtomicU64::new(0),
            public_passed: AtomicU64::new(0),
            refused: Default::default(),
        })
    }

    /// A path goes without a token only when it cannot mean another path to
    /// the service: `/static/../admin` or `/static/%2e%2e/admin` matches
    /// `/static/*` here but is `/admin` once the service normalises it, so it
    /// needs a token (whatever the patterns say).
    fn is_public(&self, path: &str) -> bool {
        let outside = !self.protected.is_empty() && !self.protected.matches(path);
        let public = !self.public.is_empty() && self.public.matches(path);
        (outside || public) && plain(path)
    }

    /// The claims of a valid token, or why there are none. `Err(None)`: the
    /// token's key is unknown, worth a fetch of the key set.
    fn check(&self, token: &str) -> Result<Map<String, Value>, Option<Reason>> {
        let (alg, kid) = verify::header(token).map_err(Some)?;
        let keys = self.keys.current();
        if keys.is_empty() {
            return Err(None);
        }
        let mut candidates = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid == kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err(None);
        }
        verify::claims(token, alg, candidates, &self.rules).map_err(Some)
    }

    /// The token's verdict from this thread's cache, if it was verified before.
    fn cached(&self, token: &str) -> Option<cache::Verified> {
        cache::get(self.id, token, unix_now(), self.keys.generation())
    }

    /// Lets a verified token through: its claims forwarded, the verdict kept.
    fn admit_claims(
        &self,
        head: &mut request::Parts,
        token: &str,
        generation: u64,
        claims: &Map<String, Value>,
    ) -> Action<'static> {
        let mut headers = Vec::with_capacity(self.forward.0.len());
        for (path, name) in &self.forward.0 {
            match verify::claim_text(claims, path).map(HeaderValue::try_from) {
                Some(Ok(value)) => headers.push((name.clone(), value)),
                Some(Err(_)) => tracing::debug!(target: "sitio::auth", header = %name,
                    "claim not forwarded: not valid header text"),
                None => {}
            }
        }
        let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
        let verified = cache::Verified {
            headers: headers.into(),
            until: (exp.max(0.0) as u64).saturating_add(self.rules.leeway_secs),
            generation,
        };
        cache::put(self.id, token, verified.clone());
        self.admit(head, &verified)
    }

    fn admit(&self, head: &mut request::Parts, verified: &cache::Verified) -> Action<'static> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        for (name, value) in verified.headers.iter() {
            head.headers.insert(name.clone(), value.clone());
        }
        Action::Continue
    }

    fn refuse(&self, reason: Reason, state: &mut Option<Reason>, ex: &Exchange) -> Action<'static> {
        *state = Some(reason);
        if let Some(c) = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.refused.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(target: "sitio::auth", client = %ex.client_addr(), method = %ex.method(),
            path = ex.path(), reason = reason.as_str(), "request refused by auth");
        let status = match reason {
            Reason::NoKeys => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        Action::Fail(ProxyError::refused(status, reason.detail()).with_cause(reason.cause()))
    }
}

/// No dot segment, no encoded dot, slash or backslash, no `;` parameters
/// (`/static/..;/admin` is `/admin` to Tomcat), no empty segment.
fn plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') || bytes.contains(&b';') || path.contains("//") {
        return false;
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    !["%2e", "%2f", "%5c", "%25", "%3b"]
        .iter()
        .any(|e| lower.contains(e))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of `Authorization: Bearer TOKEN` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The decorator that applies an [`Auth`].
pub struct Authenticate(pub Arc<Auth>);

impl std::fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticate").finish_non_exhaustive()
    }
}

impl Decorator for Authenticate {
    /// Why this exchange was refused, if it was.
    type State = Option<Reason>;
    const ON_RESPONSE: bool = false;

    fn name(&self) -> &'static str {
        "auth"
    }

    fn on_request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        state: &'a mut Option<Reason>,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        let auth = &*self.0;
        // Whatever happens next, the service never sees a client's own claims.
        for (_, name) in &auth.forward.0 {
            head.headers.remove(name);
        }
        if auth.is_public(head.uri.path()) {
            auth.public_passed.fetch_add(1, Ordering::Relaxed);
            return Action::Continue;
        }
        let Some(token) = bearer(&head.headers) else {
            return auth.refuse(Reason::Missing, state, ex);
        };
        if let Some(verified) = auth.cached(token) {
            return auth.admit(head, &verified);
        }
        // The generation before the check: a set that changes meanwhile
        // makes this verdict stale at once, not trusted under the new one.
        let generation = auth.keys.generation();
        match auth.check(token) {
            Ok(claims) => {
                let token = token.to_owned();
                auth.admit_claims(head, &token, generation, &claims)
            }
            Err(Some(reason)) => auth.refuse(reason, state, ex),
            Err(None) => {
                // An unknown key (rotation) or no keys yet: fetch the set
                // (rate-limited, shared by every waiting request) and try again.
                let token = token.to_owned();
                Action::wait(async move {
                    auth.keys.refresh(false).await;
                    let generation = auth.keys.generation();
                    match auth.check(&token) {
                        Ok(claims) => auth.admit_claims(head, &token, generation, &claims),
                        Err(Some(reason)) => auth.refuse(reason, state, ex),
                        Err(None) if auth.keys.current().is_empty() => {
                            auth.refuse(Reason::NoKeys, state, ex)
                        }
                        Err(None) => auth.refuse(Reason::UnknownKey, state, ex),
                    }
                })
            }
        }
    }

    fn on_error(
        &self,
        err: &ProxyError,
        state: &mut Option<Reason>,
        ex: &mut Exchange,
    ) -> Option<Response<Body>> {
        let reason = (*state)?;
        if err.kind() != ErrorKind::Refused {
            return None;
        }
        let mut res = crate::rescue::failure_for(err, ex);
        // A 503 is no challenge: no token would have done better.
        if reason != Reason::NoKeys {
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, challenge(reason));
        }
        Some(res)
    }
}

/// RFC 6750 §3: no error code when no token came; `invalid_token` otherwise.
fn challenge(reason: Reason) -> HeaderValue {
    let text = match reason {
        Reason::Missing => "Bearer realm=\"sitio\"".to_owned(),
        other => format!(
            "Bearer realm=\"sitio\", error=\"invalid_token\", error_description=\"{}\"",
            other.detail()
        ),
    };
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

impl Report for Auth {
    fn section(&self) -> &'static str {
        "auth"
    }

    fn stats(&self) -> Value {
        let refused: Map<String, Value> = Reason::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, c)| (r.as_str().to_owned(), json!(c.load(Ordering::Relaxed))))
            .collect();
        json!({
            "accepted": self.accepted.load(Ordering::Relaxed),
            "public": self.public_passed.load(Ordering::Relaxed),
            "refused": refused,
            "keys": self.keys.current().len(),
            "key_fetches": self.keys.fetched.load(Ordering::Relaxed),
            "key_fetch_failures": self.keys.fetch_failures.load(Ordering::Relaxed),
        })
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        family(
            out,
            "sitio_auth_requests_total",
            "counter",
            "Requests seen by auth, by result (accepted, public, or why refused).",
        );
        let accepted = self.accepted.load(Ordering::Relaxed);
        let public = self.public_passed.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sitio_auth_requests_total{{result=\"accepted\"}} {accepted}"
        );
        let _ = writeln!(
            out,
            "sitio_auth_requests_total{{result=\"public\"}} {public}"
        );
        for (r, c) in Reason::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "sitio_auth_requests_total{{result=\"{}\"}} {}",
                r.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
        family(
            out,
            "sitio_auth_keys",
            "gauge",
            "Signing keys known to auth.",
        );
        let _ = writeln!(out, "sitio_auth_keys {}", self.keys.current().len());
        family(
            out,
            "sitio_auth_key_fetches_total",
            "counter",
            "Fetches of the identity provider's key set, by outcome.",
        );
        for (result, n) in [
            ("ok", &self.keys.fetched),
            ("failed", &self.keys.fetch_failures),
        ] {
            let _ = writeln!(
                out,
                "sitio_auth_key_fetches_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }

    fn background(
        self: Arc<Self>,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        Some(Box::pin(self.keys.clone().run(self.refresh)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_can_be_public() {
        assert!(plain("/static/app.js"));
        assert!(plain("/static/my%20photo.png"));
        for sneaky in [
            "/static/../admin",
            "/static/./x",
            "/static/%2e%2e/admin",
            "/static/%2E%2E/admin",
            "/static/..%2fadmin",
            "/static/..;/admin",
            "/static//x",
            "/static/..\\admin",
            "/static/%252e%252e/admin",
        ] {
            assert!(!plain(sneaky), "{sneaky}");
        }
    }

    #[test]
    fn bearer_tokens_are_found_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
