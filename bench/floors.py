"""The framework and production floors of `make bench`, served as `cds-service serve` serves."""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication

# serve's gunicorn settings (cds_service/cli.py), besides bind, workers and threads
SERVE = {"worker_class": "gthread", "timeout": 30, "accesslog": None, "preload_app": True}


def create_app(args: argparse.Namespace) -> Flask:
    app = Flask(f"{args.kind}-floor")
    # the service's own answers (run.py saves them), so every server sends wrk the same bytes
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
    """PyJWT (keys parsed once, found by `kid`), then one INSERT of the `jti`: a replay is a 401."""
    import jwt
    from sqlalchemy import Column, DateTime, MetaData, String, Table, create_engine, insert
    from sqlalchemy.exc import IntegrityError

    issuers = json.loads(Path(args.issuers).read_text())["issuers"]
    trusted = {entry["iss"] for entry in issuers}
    keys = {key.key_id: key for e in issuers for key in jwt.PyJWKSet.from_dict(e["jwks"]).keys}
    engine = create_engine(args.database)
    token_hash = Column("token_hash", String(64), primary_key=True)
    expires_at = Column("expires_at", DateTime(timezone=True), nullable=False)
    seen = Table("floor_jti", MetaData(), token_hash, expires_at)
    seen.metadata.create_all(engine)
    engine.dispose()  # made in the master: each forked worker opens its own connections

    def verify(authorization: str) -> bool:
        token = authorization.removeprefix("Bearer ")
        try:
            key = keys[jwt.get_unverified_header(token)["kid"]]
            require = {"require": ["iss", "aud", "exp", "iat", "jti"]}
            audience, algorithms = args.audience + request.path, [key.algorithm_name]
            claims = jwt.decode(
                token, key, algorithms, issuer=trusted, audience=audience, options=require
            )
            jti = hashlib.sha256(f"{claims['iss']}\0{claims['jti']}".encode()).hexdigest()
            expires = datetime.fromtimestamp(claims["exp"], UTC)
            with engine.begin() as connection:
                connection.execute(insert(seen).values(token_hash=jti, expires_at=expires))
        except (jwt.PyJWTError, KeyError, IntegrityError):
            return False
        return True

    return verify


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("kind", choices=["framework", "production"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--answers", required=True, help="folder of <service id>.json bodies")
    parser.add_argument("--issuers", help="trusted-issuers JSON (production)")
    parser.add_argument("--audience", help="the service's public base URL (production)")
    parser.add_argument("--database", help="SQLAlchemy URL of the jti table (production)")
    args = parser.parse_args()
    app = create_app(args)

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            bind = {"bind": f"127.0.0.1:{args.port}", "workers": args.workers}
            for name, value in {**bind, "threads": args.threads, **SERVE}.items():
                self.cfg.set(name, value)

        def load(self) -> Flask:
            return app

    Server().run()


if __name__ == "__main__":
    main()
