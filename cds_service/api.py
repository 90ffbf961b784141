"""HTTP endpoints: a thin shell that parses requests, calls the protocol layer and writes JSON."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from cds_service.errors import InvalidRequest, Issue, UnsupportedMediaType
from cds_service.feedback import receive_feedback
from cds_service.hooks import call_service
from cds_service.metrics import count_request, exposition
from cds_service.runtime import Runtime
from cds_service.store import ping

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.access")


def runtime() -> Runtime:
    """The Runtime the app factory attached to this app."""
    found: Runtime = current_app.extensions["cds_runtime"]
    return found


def read_json() -> Any:
    """The request body parsed as strict JSON (RFC 8259): 415 if it is not declared JSON, 400 if it
    does not parse, is cut short or nests too deeply; 413 (werkzeug) past MAX_CONTENT_LENGTH."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
    try:
        raw = request.get_data(cache=False)
        limit = request.max_content_length
        # werkzeug cuts a chunked body at the limit without saying so: is there more of it?
        chunked = request.content_length is None
        if (
            chunked
            and limit is not None
            and len(raw) >= limit
            and request.environ["wsgi.input"].read(1)
        ):
            raise RequestEntityTooLarge()
    except ClientDisconnected:  # werkzeug: the body ended before its Content-Length
        raise InvalidRequest(
            "the request body is shorter than its Content-Length",
            [Issue("structure", "the request body is shorter than its Content-Length", "$")],
        ) from None
    except HTTPException:
        raise  # 413
    except Exception as exc:
        # What the WSGI server's reader raises for a body it cannot decode (gunicorn: a chunk size
        # that is not hex, a chunk without its CRLF); its classes are the server's, not ours.
        log.info("request body unreadable", extra={"error_type": type(exc).__name__})
        raise InvalidRequest(
            "the request body could not be read",
            [Issue("structure", "the request body could not be read", "$")],
        ) from None
    try:
        # orjson: strict RFC 8259 (no NaN or Infinity, valid UTF-8 and no lone surrogates), and it
        # saves ~3% of a call's CPU with JWTs on (bench/README.md).
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in exc.msg or "depth" in exc.msg:  # orjson stops at 1,024 levels
            raise InvalidRequest(
                "the request body is nested too deeply",
                [
                    Issue(
                        "too-costly", "the request body's JSON is nested too deeply to be read", "$"
                    )
                ],
            ) from None
        where = f"line {exc.lineno} column {exc.colno}"
        raise InvalidRequest(
            "the request body is not valid JSON",
            [Issue("structure", f"the request body is not valid JSON at {where}: {exc.msg}", "$")],
        ) from None


@bp.get("/cds-services")
def discovery() -> Response:
    """CDS Hooks discovery: every service with its hook, description and prefetch templates."""
    knowledge = runtime().knowledge
    services = [{**s.discovery(), "extension": knowledge.extension()} for s in knowledge.services]
    return jsonify({"services": services})


@bp.post("/cds-services/<service_id>")
def hook_call(service_id: str) -> Response:
    """Call a CDS service with a hook request."""
    g.service_id = service_id
    body = read_json()
    result = call_service(runtime(), service_id, body)
    g.card_count = len(result.body["cards"])
    g.hook = result.hook
    return jsonify(result.body)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """Feedback on cards this service returned (accepted or overridden)."""
    g.service_id = service_id
    counts = receive_feedback(runtime(), service_id, read_json())
    return jsonify(counts)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics (restrict access at the network edge; no patient data in any label)."""
    body, content_type = exposition()
    return Response(body, content_type=content_type)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API (no auth: it holds no patient or secret data)."""
    from cds_service.protocol.openapi import openapi_json

    ids = tuple(sorted({s.id for s in runtime().knowledge.services}))
    return Response(openapi_json(ids), mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: knowledge loaded (the app exists only then); the store and auth mode reported.

    Ready even when the database does not answer: hook calls work without it (no snoozing; feedback
    answers 503), and the database is shared, so a 503 here would take every replica out of the
    load balancer at once and turn a degraded service into none. deploy/README.md.
    """
    rt = runtime()
    # A database that failed a moment ago is not probed again (a hung one would hold the probe
    # for the store's deadline): /readyz answers at once, as hook calls go on without it.
    _store_ok, store_detail = (
        ping(rt.settings.database_url) if rt.store_available() else (False, "unavailable")
    )
    body: dict[str, Any] = {
        "status": "ready",
        "knowledge": {
            "services": len(rt.knowledge.services),
            "valueSets": len(rt.knowledge.valuesets),
            "cardKinds": len(rt.knowledge.cards),
            "version": rt.knowledge.version,
            "contentHash": rt.knowledge.content_hash,
            "silentKinds": rt.knowledge.silent_kinds(),
        },
        "store": store_detail,
        "auth": rt.settings.auth,
    }
    if rt.settings.auth == "off":
        body["warning"] = (
            "client JWT verification is OFF (CDS_AUTH=off): for local development only"
        )
    return jsonify(body)


@bp.before_app_request
def _start_timer() -> None:
    g.started = time.perf_counter()


@bp.before_request
def _authenticate() -> None:
    # Every CDS endpoint (discovery, service calls, feedback) requires the client JWT when auth is on;
    # CORS preflights carry no credentials and are answered by flask-cors before this runs.
    rt = runtime()
    if (
        rt.verifier is None
        or request.method == "OPTIONS"
        or not request.path.startswith("/cds-services")
    ):
        return
    rt.verifier.verify(request.headers.get("Authorization"), request.path, rt.clock.now())


@bp.after_app_request
def _access_log(response: Response) -> Response:
    # Request logs name the route, service, status, latency and card count, never bodies, headers or ids.
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else None
    service_id = g.get("service_id")
    service = service_id or ""
    if service and not runtime().services_with_id(service):
        service = "unknown"  # the path is caller-controlled: keep label values bounded
    if route != "/metrics":
        count_request(route or "unmatched", service, response.status_code, elapsed)
    fields = {
        "method": request.method,
        "route": route,
        "service_id": service_id,
        "hook": g.get("hook"),
        "status": response.status_code,
        "latency_ms": round(elapsed * 1000, 1),
        "cards": g.get("card_count"),
    }
    log.info("request", extra=fields)
    return response
