"""Client JWT verification: every token in the security matrix, on discovery and service calls."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pytest_httpserver import HTTPServer

from cds_service.app import create_app
from cds_service.auth import AuthConfigError, load_trusted_issuers
from cds_service.clock import Clock
from cds_service.config import ConfigError
from cds_service.knowledge import Knowledge
from tests.conftest import ROOT, SERVICE_ID, make_settings
from tests.test_api import request_body

BASE = "https://cds.example.org"
STATIC_ISS = "https://ehr.example.org"
JKU_ISS = "https://other-ehr.example.org"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROGUE_KEY = ec.generate_private_key(ec.SECP384R1())


def jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    key: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    return {**key, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture
def jwks_server(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request("/jwks.json").respond_with_json(
        {"keys": [jwk(RSA_KEY.public_key(), "rsa-1", "RS384")]}
    )
    httpserver.expect_request("/evil.json").respond_with_json(
        {"keys": [jwk(ROGUE_KEY.public_key(), "ec-1", "ES384")]}
    )
    return httpserver


@pytest.fixture
def issuers_file(tmp_path: Path, jwks_server: HTTPServer) -> Path:
    path = tmp_path / "trusted-issuers.json"
    path.write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "iss": STATIC_ISS,
                        "jwks": {"keys": [jwk(EC_KEY.public_key(), "ec-1", "ES384")]},
                    },
                    {"iss": JKU_ISS, "jku": [jwks_server.url_for("/jwks.json")]},
                ]
            }
        )
    )
    return path


def secured_app(
    tmp_path: Path, issuers_file: Path, knowledge: Knowledge, db: str = "auth.sqlite3"
) -> Flask:
    settings = make_settings(
        tmp_path,
        auth="jwt",
        public_base_url=BASE,
        trusted_issuers=issuers_file,
        database_url=f"sqlite:///{tmp_path / db}",
    )
    # Real time: JWT exp/iat checks compare with the clock.
    return create_app(settings, clock=Clock(), knowledge=knowledge)


@pytest.fixture
def app(tmp_path: Path, issuers_file: Path, knowledge: Knowledge) -> Flask:
    return secured_app(tmp_path, issuers_file, knowledge)


def token(
    path: str,
    *,
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str = "ec-1",
    iss: str = STATIC_ISS,
    aud: Any = None,
    jku: str | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": iss,
        "aud": aud or BASE + path,
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    payload.update(claims)
    headers: dict[str, Any] = {"kid": kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def call(app: Flask, path: str, bearer: str | None, raw_header: str | None = None) -> Any:
    headers = {}
    if raw_header is not None:
        headers["Authorization"] = raw_header
    elif bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    client = app.test_client()
    if path == "/cds-services":
        return client.get(path, headers=headers)
    if path.endswith("/feedback"):
        item = {
            "card": str(uuid.UUID(int=99)),
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-24T12:00:00Z",
        }
        return client.post(
            path,
            json={"feedback": [{**item, "overrideReason": {"userComment": "n/a"}}]},
            headers=headers,
        )
    return client.post(path, json=request_body(), headers=headers)


PATHS = ["/cds-services", f"/cds-services/{SERVICE_ID}", f"/cds-services/{SERVICE_ID}/feedback"]


def public_pem() -> bytes:
    return EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unsigned(path: str) -> str:
    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode()
    )
    body = jwt.utils.base64url_encode(
        json.dumps(
            {
                "iss": STATIC_ISS,
                "aud": BASE + path,
                "exp": int(time.time()) + 300,
                "iat": int(time.time()),
                "jti": "x",
            }
        ).encode()
    )
    return f"{header.decode()}.{body.decode()}."


def hs256_with_public_key(path: str) -> str:
    # Key confusion: an attacker signs with HMAC using the server's *public* key as the secret.
    now = int(time.time())
    payload = {
        "iss": STATIC_ISS,
        "aud": BASE + path,
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": "HS256", "typ": "JWT", "kid": "ec-1"}
    segments = [
        jwt.utils.base64url_encode(json.dumps(header).encode()),
        jwt.utils.base64url_encode(json.dumps(payload).encode()),
    ]
    import hashlib
    import hmac

    signing_input = b".".join(segments)
    signature = hmac.new(public_pem(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


REJECTED = {
    "malformed": lambda p, s: "not.a.jwt",
    "alg-none": lambda p, s: unsigned(p),
    "hs256-key-confusion": lambda p, s: hs256_with_public_key(p),
    "bad-signature": lambda p, s: token(p, key=ROGUE_KEY),
    "unknown-kid": lambda p, s: token(p, kid="nobody"),
    "untrusted-iss": lambda p, s: token(p, iss="https://attacker.example.org"),
    "jku-not-allowlisted": lambda p, s: token(
        p, iss=JKU_ISS, jku=s.url_for("/evil.json"), key=ROGUE_KEY, kid="ec-1"
    ),
    "wrong-aud": lambda p, s: token(p, aud=BASE + "/cds-services/another-service"),
    "aud-other-host": lambda p, s: token(p, aud="https://elsewhere.example.org" + p),
    "expired": lambda p, s: token(p, exp=int(time.time()) - 600, iat=int(time.time()) - 900),
    "nbf-future": lambda p, s: token(p, nbf=int(time.time()) + 900),
    "iat-future": lambda p, s: token(p, iat=int(time.time()) + 900, exp=int(time.time()) + 1000),
    "no-jti": lambda p, s: token(p, jti=None),
    "lifetime-over-an-hour": lambda p, s: token(p, exp=int(time.time()) + 7200),
    "rs384-wrong-kid-for-jku-issuer": lambda p, s: token(
        p, iss=JKU_ISS, key=RSA_KEY, alg="RS384", kid="rsa-9"
    ),
}


@pytest.mark.parametrize("path", PATHS)
def test_missing_header_is_401(app: Flask, path: str) -> None:
    response = call(app, path, None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_tokens_get_a_bare_401(
    app: Flask, jwks_server: HTTPServer, path: str, case: str
) -> None:
    bad = REJECTED[case](path, jwks_server)
    if case == "no-jti":
        bad = jwt.encode(
            {
                "iss": STATIC_ISS,
                "aud": BASE + path,
                "exp": int(time.time()) + 300,
                "iat": int(time.time()),
            },
            EC_KEY,
            algorithm="ES384",
            headers={"kid": "ec-1", "typ": "JWT"},
        )
    response = call(app, path, bad)
    assert response.status_code == 401, case
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"] == "authentication required"
    assert "WWW-Authenticate" in response.headers


def test_basic_scheme_is_rejected(app: Flask) -> None:
    assert call(app, "/cds-services", None, raw_header="Basic dXNlcjpwYXNz").status_code == 401


def test_untrusted_jku_is_never_fetched(app: Flask, jwks_server: HTTPServer) -> None:
    bad = token("/cds-services", iss=JKU_ISS, jku=jwks_server.url_for("/evil.json"), key=ROGUE_KEY)
    assert call(app, "/cds-services", bad).status_code == 401
    assert not [r for r, _ in jwks_server.log if r.path == "/evil.json"]


def test_unknown_kid_refetches_the_jwks_once(app: Flask, jwks_server: HTTPServer) -> None:
    verifier = app.extensions["cds_runtime"].verifier
    verifier.jwks_cache.min_refetch_seconds = 0  # the keys were fetched long enough ago
    good = token(
        "/cds-services",
        iss=JKU_ISS,
        key=RSA_KEY,
        alg="RS384",
        kid="rsa-1",
        jku=jwks_server.url_for("/jwks.json"),
    )
    assert call(app, "/cds-services", good).status_code == 200
    fetches = len([r for r, _ in jwks_server.log if r.path == "/jwks.json"])
    assert fetches == 1  # cached afterwards
    bad = token(
        "/cds-services",
        iss=JKU_ISS,
        key=RSA_KEY,
        alg="RS384",
        kid="rsa-2",
        jku=jwks_server.url_for("/jwks.json"),
    )
    assert call(app, "/cds-services", bad).status_code == 401
    assert len([r for r, _ in jwks_server.log if r.path == "/jwks.json"]) == fetches + 1


def test_unknown_kids_do_not_refetch_within_a_minute(app: Flask, jwks_server: HTTPServer) -> None:
    jku = jwks_server.url_for("/jwks.json")
    good = token("/cds-services", iss=JKU_ISS, key=RSA_KEY, alg="RS384", kid="rsa-1", jku=jku)
    assert call(app, "/cds-services", good).status_code == 200
    for n in range(20):  # anyone can send these: no signature is checked before the key is found
        made_up = token(
            "/cds-services", iss=JKU_ISS, key=RSA_KEY, alg="RS384", kid=f"x{n}", jku=jku
        )
        assert call(app, "/cds-services", made_up).status_code == 401
    assert len([r for r, _ in jwks_server.log if r.path == "/jwks.json"]) == 1


@pytest.mark.parametrize(
    ("alg", "signer"), [("ES384", EC_KEY), ("RS384", RSA_KEY)], ids=["sandbox", "epic"]
)
def test_a_kid_in_the_trust_file_is_verified_with_its_key_whatever_jku_names(
    tmp_path: Path, knowledge: Knowledge, httpserver: HTTPServer, alg: str, signer: Any
) -> None:
    # The issuer's jku would serve another key under the same kid: the file's key wins, and the
    # jku is not fetched at all (a hospital network without internet access still verifies).
    rogue = ROGUE_KEY if alg == "ES384" else rsa.generate_private_key(65537, 2048)
    httpserver.expect_request("/keys.json").respond_with_json(
        {"keys": [jwk(rogue.public_key(), "shared", alg)]}
    )
    jku = httpserver.url_for("/keys.json")
    issuers = tmp_path / "issuers.json"
    entry = {
        "iss": JKU_ISS,
        "jku": [jku],
        "jwks": {"keys": [jwk(signer.public_key(), "shared", alg)]},
    }
    issuers.write_text(json.dumps({"issuers": [entry]}))
    app = secured_app(tmp_path, issuers, knowledge)
    path = f"/cds-services/{SERVICE_ID}"
    good = token(path, iss=JKU_ISS, key=signer, alg=alg, kid="shared", jku=jku)
    assert call(app, path, good).status_code == 200
    forged = token(path, iss=JKU_ISS, key=rogue, alg=alg, kid="shared", jku=jku)
    assert call(app, path, forged).status_code == 401
    assert httpserver.log == []


def test_the_shipped_trust_file_takes_the_sandbox_key_without_fetching_its_jku() -> None:
    from cds_service.auth import JwksCache, Verifier

    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no internet here", request=request)

    issuers = load_trusted_issuers(ROOT / "deploy" / "trusted-issuers.example.json")
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    http = httpx.Client(transport=httpx.MockTransport(offline))
    verifier = Verifier(issuers, BASE, "sqlite://", JwksCache(http))
    kid = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    header = {"alg": "ES384", "typ": "JWT", "kid": kid, "jku": sandbox.jku[0]}
    assert verifier._key(sandbox, header, kid)[0].key_id == kid


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("as_array", [False, True])
def test_valid_es384_with_static_key(app: Flask, path: str, as_array: bool) -> None:
    aud = [BASE + path, "https://unrelated.example.org"] if as_array else BASE + path
    assert call(app, path, token(path, aud=aud)).status_code == 200


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("as_array", [False, True])
def test_valid_rs384_with_jku(
    app: Flask, jwks_server: HTTPServer, path: str, as_array: bool
) -> None:
    aud = [BASE + path] if as_array else BASE + path
    good = token(
        path,
        iss=JKU_ISS,
        key=RSA_KEY,
        alg="RS384",
        kid="rsa-1",
        jku=jwks_server.url_for("/jwks.json"),
        aud=aud,
    )
    assert call(app, path, good).status_code == 200


def test_replayed_jti_is_rejected(app: Flask) -> None:
    path = "/cds-services"
    once = token(path)
    assert call(app, path, once).status_code == 200
    assert call(app, path, once).status_code == 401


def test_replay_is_rejected_across_instances_sharing_a_database(
    tmp_path: Path, issuers_file: Path, knowledge: Knowledge
) -> None:
    first = secured_app(tmp_path, issuers_file, knowledge, db="shared.sqlite3")
    second = secured_app(tmp_path, issuers_file, knowledge, db="shared.sqlite3")
    once = token("/cds-services")
    assert call(first, "/cds-services", once).status_code == 200
    assert call(second, "/cds-services", once).status_code == 401


def test_preflight_and_health_need_no_token(app: Flask) -> None:
    client = app.test_client()
    preflight = client.options(
        "/cds-services",
        headers={"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert client.get("/healthz").status_code == 200


def test_tokens_never_reach_the_log(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = token("/cds-services")
    bad = token("/cds-services", key=ROGUE_KEY)
    call(app, "/cds-services", good)
    call(app, "/cds-services", bad)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (good, bad, good.split(".")[2], bad.split(".")[1]):
        assert secret not in text
    assert any(getattr(r, "reason", None) == "bad signature" for r in caplog.records)


def test_jwt_mode_needs_base_url_and_issuers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL"):
        make_settings(tmp_path, auth="jwt")
    from cds_service.config import load_settings

    with pytest.raises(ConfigError, match="CDS_TRUSTED_ISSUERS"):
        load_settings({"CDS_AUTH": "jwt", "CDS_PUBLIC_BASE_URL": BASE, "CDS_PATIENT_HASH_KEY": "k"})


def test_shipped_sandbox_issuer_file_loads() -> None:
    issuers = load_trusted_issuers(ROOT / "deploy" / "trusted-issuers.example.json")
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    assert sandbox.jku == ("https://sandbox.cds-hooks.org/.well-known/jwks.json",)
    assert sandbox.jwks is not None
    assert [k.key_id for k in sandbox.jwks.keys] == ["44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"]


def test_bad_issuer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps({"issuers": [{"iss": STATIC_ISS, "jku": ["http://keys.example.org/jwks"]}]})
    )
    with pytest.raises(AuthConfigError, match="https"):
        load_trusted_issuers(path)
