"""Hostile client JWTs (issue 19 items 5, 8 and 10), as data in fixtures/hostile/jwt.yaml and jwks.yaml.

The app runs with JWTs on and its store on the real PostgreSQL; JWK Set endpoints that fail, stall
or drip are tests/support/hostile_http.py on loopback. Shared standard: a refusal is a bare 401,
never a 5xx, and no anonymous token makes the service fetch keys more than once per interval.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms

from cds_service.app import create_app
from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from tests.conftest import FIXTURES, make_settings, postgres_schema, release
from tests.support.hostile_http import FaultyFhirServer

BASE = "https://cds.example.org"
PATH = "/cds-services"
HOSTILE = FIXTURES / "hostile"

SIGNERS: dict[str, Any] = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa-other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec384": ec.generate_private_key(ec.SECP384R1()),
    "ec256": ec.generate_private_key(ec.SECP256R1()),
    "ec521": ec.generate_private_key(ec.SECP521R1()),
}


def public_jwk(signer: str, **extra: Any) -> dict[str, Any]:
    public = SIGNERS[signer].public_key()
    algorithm = RSAAlgorithm if signer.startswith("rsa") else ECAlgorithm
    key: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    return {**key, "kid": "k", "use": "sig", **extra}


# The trusted keys of fixtures/hostile/jwt.yaml, one issuer each (kid "k").
KEYS = {
    "rsa": public_jwk("rsa"),
    "rsa-rs256": public_jwk("rsa", alg="RS256"),
    "ec384": public_jwk("ec384"),
}


def cases(name: str, section: str) -> list[dict[str, Any]]:
    loaded: dict[str, list[dict[str, Any]]] = yaml.safe_load((HOSTILE / name).read_text("utf-8"))
    return loaded[section]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(signer: str) -> bytes:
    return bytes(
        SIGNERS[signer]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def raw_token(header: str, payload: str, alg: str, signer: str) -> str:
    """A JWS over exactly these JSON texts (values Python would not write are sent as written)."""
    signing_input = f"{b64(header.encode())}.{b64(payload.encode())}".encode()
    signature: bytes
    if signer == "none":
        signature = b""
    elif signer.endswith("-public-pem"):  # key confusion: HMAC keyed with the public key
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
        secret = public_pem(signer.removesuffix("-public-pem"))
        signature = hmac.new(secret, signing_input, digest).digest()
    else:
        algorithm = get_default_algorithms()[alg]
        signature = algorithm.sign(signing_input, algorithm.prepare_key(SIGNERS[signer]))
    return f"{signing_input.decode()}.{b64(signature)}"


def claims_json(iss: str, overrides: dict[str, str] | None = None) -> str:
    now = int(time.time())
    members = {
        "iss": json.dumps(iss),
        "aud": json.dumps(BASE + PATH),
        "exp": str(now + 300),
        "iat": str(now),
        "jti": json.dumps(uuid.uuid4().hex),
    }
    for claim, text in (overrides or {}).items():
        members[claim] = expand_now(text, now)
    return "{" + ",".join(f'"{k}":{v}' for k, v in members.items()) + "}"


def expand_now(text: str, now: int) -> str:
    """{now} and {now+N} in a fixture's JSON text."""
    while "{now" in text:
        start = text.index("{now")
        end = text.index("}", start)
        offset = text[start + 4 : end]
        text = text[:start] + str(now + (int(offset) if offset else 0)) + text[end + 1 :]
    return text


def issuer(key: str) -> str:
    return f"https://ehr-{key}.example.org"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def secured(tmp_path: Path, knowledge: Knowledge, database: str, entries: list[Any]) -> Flask:
    path = tmp_path / f"issuers-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"issuers": entries}), "utf-8")
    settings = make_settings(
        tmp_path, auth="jwt", public_base_url=BASE, trusted_issuers=path, database_url=database
    )
    return create_app(settings, clock=Clock(), knowledge=knowledge)


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, knowledge: Knowledge, database: str
) -> Iterator[Flask]:
    entries = [{"iss": issuer(name), "jwks": {"keys": [key]}} for name, key in KEYS.items()]
    app = secured(tmp_path_factory.mktemp("jwt"), knowledge, database, entries)
    yield app
    app.extensions["cds_runtime"].close()
    release(database)


def discovery(app: Flask, token: str) -> int:
    response = app.test_client().get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code == 401:
        body = response.get_json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["diagnostics"] == "authentication required"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return response.status_code


def case_id(case: dict[str, Any]) -> str:
    return "-".join(
        str(case.get(k)) for k in ("claim", "json", "header", "key", "alg") if k in case
    )


# --- time claims (item 8) -------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("jwt.yaml", "time_claims"), ids=case_id)
def test_time_claims(app: Flask, case: dict[str, Any]) -> None:
    header = json.dumps({"alg": "ES384", "typ": "JWT", "kid": "k"})
    payload = claims_json(issuer("ec384"), {case["claim"]: case["json"]})
    assert discovery(app, raw_token(header, payload, "ES384", "ec384")) == case["expect"]


# --- typ and algorithms (item 10) -----------------------------------------------------------------


@pytest.mark.parametrize("case", cases("jwt.yaml", "typ"), ids=case_id)
def test_typ(app: Flask, case: dict[str, Any]) -> None:
    typ = "" if case.get("absent") else f',"typ":{case["header"]}'
    header = '{"alg":"ES384","kid":"k"' + typ + "}"
    token = raw_token(header, claims_json(issuer("ec384")), "ES384", "ec384")
    assert discovery(app, token) == case["expect"]


@pytest.mark.parametrize("case", cases("jwt.yaml", "algorithms"), ids=case_id)
def test_algorithms(app: Flask, case: dict[str, Any]) -> None:
    header = json.dumps({"alg": case["alg"], "typ": "JWT", "kid": "k"})
    token = raw_token(header, claims_json(issuer(case["key"])), case["alg"], case["signer"])
    assert discovery(app, token) == case["expect"]


# --- JWK Set fetches (item 5) ---------------------------------------------------------------------

REFETCH_SECONDS = 3.0  # the refetch interval of these tests (60 s in the service)
LEGIT_KEY = ec.generate_private_key(ec.SECP384R1())
ROGUE_KEY = ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def jwks_host() -> Iterator[FaultyFhirServer]:
    with FaultyFhirServer() as server:
        yield server


def jku_token(key: Any, kid: str, jku: str) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://jku-ehr.example.org",
        "aud": BASE + PATH,
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, key, algorithm="ES384", headers={"kid": kid, "typ": "JWT", "jku": jku}
    )


@pytest.mark.parametrize(
    "case", cases("jwks.yaml", "floods"), ids=lambda c: f"{c['fault']}-cached{c['cached']}"
)
def test_anonymous_tokens_do_not_multiply_jwks_fetches(
    tmp_path: Path,
    knowledge: Knowledge,
    database: str,
    jwks_host: FaultyFhirServer,
    case: dict[str, Any],
) -> None:
    jku = f"{jwks_host.origin}/jwks/keys.json"
    legit_jwk = {**json.loads(ECAlgorithm.to_jwk(LEGIT_KEY.public_key())), "kid": "legit"}
    jwks_host.answer_every_path_with(None)
    jwks_host.serve_jwks({"keys": [legit_jwk]})
    app = secured(
        tmp_path, knowledge, database, [{"iss": "https://jku-ehr.example.org", "jku": jku}]
    )
    verifier = app.extensions["cds_runtime"].verifier
    verifier.jwks_cache.min_refetch_seconds = REFETCH_SECONDS
    try:
        if case["cached"]:
            assert discovery(app, jku_token(LEGIT_KEY, "legit", jku)) == 200
            time.sleep(REFETCH_SECONDS + 0.1)  # a refetch is allowed again
        jwks_host.reset()
        if case["fault"] != "jwks":
            jwks_host.answer_every_path_with(case["fault"])
        results: list[tuple[int, float]] = []
        legit: list[tuple[int, float]] = []
        lock = threading.Lock()
        queue = list(range(case["tokens"]))

        def anonymous() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    n = queue.pop()
                token = jku_token(ROGUE_KEY, f"made-up-{n}", jku)
                started = time.monotonic()
                status = discovery(app, token)
                with lock:
                    results.append((status, time.monotonic() - started))

        def legitimate() -> None:
            for _ in range(5):
                started = time.monotonic()
                status = discovery(app, jku_token(LEGIT_KEY, "legit", jku))
                legit.append((status, time.monotonic() - started))
                time.sleep(0.2)

        threads = [threading.Thread(target=anonymous, daemon=True) for _ in range(case["threads"])]
        if "legit_within" in case:
            threads.append(threading.Thread(target=legitimate, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == case["tokens"], "some calls did not answer within 60 s"
        assert {status for status, _ in results} == {401}
        slowest = max(seconds for _, seconds in results)
        assert slowest < case["within"], slowest
        fetches = [c for c in jwks_host.connections if "keys.json" in c.request_line]
        assert len(fetches) <= case["max_fetches"], len(fetches)
        if "legit_within" in case:
            assert [status for status, _ in legit] == [200] * 5
            assert max(seconds for _, seconds in legit) < case["legit_within"], legit
    finally:
        jwks_host.answer_every_path_with(None)
        app.extensions["cds_runtime"].close()
