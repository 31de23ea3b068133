//! The settings of the auth decorator (`SITIO_AUTH_*`), owned here and
//! flattened into [`crate::Config`].

use std::time::Duration;

use clap::Args;
use http::HeaderName;

use crate::telemetry::routes::Patterns;
use crate::units::parse_duration;

/// OIDC / JWT bearer auth. Off unless `SITIO_AUTH_JWKS_URL` or
/// `SITIO_AUTH_ISSUER` is set.
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// URL of the identity provider's JSON Web Key Set, e.g. Keycloak's
    /// `https://HOST/realms/NAME/protocol/openid-connect/certs`; turns bearer-token auth on.
    #[arg(long, global = true, env = "SITIO_AUTH_JWKS_URL", value_name = "SITIO_AUTH_JWKS_URL",
          value_parser = parse_url)]
    pub auth_jwks_url: Option<http::Uri>,

    /// Issuer every token must name (`iss`); alone, it also finds the key set
    /// through `ISSUER/.well-known/openid-configuration`.
    #[arg(long, global = true, env = "SITIO_AUTH_ISSUER", value_name = "SITIO_AUTH_ISSUER",
          value_parser = parse_issuer)]
    pub auth_issuer: Option<String>,

    /// Audiences a token must name one of (`aud`), comma-separated (default: not checked).
    #[arg(long, global = true, env = "SITIO_AUTH_AUDIENCE", value_name = "SITIO_AUTH_AUDIENCE",
          value_parser = parse_list)]
    pub auth_audience: Option<Audiences>,

    /// Route patterns that need a token, e.g. `/account/*,/admin/*` (default: every route).
    #[arg(long, global = true, env = "SITIO_AUTH_ROUTES", value_name = "SITIO_AUTH_ROUTES",
          default_value = "", hide_default_value = true, value_parser = parse_public)]
    pub auth_routes: String,

    /// Route patterns served without a token, e.g. `/health,/static/*`.
    #[arg(long, global = true, env = "SITIO_AUTH_PUBLIC", value_name = "SITIO_AUTH_PUBLIC",
          default_value = "", hide_default_value = true, value_parser = parse_public)]
    pub auth_public: String,

    /// Claims passed to the service as headers, `claim:Header` pairs, e.g.
    /// `sub:X-Auth-Subject,preferred_username:X-Auth-User` (a dotted claim
    /// reaches inside objects: `realm_access.roles:X-Auth-Roles`); clients'
    /// own copies of those headers are always removed.
    #[arg(long, global = true, env = "SITIO_AUTH_FORWARD", value_name = "SITIO_AUTH_FORWARD",
          default_value = "", hide_default_value = true, value_parser = parse_forward)]
    pub auth_forward: Forward,

    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, global = true, env = "SITIO_AUTH_LEEWAY", value_name = "SITIO_AUTH_LEEWAY",
          default_value = "30s", value_parser = parse_leeway)]
    pub auth_leeway: Duration,

    /// How often the key set is fetched again (a token with an unknown key
    /// also fetches it, at most every 10 s).
    #[arg(long, global = true, env = "SITIO_AUTH_JWKS_REFRESH", value_name = "SITIO_AUTH_JWKS_REFRESH",
          default_value = "5m", value_parser = parse_duration)]
    pub auth_jwks_refresh: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            auth_jwks_url: None,
            auth_issuer: None,
            auth_audience: None,
            auth_routes: String::new(),
            auth_public: String::new(),
            auth_forward: Forward::default(),
            auth_leeway: Duration::from_secs(30),
            auth_jwks_refresh: Duration::from_secs(300),
        }
    }
}

impl AuthSettings {
    /// True when bearer-token auth is configured.
    pub fn enabled(&self) -> bool {
        self.auth_jwks_url.is_some() || self.auth_issuer.is_some()
    }
}

/// `SITIO_AUTH_AUDIENCE`: the accepted audiences.
#[derive(Debug, Clone, PartialEq)]
pub struct Audiences(pub Vec<String>);

/// `SITIO_AUTH_FORWARD`: (claim path, header) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forward(pub Vec<(Vec<String>, HeaderName)>);

fn parse_url(s: &str) -> Result<http::Uri, String> {
    crate::units::parse_http_url(
        s,
        "https://id.example.com/realms/main/protocol/openid-connect/certs",
    )
}

fn parse_issuer(s: &str) -> Result<String, String> {
    parse_url(s).map(|_| s.trim().to_owned())
}

fn parse_list(s: &str) -> Result<Audiences, String> {
    let items: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err("expected one or more comma-separated audiences".to_owned());
    }
    Ok(Audiences(items))
}

fn parse_public(s: &str) -> Result<String, String> {
    Patterns::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (expected patterns such as /health,/static/*)"))
}

fn parse_forward(s: &str) -> Result<Forward, String> {
    let mut pairs = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let err =
            || format!("expected claim:Header pairs such as sub:X-Auth-Subject, got {item:?}");
        let (claim, header) = item.split_once(':').ok_or_else(err)?;
        let path: Vec<String> = claim.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(err());
        }
        let header = HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| err())?;
        pairs.push((path, header));
    }
    Ok(Forward(pairs))
}

fn parse_leeway(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        other => parse_duration(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_pairs_parse_and_nonsense_is_refused() {
        let f = parse_forward("sub:X-Auth-Subject, realm_access.roles:X-Roles").unwrap();
        assert_eq!(f.0[0].0, vec!["sub"]);
        assert_eq!(f.0[1].0, vec!["realm_access", "roles"]);
        assert_eq!(f.0[1].1.as_str(), "x-roles");
        assert!(parse_forward("sub").is_err());
        assert!(parse_forward("sub:Bad Header").is_err());
        assert!(parse_forward("a..b:X-A").is_err());
        assert_eq!(parse_forward("").unwrap(), Forward::default());
    }

    #[test]
    fn urls_and_audiences() {
        assert!(parse_url("ftp://x/y").is_err());
        assert!(parse_url("/certs").is_err());
        assert!(parse_url("https://id.example/certs").is_ok());
        assert_eq!(parse_list("a, b").unwrap().0, vec!["a", "b"]);
        assert!(parse_list(" , ").is_err());
        assert_eq!(parse_leeway("0").unwrap(), Duration::ZERO);
    }
}
