"""The Flask app factory: settings, knowledge and store checked, endpoints and error handlers added."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from cds_service import api
from cds_service.clock import Clock
from cds_service.config import ConfigError, Settings, load_settings
from cds_service.errors import CdsError, Issue, operation_outcome
from cds_service.fhir.data import Quantity
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.logs import configure_logging
from cds_service.protocol.schemas import SCHEMA_NAMES, validate
from cds_service.runtime import Runtime
from cds_service.store import StoreUnavailable, migrate, schema_lag
from cds_service.units import Analyte, concentration

log = logging.getLogger(__name__)


def silent_critical_kinds(knowledge: Knowledge) -> list[str]:
    """The silent card kinds that can be critical (the kind's indicator, or a variant's)."""
    return [
        name
        for name in knowledge.silent_kinds()
        if "critical"
        in {
            knowledge.cards[name].indicator,
            *(v.indicator for v in knowledge.cards[name].variants.values()),
        }
    ]


# Werkzeug's HTTP errors mapped to FHIR issue-type codes for the OperationOutcome body.
_HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-long", 415: "not-supported"}


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, knowledge: Knowledge | None = None
) -> Flask:
    """Build the Flask app: settings from the environment unless given, knowledge loaded and checked.

    Tests pass an already loaded `knowledge` so the YAML is parsed once per test session.
    """
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    knowledge = knowledge or load_knowledge(settings.knowledge_dir)
    try:
        knowledge = knowledge.with_modes(dict(settings.card_modes))
    except ValueError as exc:
        raise ConfigError(f"CDS_CARD_MODES: {exc}") from None
    # What a hospital's integration engineer checks at start-up: which content, which kinds silent.
    log.info(
        "knowledge version %s (sha256 %s); silent card kinds: %s",
        knowledge.version,
        knowledge.content_hash,
        ", ".join(knowledge.silent_kinds()) or "none",
    )
    # Allowed, not refused: a committee may trial a new critical card silently before anyone sees
    # it (what silent mode is for), and refusing to start would take every other card down too.
    # But no clinician sees what such a kind finds, so it must never be silent by oversight.
    if critical := silent_critical_kinds(knowledge):
        log.warning(
            "critical card kind(s) silent: %s: their findings are recorded and shown to no one",
            ", ".join(critical),
        )
    try:
        if settings.migrate_at_start:
            applied = migrate(settings.database_url)
            log.info("database schema current: %d migrations applied at this start", applied)
        elif lag := schema_lag(settings.database_url):
            # A serving account without DDL rights: /readyz answers 503 until the Job migrates.
            log.warning("not ready: %s", lag)
    except StoreUnavailable:
        # Hook calls still work without the database (no snoozing); feedback answers 503 until it
        # returns, and the schema is brought up to date by the next start or `cds-service migrate`.
        log.warning("database unreachable at start-up; running without it until it returns")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # cards keep the order they are built in
    app.extensions["cds_runtime"] = Runtime(settings, knowledge, clock or Clock())
    CORS(
        app,
        resources={r"/cds-services*": {}},
        origins=list(settings.cors_origins),
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
    )
    app.register_blueprint(api.bp)
    _register_error_handlers(app)
    if settings.auth == "off":
        log.warning("client JWT verification is OFF (CDS_AUTH=off): for local development only")
    return app


def warm_up() -> None:
    """Build what every worker's first call would otherwise build for itself: the schema validators
    and the UCUM unit registry (~0.5 s and ~25 MiB). Run once in the master before the fork, so the
    workers share them."""
    for name in SCHEMA_NAMES:
        validate({}, name)
    concentration(Quantity(1.0, "mmol/L", "mmol/L"), "mg/dL", Analyte("calcium", 40.078, 2))


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CdsError)
    def cds_error(error: CdsError) -> tuple[Response, int, dict[str, str]]:
        return jsonify(error.body()), error.status, error.headers()

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int, dict[str, Any]]:
        status = error.code or 500
        code = _HTTP_ISSUE_CODES.get(status, "processing")
        message = error.description or error.name
        if status == 413:
            message = f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        return jsonify(operation_outcome([Issue(code, message)])), status, headers

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # Our bug, not the caller's: log the type (no message: it might quote patient data).
        log.exception("unhandled error", extra={"error_type": type(error).__name__})
        body = operation_outcome(
            [Issue("exception", "internal error; the service log has details")]
        )
        return jsonify(body), 500
