//! The identity provider's signing keys: fetched from its JWKS (found through
//! OpenID discovery when only the issuer is known), swapped in whole so that
//! requests read them without a lock, kept when a later fetch fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Method, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::error::BoxError;

/// A token with an unknown key fetches the set again at most this often, so
/// random `kid`s cannot make sitio hammer the identity provider.
pub(crate) const MIN_REFETCH: Duration = Duration::from_secs(10);
/// After a failed fetch, the background task tries again this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set or discovery document larger than this is refused.
const DOCUMENT_LIMIT: usize = 1 << 20;

/// One verification key of the set.
pub(crate) struct Key {
    pub kid: Option<String>,
    /// The algorithm the key is for, when the set says.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// `SITIO_AUTH_JWKS_URL`.
    Jwks(Uri),
    /// `SITIO_AUTH_ISSUER` alone: `ISSUER/.well-known/openid-configuration`.
    Discovery(Uri),
}

/// The current keys and how fetching them goes.
pub(crate) struct KeyStore {
    source: Source,
    https: tokio_rustls::TlsConnector,
    keys: ArcSwap<Vec<Key>>,
    /// Bumped when the set changes (not when a refresh brings the same keys):
    /// verified tokens are trusted only for the generation they were checked in.
    generation: AtomicU64,
    /// The last set's `keys` array as fetched, to tell a change.
    last_set: std::sync::Mutex<String>,
    /// When the last fetch started; one fetch at a time.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    pub fetched: AtomicU64,
    pub fetch_failures: AtomicU64,
}

impl KeyStore {
    pub(super) fn new(source: Source, ca_file: Option<&crate::tls::CaFile>) -> Self {
        KeyStore {
            source,
            https: crate::tls::connector(ca_file),
            keys: ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
            last_set: std::sync::Mutex::new(String::new()),
            last_attempt: tokio::sync::Mutex::new(None),
            fetched: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
        }
    }

    /// The generation of the key set now.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The keys now (a reference count, no lock).
    pub(super) fn current(&self) -> Arc<Vec<Key>> {
        self.keys.load_full()
    }

    /// Fetches the set unless a fetch started less than [`MIN_REFETCH`] ago
    /// (`forced`: whatever the time); concurrent callers wait for the one
    /// fetch under way instead of starting their own.
    pub(super) async fn refresh(&self, forced: bool) -> bool {
        let mut last = self.last_attempt.lock().await;
        if !forced && last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return false;
        }
        *last = Some(Instant::now());
        let outcome = tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await;
        match outcome {
            Ok(Ok((keys, text))) => {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                let mut last = self.last_set.lock().unwrap_or_else(|e| e.into_inner());
                if *last != text {
                    tracing::info!(target: "sitio::auth", keys = keys.len(), "signing keys fetched");
                    self.keys.store(Arc::new(keys));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    *last = text;
                }
                true
            }
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("timed out"),
        }
    }

    fn failed(&self, why: &str) -> bool {
        self.fetch_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "sitio::auth", error = why, known_keys = self.keys.load().len(),
            "signing keys could not be fetched; the known ones stay in use");
        false
    }

    /// Keeps the keys fresh: at once, then every `every` (sooner after a failure).
    pub(super) async fn run(self: Arc<Self>, every: Duration) {
        loop {
            let ok = self.refresh(true).await;
            let pause = if ok {
                every
            } else {
                RETRY_AFTER_FAILURE.min(every)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// The usable keys, and the set's `keys` array as text (to tell a change).
    async fn fetch(&self) -> Result<(Vec<Key>, String), BoxError> {
        let jwks_url = match &self.source {
            Source::Jwks(url) => url.clone(),
            Source::Discovery(issuer) => {
                let url = discovery_url(issuer)?;
                let doc: Value = serde_json::from_slice(&self.get(&url).await?)?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("the discovery document has no jwks_uri")?
                    .parse()?
            }
        };
        let set: Value = serde_json::from_slice(&self.get(&jwks_url).await?)?;
        let keys = parse_set(&set)?;
        if keys.is_empty() {
            return Err("the key set holds no usable signing key".into());
        }
        Ok((keys, set["keys"].to_string()))
    }

    async fn get(&self, url: &Uri) -> Result<bytes::Bytes, BoxError> {
        let tls = (url.scheme_str() == Some("https")).then_some(&self.https);
        let answer = crate::client::request(url, tls, Method::GET, None, DOCUMENT_LIMIT).await?;
        if !answer.status.is_success() {
            return Err(format!("{url} answered {}", answer.status).into());
        }
        Ok(answer.body)
    }
}

fn discovery_url(issuer: &Uri) -> Result<Uri, BoxError> {
    let base = issuer.to_string();
    Ok(format!(
        "{}/.well-known/openid-configuration",
        base.trim_end_matches('/')
    )
    .parse()?)
}

/// The signing keys of a JWKS document. Keys for encryption, symmetric keys
/// (sitio never accepts HMAC tokens: a public key used as an HMAC secret is
/// the classic forgery) and keys it cannot read are skipped, not fatal.
pub(crate) fn parse_set(set: &Value) -> Result<Vec<Key>, BoxError> {
    let entries = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" array")?;
    let mut keys = Vec::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(keys)
}
