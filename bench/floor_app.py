"""The framework floor: the least a Flask hook endpoint can do, under the service's gunicorn settings.

POST /cds-services/<id> parses the request JSON (the same bodies the service gets) and answers one
fixed card; GET /healthz answers {"status": "ok"}. It is served exactly as `cds-service serve` serves
the service (cds_service/cli.py): gunicorn, gthread workers, the same workers and threads, timeout
30 s, no access log, the app preloaded in the master. bench/run.py checks that the setting names
still match serve's and says so in the results if they drift. No validation, no rules, no
database, no logging: whatever the service spends above this is its own work.

    python bench/floor_app.py --host 127.0.0.1 --port 18081 --workers 2 --threads 4
"""

from __future__ import annotations

import argparse
from typing import Any

from flask import Flask, Response, jsonify, request

CARD = {
    "uuid": "5b0c7b0e-3f1e-4c55-9c36-7f0d6f5b0f10",
    "summary": "Leg cramps after cerebral infarction: no cause identified yet, consider the workup",
    "detail": "Fixed card of the benchmark floor.",
    "indicator": "info",
    "source": {"label": "Benchmark floor"},
}


def create_floor_app() -> Flask:
    app = Flask("floor")

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> Any:
        body = request.get_json()  # the whole request JSON is parsed, as the service does
        if not isinstance(body, dict) or "hook" not in body:
            return jsonify({"error": "not a hook request"}), 400
        return jsonify({"cards": [CARD]})

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        # The same settings as cds_service/cli.py `serve` (keep in step with it).
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 30)
            self.cfg.set("accesslog", None)
            self.cfg.set("preload_app", True)  # (serve's worker hooks warm the service; no setting)

        def load(self) -> Any:
            return create_floor_app()

    Server().run()


if __name__ == "__main__":
    main()
