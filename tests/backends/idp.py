#!/usr/bin/env python3
"""An OpenID identity provider for the auth tests, Keycloak-shaped, whose keys
are generated at start and whose tokens are signed by PyJWT (another
implementation than sitio's).

Usage: idp.py [--tls CERT KEY]   (listens on 127.0.0.1, port chosen by the OS;
https with --tls, the issuer then https://localhost:<n>/realms/test)
Prints "PORT <n>" first, then "FETCH <path>" for every key-set or discovery fetch.
Issuer: http://127.0.0.1:<n>/realms/test
  GET  /realms/test/.well-known/openid-configuration   discovery
  GET  /realms/test/protocol/openid-connect/certs      JWKS: rsa-1, ps-1, ec-1, ed-1 (and
       rsa-2 after /rotate), plus an encryption key and an HMAC key to skip
  GET  /token?kind=K&exp=S&nbf=S&iss=I&aud=A           a token (text):
       kind rsa-1 | ps-1 | ec-1 | ed-1 | rsa-2   signed by that key with its algorithm
       kind ps-on-rs   PS256 by rsa-1, a key published for RS256 only
       kind other      RS256 by a key never published, kid rsa-1 (bad signature)
       kind unknown    RS256 by a key never published, kid "nobody"
       kind none       alg none, no signature
       kind hs-public  HS256 whose secret is rsa-1's public key (key confusion)
       exp: seconds from now (default 300; "absent" leaves it out)
  POST /rotate    publishes rsa-2
  POST /down      the key set answers 500 from now on
"""
import base64
import ssl
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

KEYS = {
    "rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa-2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ps-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec-1": ec.generate_private_key(ec.SECP256R1()),
    "ed-1": ed25519.Ed25519PrivateKey.generate(),
    "stranger": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
ALG = {"rsa-1": "RS256", "rsa-2": "RS256", "ps-1": "PS256", "ec-1": "ES256", "ed-1": "EdDSA"}
state = {"rotated": False, "down": False}
lock = threading.Lock()


def emit(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def jwk(kid):
    key = KEYS[kid].public_key()
    if isinstance(key, rsa.RSAPublicKey):
        d = json.loads(RSAAlgorithm.to_jwk(key))
    elif isinstance(key, ec.EllipticCurvePublicKey):
        d = json.loads(ECAlgorithm.to_jwk(key))
    else:
        d = json.loads(OKPAlgorithm.to_jwk(key))
    d.update({"kid": kid, "use": "sig", "alg": ALG.get(kid, "RS256")})
    return d


def jwks():
    kids = ["rsa-1", "ps-1", "ec-1", "ed-1"] + (["rsa-2"] if state["rotated"] else [])
    keys = [jwk(k) for k in kids]
    # Keycloak publishes an encryption key too; and an HMAC key must never be used.
    enc = jwk("stranger")
    enc.update({"kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"})
    keys.append(enc)
    keys.append({"kty": "oct", "kid": "rsa-1", "k": "c2VjcmV0", "alg": "HS256"})
    return {"keys": keys}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(kind, claims):
    if kind == "none":
        head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{head}.{b64(json.dumps(claims).encode())}."
    if kind == "hs-public":
        pem = KEYS["rsa-1"].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"
    key, kid, alg = {
        "other": ("stranger", "rsa-1", "RS256"),
        "unknown": ("stranger", "nobody", "RS256"),
        "ps-on-rs": ("rsa-1", "rsa-1", "PS256"),
    }.get(kind, (kind, kind, ALG.get(kind)))
    return jwt.encode(claims, KEYS[key], algorithm=alg, headers={"kid": kid})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        issuer = ISSUER
        if url.path == "/realms/test/.well-known/openid-configuration":
            emit("FETCH " + url.path)
            doc = {"issuer": issuer, "jwks_uri": issuer + "/protocol/openid-connect/certs"}
            self.send(200, "application/json", json.dumps(doc).encode())
        elif url.path == "/realms/test/protocol/openid-connect/certs":
            emit("FETCH " + url.path)
            if state["down"]:
                self.send(500, "text/plain", b"down")
            else:
                self.send(200, "application/json", json.dumps(jwks()).encode())
        elif url.path == "/token":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            now = int(time.time())
            claims = {
                "iss": q.get("iss", issuer),
                "aud": q.get("aud", "orders"),
                "sub": "user-42",
                "preferred_username": "ada",
                "realm_access": {"roles": ["reader", "writer"]},
                "iat": now,
            }
            if q.get("exp") != "absent":
                claims["exp"] = now + int(q.get("exp", "300"))
            if "nbf" in q:
                claims["nbf"] = now + int(q["nbf"])
            self.send(200, "text/plain", token(q.get("kind", "rsa-1"), claims).encode())
        else:
            self.send(404, "text/plain", b"not found")

    def do_POST(self):
        if self.path == "/rotate":
            state["rotated"] = True
        elif self.path == "/down":
            state["down"] = True
        self.send(204, "text/plain", b"")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
port = server.server_address[1]
ISSUER = f"http://127.0.0.1:{port}/realms/test"
if "--tls" in sys.argv:
    i = sys.argv.index("--tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[i + 1], sys.argv[i + 2])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    ISSUER = f"https://localhost:{port}/realms/test"
emit(f"PORT {port}")
server.serve_forever()
