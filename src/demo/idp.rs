//! The demo's identity provider, so that `sitio demo` shows bearer-token auth
//! with no Keycloak to run: a key set and a token for a demo user, signed
//! with a fixed Ed25519 key. The key is public (it is in this file): it
//! proves nothing outside the demo, which is all it is for.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The demo key, PKCS#8 DER (generated once with `openssl genpkey -algorithm ed25519`).
const PRIVATE_KEY: [u8; 48] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    0xb5, 0x34, 0xb7, 0x8b, 0x3e, 0x74, 0x2d, 0xa8, 0xda, 0x91, 0xcd, 0xe7, 0xe7, 0x0d, 0x3e, 0x69,
    0xda, 0xdd, 0x53, 0x6d, 0x67, 0xaf, 0x19, 0x46, 0xaa, 0x29, 0xe0, 0x03, 0xa7, 0x50, 0x67, 0x7e,
];
/// Its public half, base64url (the JWK's `x`).
const PUBLIC_X: &str = "vN9O9gadO_InRqfhtBltU9lbMNRaHjyPEBHAecm-4C0";
const KID: &str = "sitio-demo";
/// The issuer the demo's tokens name.
pub(crate) const ISSUER: &str = "sitio-demo";

/// The key set (`/demo-idp/certs`).
pub(crate) fn jwks() -> String {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": PUBLIC_X, "kid": KID, "use": "sig", "alg": "EdDSA"}]})
        .to_string()
}

/// A token for the demo user, valid for an hour (`/demo-idp/token`).
pub(crate) fn token() -> Option<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let claims = json!({
        "iss": ISSUER,
        "sub": "demo-user-1",
        "preferred_username": "ada",
        "iat": now,
        "exp": now + 3600,
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(KID.to_owned());
    // The same provider auth verifies with, whichever runs first.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&PRIVATE_KEY)).ok()
}
