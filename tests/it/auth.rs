//! `SITIO_AUTH_*` in the stock binary, from env vars alone: bearer JWTs from a
//! real identity provider process (`tests/backends/idp.py`, Keycloak-shaped,
//! keys generated at its start, tokens signed by PyJWT) in front of a real
//! service that shows what it received.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;

struct Fixture {
    idp: Script,
    service: Script,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture {
            idp: Script::start("idp.py", &[]).await,
            service: Script::start("examples_origin.py", &["service"]).await,
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}/realms/test", self.idp.port)
    }

    /// A token from the identity provider (`query`: see idp.py).
    async fn token(&self, query: &str) -> String {
        let url = format!("http://127.0.0.1:{}/token?{query}", self.idp.port);
        let (ok, body) = curl(&[&url]).await;
        assert!(ok, "{url}");
        String::from_utf8(body).unwrap()
    }

    async fn post(&self, path: &str) {
        let url = format!("http://127.0.0.1:{}{path}", self.idp.port);
        assert!(curl(&["-X", "POST", &url]).await.0);
    }

    fn fetches(&self) -> usize {
        self.idp.printed("FETCH ").len()
    }
}

async fn get(port: u16, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\n{auth}X-Auth-User: mallory\r\nX-Auth-Roles: admin\r\n\r\n"
    );
    raw_request(SocketAddr::from(([127, 0, 0, 1], port)), raw.as_bytes())
        .await
        .expect("an answer")
}

/// A 401 (or `status`) for `cause`, with RFC 6750's challenge.
fn assert_refused(res: &RawResponse, status: u16, cause: &str) {
    let body = String::from_utf8_lossy(&res.body);
    assert_eq!(res.status, status, "{cause}: {res:?} {body}");
    assert_eq!(res.header("sitio-error"), Some(cause), "{res:?}");
    let challenge = res.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer realm=\"sitio\""), "{res:?}");
    let invalid = challenge.contains("error=\"invalid_token\"");
    assert_eq!(invalid, cause != "auth-missing", "{challenge}");
    assert!(!body.contains("user-42"), "the service was reached: {body}");
}

async fn json(url: &str) -> serde_json::Value {
    let (ok, body) = curl(&[url]).await;
    assert!(ok, "{url}");
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_checked_against_the_identity_providers_keys() {
    let f = Fixture::start().await;
    let started = Instant::now();
    let issuer = f.issuer();
    let (mut child, port, admin, _) = start_binary(
        f.service.port,
        &[
            // The issuer alone: the key set is found through discovery.
            ("SITIO_AUTH_ISSUER", &issuer),
            ("SITIO_AUTH_AUDIENCE", "orders"),
            ("SITIO_AUTH_PUBLIC", "/headers/public/*"),
            (
                "SITIO_AUTH_FORWARD",
                "sub:X-Auth-Subject,preferred_username:X-Auth-User,realm_access.roles:X-Auth-Roles",
            ),
        ],
    )
    .await;

    // A valid token of each accepted kind reaches the service, with the
    // claims as headers and the client's own copies gone.
    for kind in ["rsa-1", "ps-1", "ec-1", "ed-1"] {
        let token = f.token(&format!("kind={kind}")).await;
        let res = get(port, "/headers", Some(&token)).await;
        let body = String::from_utf8_lossy(&res.body).to_lowercase();
        assert_eq!(res.status, 200, "{kind}: {body}");
        assert!(body.contains("x-auth-subject: user-42"), "{body}");
        assert!(body.contains("x-auth-user: ada"), "{body}");
        assert!(body.contains("x-auth-roles: reader,writer"), "{body}");
        assert!(
            !body.contains("mallory") && !body.contains("admin"),
            "{body}"
        );
    }

    let missing = get(port, "/headers", None).await;
    assert_refused(&missing, 401, "auth-missing");
    let cases = [
        ("kind=rsa-1&exp=-120", "auth-expired"),
        ("kind=rsa-1&exp=absent", "auth-expired"),
        ("kind=rsa-1&nbf=600", "auth-not-yet-valid"),
        (
            "kind=rsa-1&iss=http://127.0.0.1:1/realms/evil",
            "auth-wrong-issuer",
        ),
        ("kind=rsa-1&aud=billing", "auth-wrong-audience"),
        ("kind=other", "auth-bad-signature"),
        ("kind=none", "auth-bad-algorithm"),
        ("kind=hs-public", "auth-bad-algorithm"),
        ("kind=ps-on-rs", "auth-bad-algorithm"),
    ];
    for (query, cause) in cases {
        let token = f.token(query).await;
        assert_refused(&get(port, "/headers", Some(&token)).await, 401, cause);
    }
    let garbage = get(port, "/headers", Some("not.a-token")).await;
    assert_refused(&garbage, 401, "auth-malformed");
    // Within the leeway (30 s), a just-expired token still passes.
    let token = f.token("kind=rsa-1&exp=-5").await;
    assert_eq!(get(port, "/headers", Some(&token)).await.status, 200);

    // Public routes need no token, still lose spoofed claims, and a path that
    // means another route once normalised is not public.
    let public = get(port, "/headers/public/logo.png", None).await;
    let body = String::from_utf8_lossy(&public.body);
    assert_eq!(public.status, 200, "{body}");
    assert!(!body.contains("mallory"), "{body}");
    for sneaky in ["/headers/public/../secret", "/headers/public/%2e%2e/secret"] {
        assert_refused(&get(port, sneaky, None).await, 401, "auth-missing");
    }

    // Key rotation: a token of a key published after sitio fetched the set
    // makes it fetch again (at most every 10 s since the last fetch).
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(started.elapsed())).await;
    f.post("/rotate").await;
    let rotated = f.token("kind=rsa-2").await;
    let res = get(port, "/headers", Some(&rotated)).await;
    assert_eq!(res.status, 200, "{:?}", String::from_utf8_lossy(&res.body));
    // Random key ids do not make sitio hammer the identity provider.
    let before = f.fetches();
    for _ in 0..20 {
        let token = f.token("kind=unknown").await;
        assert_refused(
            &get(port, "/headers", Some(&token)).await,
            401,
            "auth-unknown-key",
        );
    }
    assert_eq!(f.fetches(), before, "{:?}", f.idp.printed("FETCH"));

    let stats = json(&format!("http://127.0.0.1:{admin}/stats")).await;
    let auth = &stats["auth"];
    assert_eq!(auth["accepted"], 6, "{auth}");
    assert_eq!(auth["refused"]["expired"], 2, "{auth}");
    assert_eq!(auth["refused"]["unknown_key"], 20, "{auth}");
    assert_eq!(auth["refused"]["missing"], 3, "{auth}");
    assert_eq!(auth["public"], 1, "{auth}");
    assert_eq!(auth["keys"], 5, "{auth}");
    let (_, metrics) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("sitio_auth_requests_total{result=\"bad_algorithm\"} 3"),
        "{metrics}"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_identity_provider_of_a_private_ca_is_trusted_with_sitio_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    crate::https_hooks::test_pki(dir.path());
    let (cert, key) = (dir.path().join("hook.pem"), dir.path().join("hook.key"));
    let idp = Script::start(
        "idp.py",
        &["--tls", cert.to_str().unwrap(), key.to_str().unwrap()],
    )
    .await;
    let service = Script::start("examples_origin.py", &["service"]).await;
    let issuer = format!("https://localhost:{}/realms/test", idp.port);
    let ca = dir.path().join("ca.pem");
    let (mut child, port, _, _) = start_binary(
        service.port,
        &[
            ("SITIO_AUTH_ISSUER", &issuer),
            ("SITIO_CA_FILE", ca.to_str().unwrap()),
        ],
    )
    .await;
    let url = format!("https://localhost:{}/token?kind=rsa-1", idp.port);
    let (ok, token) = curl(&["--cacert", ca.to_str().unwrap(), &url]).await;
    assert!(ok);
    let token = String::from_utf8(token).unwrap();
    let res = get(port, "/headers", Some(&token)).await;
    assert_eq!(res.status, 200, "{:?}", String::from_utf8_lossy(&res.body));
    child.kill().await.unwrap();

    // Without the CA, no key can be fetched: 503, and the log says why.
    let (mut child, port, _, logged) =
        start_binary(service.port, &[("SITIO_AUTH_ISSUER", &issuer)]).await;
    let res = get(port, "/headers", Some(&token)).await;
    assert_eq!(res.status, 503);
    let started = Instant::now();
    let why = loop {
        let found = logged
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["target"] == "sitio::auth" && l["level"] == "WARN")
            .map(|l| l.to_string());
        match found {
            Some(line) => break line,
            None if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            None => panic!("no failed fetch logged"),
        }
    };
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_keys_outlive_the_identity_provider_and_no_keys_is_a_clear_503() {
    let f = Fixture::start().await;
    let jwks = format!("{}/protocol/openid-connect/certs", f.issuer());
    let (mut child, port, admin, _) = start_binary(
        f.service.port,
        &[
            ("SITIO_AUTH_JWKS_URL", &jwks),
            ("SITIO_AUTH_JWKS_REFRESH", "1s"),
        ],
    )
    .await;
    let token = f.token("kind=ec-1").await;
    assert_eq!(get(port, "/headers", Some(&token)).await.status, 200);
    f.post("/down").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = json(&format!("http://127.0.0.1:{admin}/stats")).await;
        if stats["auth"]["key_fetch_failures"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no failed refresh: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(port, "/headers", Some(&token)).await.status, 200);
    child.kill().await.unwrap();

    // A key set that was never reachable: 503, saying why, at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}/certs", closed.local_addr().unwrap());
    drop(closed);
    let (mut child, port, _, _) =
        start_binary(f.service.port, &[("SITIO_AUTH_JWKS_URL", &nowhere)]).await;
    let started = Instant::now();
    let res = get(port, "/headers", Some(&token)).await;
    assert_eq!(res.status, 503, "{res:?}");
    assert_eq!(res.header("sitio-error"), Some("auth-keys-unavailable"));
    assert!(started.elapsed() < Duration::from_secs(5));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_routes_protect_only_what_they_name() {
    let f = Fixture::start().await;
    let jwks = format!("{}/protocol/openid-connect/certs", f.issuer());
    let (mut child, port, _, _) = start_binary(
        f.service.port,
        &[
            ("SITIO_AUTH_JWKS_URL", &jwks),
            ("SITIO_AUTH_ROUTES", "/headers/private/*"),
            ("SITIO_AUTH_LEEWAY", "0"),
        ],
    )
    .await;
    assert_eq!(get(port, "/headers", None).await.status, 200);
    assert_eq!(get(port, "/headers/open/x", None).await.status, 200);
    for protected in [
        "/headers/private/x",
        "/headers/open/../private/x",
        "/headers/open/%2e%2e/private/x",
    ] {
        assert_refused(&get(port, protected, None).await, 401, "auth-missing");
    }
    let token = f.token("kind=ed-1").await;
    assert_eq!(
        get(port, "/headers/private/x", Some(&token)).await.status,
        200
    );

    // A verified token is remembered (the second use checks no signature),
    // but never past its expiry.
    let short = f.token("kind=rsa-1&exp=4").await;
    for _ in 0..2 {
        let res = get(port, "/headers/private/x", Some(&short)).await;
        assert_eq!(res.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let late = get(port, "/headers/private/x", Some(&short)).await;
    assert_refused(&late, 401, "auth-expired");
    child.kill().await.unwrap();
}
