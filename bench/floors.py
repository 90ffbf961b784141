"""The two floors `make bench` measures the service against, served exactly as `cds-service serve` serves.

framework   the least a Flask hook endpoint does: read the request body, answer a canned body.
production  the least a production hook call does, with the service's libraries: read the body,
            verify the client JWT (PyJWT; keys parsed once, found by `kid`; signature, `iss`, `aud`,
            `exp`), record its `jti` once in PostgreSQL (SQLAlchemy Core, one INSERT: a
            replay is a 401), answer a canned body.

The canned body of each service is the service's own answer to the scenario (bench/run.py saves it),
so every server sends the load generator the same bytes. Gunicorn settings are serve's
(cds_service/cli.py): gthread, the same workers and threads, timeout 30 s, no access log, preloaded.

    python bench/floors.py production --port 18102 --answers DIR --issuers FILE --audience URL --database URL
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, request


def create_app(args: argparse.Namespace) -> Flask:
    app = Flask(f"{args.kind}-floor")
    answers = {p.stem: p.read_bytes() for p in Path(args.answers).glob("*.json")}
    verify = _verifier(args) if args.kind == "production" else None

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> Response:
        request.get_data()
        if verify is not None and not verify(request.headers.get("Authorization", "")):
            return Response(b'{"error":"unauthorized"}', 401, mimetype="application/json")
        return Response(answers[service_id], mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


def _verifier(args: argparse.Namespace) -> Any:
    import jwt
    from sqlalchemy import Column, DateTime, MetaData, String, Table, create_engine, insert
    from sqlalchemy.exc import IntegrityError

    issuers = json.loads(Path(args.issuers).read_text())["issuers"]
    trusted = {entry["iss"] for entry in issuers}
    keys = {key.key_id: key for e in issuers for key in jwt.PyJWKSet.from_dict(e["jwks"]).keys}
    engine = create_engine(args.database)
    seen = Table(
        "floor_jti", MetaData(),
        Column("token_hash", String(64), primary_key=True),
        Column("expires_at", DateTime(timezone=True), nullable=False),
    )
    seen.metadata.create_all(engine)
    engine.dispose()  # made in the master: each forked worker opens its own connections

    def verify(authorization: str) -> bool:
        token = authorization.removeprefix("Bearer ")
        try:
            key = keys[jwt.get_unverified_header(token)["kid"]]
            claims = jwt.decode(
                token, key, algorithms=[key.algorithm_name], issuer=trusted,
                audience=args.audience + request.path,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
            with engine.begin() as connection:
                connection.execute(insert(seen).values(
                    token_hash=hashlib.sha256(f"{claims['iss']}\0{claims['jti']}".encode()).hexdigest(),
                    expires_at=datetime.fromtimestamp(claims["exp"], UTC),
                ))
        except (jwt.PyJWTError, KeyError, IntegrityError):
            return False
        return True

    return verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["framework", "production"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--answers", required=True, help="folder of <service id>.json bodies")
    parser.add_argument("--issuers", help="trusted-issuers JSON (production)")
    parser.add_argument("--audience", help="the service's public base URL (production)")
    parser.add_argument("--database", help="SQLAlchemy URL of the jti table (production)")
    args = parser.parse_args()
    app = create_app(args)

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:  # serve's settings (cds_service/cli.py)
            for name, value in {
                "bind": f"{args.host}:{args.port}", "workers": args.workers,
                "threads": args.threads, "worker_class": "gthread", "timeout": 30,
                "accesslog": None, "preload_app": True,
            }.items():
                self.cfg.set(name, value)

        def load(self) -> Flask:
            return app

    Server().run()


if __name__ == "__main__":
    main()
