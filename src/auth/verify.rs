//! Checks one bearer token against the keys: the algorithm on the allow-list,
//! the signature (by `jsonwebtoken`, no crypto here), then `exp`, `nbf`,
//! `iss` and `aud`. Every refusal has a [`Reason`] for the client, the log
//! and the metrics.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind as JwtError;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::Key;

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No `Authorization: Bearer` token.
    Missing,
    /// Not a JWT (shape, base64, JSON).
    Malformed,
    /// `none`, HMAC or another algorithm sitio does not accept.
    BadAlgorithm,
    /// No key of the set has the token's `kid` (even after fetching it again).
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed (beyond the leeway), or is missing.
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// `iss` is not `SITIO_AUTH_ISSUER`.
    WrongIssuer,
    /// `aud` names none of `SITIO_AUTH_AUDIENCE`.
    WrongAudience,
    /// No signing key could be fetched at all: 503, not the client's fault.
    NoKeys,
}

impl Reason {
    /// Every reason, in metrics order.
    pub const ALL: [Reason; 10] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::BadAlgorithm,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongIssuer,
        Reason::WrongAudience,
        Reason::NoKeys,
    ];

    /// Label in metrics, `/stats` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::BadAlgorithm => "bad_algorithm",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::NoKeys => "no_keys",
        }
    }

    /// The `sitio-error` token.
    pub fn cause(self) -> &'static str {
        match self {
            Reason::Missing => "auth-missing",
            Reason::Malformed => "auth-malformed",
            Reason::BadAlgorithm => "auth-bad-algorithm",
            Reason::UnknownKey => "auth-unknown-key",
            Reason::BadSignature => "auth-bad-signature",
            Reason::Expired => "auth-expired",
            Reason::NotYetValid => "auth-not-yet-valid",
            Reason::WrongIssuer => "auth-wrong-issuer",
            Reason::WrongAudience => "auth-wrong-audience",
            Reason::NoKeys => "auth-keys-unavailable",
        }
    }

    /// What the client is told (RFC 6750's `error_description`, and the page).
    pub fn detail(self) -> &'static str {
        match self {
            Reason::Missing => "A bearer token is required.",
            Reason::Malformed => "The bearer token is not a valid JWT.",
            Reason::BadAlgorithm => "The token's signing algorithm is not accepted.",
            Reason::UnknownKey => "The token was signed by an unknown key.",
            Reason::BadSignature => "The token's signature is invalid.",
            Reason::Expired => "The token has expired.",
            Reason::NotYetValid => "The token is not valid yet.",
            Reason::WrongIssuer => "The token was issued by another issuer.",
            Reason::WrongAudience => "The token is not meant for this service.",
            Reason::NoKeys => {
                "Tokens cannot be checked: the identity provider's keys are unavailable."
            }
        }
    }
}

/// Asymmetric algorithms only: `none` and HMAC are refused whatever the key.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What a token is checked against besides the keys.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub issuer: Option<String>,
    pub audience: Option<Vec<String>>,
    pub leeway_secs: u64,
}

/// The token's algorithm and key id, or why it cannot be a token sitio accepts.
pub(crate) fn header(token: &str) -> Result<(Algorithm, Option<String>), Reason> {
    match jsonwebtoken::decode_header(token) {
        Ok(h) if ACCEPTED.contains(&h.alg) => Ok((h.alg, h.kid)),
        Ok(_) => Err(Reason::BadAlgorithm),
        // `alg: none` is not even a variant of the crate's enum: tell it from garbage.
        Err(_) if names_an_algorithm(token) => Err(Reason::BadAlgorithm),
        Err(_) => Err(Reason::Malformed),
    }
}

fn names_an_algorithm(token: &str) -> bool {
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    serde_json::from_slice::<Value>(&json)
        .ok()
        .is_some_and(|v| v.get("alg").is_some_and(Value::is_string))
}

/// Verifies `token` (of `alg`) with the candidate keys; the claims on success.
pub(crate) fn claims<'k>(
    token: &str,
    alg: Algorithm,
    candidates: impl Iterator<Item = &'k Key>,
    rules: &Rules,
) -> Result<Map<String, Value>, Reason> {
    let mut validation = Validation::new(alg);
    validation.leeway = rules.leeway_secs;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    if let Some(iss) = &rules.issuer {
        validation.set_issuer(&[iss]);
    }
    match &rules.audience {
        Some(aud) => validation.set_audience(aud),
        None => validation.validate_aud = false,
    }
    // A key published for one algorithm is not used with another (RFC 7517 §4.4).
    let mut last = Reason::BadAlgorithm;
    for key in candidates.filter(|k| k.alg.is_none_or(|a| a == alg)) {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = reason(e.kind());
                // Only a key that does not fit is worth trying the next one.
                if !matches!(last, Reason::BadSignature | Reason::BadAlgorithm) {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn reason(e: &JwtError) -> Reason {
    match e {
        JwtError::InvalidSignature => Reason::BadSignature,
        JwtError::ExpiredSignature => Reason::Expired,
        JwtError::MissingRequiredClaim(c) if c == "exp" => Reason::Expired,
        JwtError::ImmatureSignature => Reason::NotYetValid,
        JwtError::InvalidIssuer => Reason::WrongIssuer,
        JwtError::MissingRequiredClaim(c) if c == "iss" => Reason::WrongIssuer,
        JwtError::InvalidAudience => Reason::WrongAudience,
        JwtError::MissingRequiredClaim(c) if c == "aud" => Reason::WrongAudience,
        JwtError::InvalidAlgorithm | JwtError::UnsupportedAlgorithm => Reason::BadAlgorithm,
        JwtError::InvalidEcdsaKey | JwtError::InvalidRsaKey(_) | JwtError::InvalidEddsaKey => {
            Reason::BadSignature
        }
        _ => Reason::Malformed,
    }
}

/// The value of a (dotted) claim as header text: strings as they are, arrays
/// joined with commas, numbers and booleans printed, objects as JSON.
pub(crate) fn claim_text(claims: &Map<String, Value>, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for step in rest {
        value = value.get(step)?;
    }
    Some(match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => return None,
        other => other.to_string(),
    })
}
