"""HTTP endpoints: a thin shell that parses requests, calls the protocol layer and writes JSON."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from cds_service.errors import InvalidRequest, Issue, UnsupportedMediaType
from cds_service.feedback import receive_feedback
from cds_service.hooks import call_service
from cds_service.logs import RequestLog
from cds_service.metrics import count_request, exposition
from cds_service.runtime import Runtime
from cds_service.store import ping

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.access")
# Request lines are logged in batches off the request path (see RequestLog).
REQUEST_LOG = RequestLog(log)


def runtime() -> Runtime:
    """The Runtime the app factory attached to this app."""
    found: Runtime = current_app.extensions["cds_runtime"]
    return found


def read_json() -> Any:
    """The request body parsed as JSON: 415 if it is not declared JSON, 400 if it does not parse."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
    raw = _body()
    try:
        # orjson: strict RFC 8259 (no NaN/Infinity, valid UTF-8 only) and about twice as fast as
        # the standard library on prefetch-sized bodies; nesting is capped (1024 levels) by it.
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg:
            raise InvalidRequest(
                "the request body is nested too deeply",
                [
                    Issue(
                        "too-costly", "the request body's JSON is nested too deeply to be read", "$"
                    )
                ],
            ) from None
        raise InvalidRequest(
            "the request body is not valid JSON",
            [
                Issue(
                    "structure",
                    f"the request body is not valid JSON at line {exc.lineno} column {exc.colno}",
                    "$",
                )
            ],
        ) from None


def _body() -> bytes:
    """The request body: 413 past MAX_CONTENT_LENGTH, 400 if the client sends less than it declared."""
    length = request.content_length
    if length is None:  # chunked: werkzeug's stream reads it, within the limit
        return request.get_data(cache=False)
    limit = request.max_content_length
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    # One read of the declared length from the WSGI input (PEP 3333): werkzeug's stream would
    # copy a prefetch-sized body through three more buffers on the way.
    try:
        raw: bytes = request.environ["wsgi.input"].read(length)
    except (OSError, ValueError):  # the connection broke mid-body, as werkzeug's stream treats it
        raise ClientDisconnected() from None
    if len(raw) != length:
        raise InvalidRequest(
            "the request body is shorter than its Content-Length",
            [Issue("structure", f"received {len(raw)} of {length} bytes", "$")],
        )
    return raw


@bp.get("/cds-services")
def discovery() -> Response:
    """CDS Hooks discovery: every service with its hook, description and prefetch templates."""
    services = [s.discovery() for s in runtime().knowledge.services]
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
def readyz() -> tuple[Response, int]:
    """Readiness: knowledge loaded and the store reachable; auth mode reported."""
    rt = runtime()
    store_ok, store_detail = rt_store_check(rt)
    body: dict[str, Any] = {
        "status": "ready" if store_ok else "not-ready",
        "knowledge": {
            "services": len(rt.knowledge.services),
            "valueSets": len(rt.knowledge.valuesets),
            "cardKinds": len(rt.knowledge.cards),
        },
        "store": store_detail,
        "auth": rt.settings.auth,
    }
    if rt.settings.auth == "off":
        body["warning"] = (
            "client JWT verification is OFF (CDS_AUTH=off): for local development only"
        )
    return jsonify(body), 200 if store_ok else 503


def rt_store_check(rt: Runtime) -> tuple[bool, str]:
    """Whether the database answers."""
    return ping(rt.settings.database_url)


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
    rt = runtime()
    if rt.in_dry_run:
        return response
    now = time.perf_counter()
    state = g._get_current_object()  # one proxy lookup for the four reads of g below
    elapsed = now - state.get("started", now)
    rule = request.url_rule
    route = rule.rule if rule else None
    service_id = state.get("service_id")
    service = service_id or ""
    if service and not rt.services_with_id(service):
        service = "unknown"  # the path is caller-controlled: keep label values bounded
    status = response.status_code
    if route != "/metrics":
        count_request(route or "unmatched", service, status, elapsed)
    REQUEST_LOG.write(
        {
            "method": request.method,
            "route": route,
            "service_id": service_id,
            "hook": state.get("hook"),
            "status": status,
            "latency_ms": round(elapsed * 1000, 1),
            "cards": state.get("card_count"),
        }
    )
    return response
