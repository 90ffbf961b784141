"""The `cds-service` command: run (development), serve (gunicorn), evaluate, check-knowledge."""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from cds_service.config import ConfigError, load_settings
from cds_service.knowledge import KnowledgeError, load_knowledge

log = logging.getLogger(__name__)


@click.group()
@click.version_option(package_name="cds-service")
def main() -> None:
    """CDS Hooks service: leg muscle cramps after cerebral infarction."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8080")),
    show_default="8080 or $PORT",
)
def run(host: str, port: int) -> None:
    """Run the development server (CDS_ENV=development defaults: SQLite under ./var, no JWT)."""
    from cds_service.app import create_app

    os.environ.setdefault("CDS_ENV", "development")
    app = _app_or_exit(create_app)
    click.echo(f"CDS Hooks discovery: http://{host}:{port}/cds-services", err=True)
    try:
        app.run(host=host, port=port, threaded=True)
    finally:
        app.extensions["cds_runtime"].close()


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8080")),
    show_default="8080 or $PORT",
)
@click.option(
    "--workers",
    type=int,
    default=lambda: int(os.environ.get("CDS_WORKERS", "2")),
    show_default="2 or $CDS_WORKERS",
)
@click.option(
    "--threads",
    type=int,
    default=lambda: int(os.environ.get("CDS_THREADS", "4")),
    show_default="4 or $CDS_THREADS",
)
@click.option(
    "--certfile",
    default=lambda: os.environ.get("CDS_TLS_CERTFILE"),
    help="TLS certificate (PEM) to serve https directly; or $CDS_TLS_CERTFILE.",
)
@click.option(
    "--keyfile",
    default=lambda: os.environ.get("CDS_TLS_KEYFILE"),
    help="TLS private key (PEM); or $CDS_TLS_KEYFILE.",
)
def serve(
    host: str, port: int, workers: int, threads: int, certfile: str | None, keyfile: str | None
) -> None:
    """Run production-style under gunicorn (settings from CDS_* variables; JWT auth by default).

    CDS Hooks requires HTTPS: give --certfile/--keyfile, or put a TLS-terminating proxy in front.
    """
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    from gunicorn.app.base import BaseApplication

    from cds_service.app import create_app, warm_up
    from cds_service.store import dispose_engines

    # The app is built once, in the master (failing fast on bad settings or knowledge), and warmed
    # up there; the workers are forked from it and share that memory copy-on-write.
    app = _app_or_exit(create_app)
    warm_up()

    def post_fork(server: Any, worker: Any) -> None:
        # Database connections must not be shared across processes: each worker opens its own.
        dispose_engines()

    def worker_exit(server: Any, worker: Any) -> None:
        # A stopping worker (SIGTERM, restart, max requests) stores its queued issued-card records.
        app.extensions["cds_runtime"].close()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 30)
            self.cfg.set("accesslog", None)  # the app writes its own structured request log
            self.cfg.set("preload_app", True)
            self.cfg.set("post_fork", post_fork)
            self.cfg.set("worker_exit", worker_exit)
            if certfile and keyfile:
                self.cfg.set("certfile", certfile)
                self.cfg.set("keyfile", keyfile)

        def load(self) -> Any:
            return app

    scheme = "https" if certfile else "http"
    click.echo(f"CDS Hooks discovery: {scheme}://{host}:{port}/cds-services", err=True)
    Server().run()


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (run once per release before starting replicas)."""
    from cds_service.store import StoreUnavailable
    from cds_service.store import migrate as run_migrations

    settings = _settings_or_exit()
    try:
        run_migrations(settings.database_url)
    except StoreUnavailable as exc:
        click.echo(f"database unreachable: {exc}", err=True)
        sys.exit(1)
    click.echo("database schema is up to date")


@main.command("report")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Only cards shown from this date (UTC).",
)
def report_command(since: datetime | None) -> None:
    """Per card kind: shown, accepted, overridden, acceptance rate and the top override reasons."""
    from cds_service.store import StoreUnavailable
    from cds_service.store.report import report

    settings = _settings_or_exit()
    start = since.replace(tzinfo=UTC) if since else None
    try:
        rows = report(settings.database_url, start)
    except StoreUnavailable as exc:
        click.echo(f"database unreachable: {exc}", err=True)
        sys.exit(1)
    click.echo(f"Card outcomes since {start.date().isoformat() if start else 'the first record'}")
    click.echo(
        "acceptance rate = accepted / (accepted + overridden); cards without feedback were not acted on\n"
    )
    header = f"{'card kind':32} {'shown':>6} {'accepted':>9} {'overridden':>11} {'rate':>6}  top override reasons"
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        rate = f"{row.acceptance_rate:.0%}" if row.acceptance_rate is not None else "-"
        reasons = "; ".join(f"{reason} ({n})" for reason, n in row.reasons.most_common(3)) or "-"
        click.echo(
            f"{row.kind:32} {row.shown:>6} {row.accepted:>9} {row.overridden:>11} {rate:>6}  {reasons}"
        )
    if not rows:
        click.echo("(no cards recorded)")


@main.command()
@click.option("--older-than-days", type=click.IntRange(min=1), default=365, show_default=True)
def prune(older_than_days: int) -> None:
    """Delete issued cards and feedback older than the retention period, and expired JWT ids."""
    from cds_service.store import StoreUnavailable
    from cds_service.store.report import prune as prune_store

    settings = _settings_or_exit()
    now = datetime.now(UTC)
    try:
        removed = prune_store(settings.database_url, now - timedelta(days=older_than_days), now)
    except StoreUnavailable as exc:
        click.echo(f"database unreachable: {exc}", err=True)
        sys.exit(1)
    click.echo(", ".join(f"{table}: {count} removed" for table, count in removed.items()))


def _settings_or_exit() -> Any:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(1)


@main.command("check-knowledge")
@click.option(
    "--fhir/--no-fhir", default=True, help="Also validate order templates as FHIR R4 resources."
)
def check_knowledge(fhir: bool) -> None:
    """Validate cards/ against its schemas and cross-references; exit 1 listing every problem."""
    try:
        settings = load_settings()
        knowledge = load_knowledge(settings.knowledge_dir)
    except (ConfigError, KnowledgeError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    problems = validate_orders(knowledge) if fhir else []
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(
        f"knowledge OK: {len(knowledge.services)} services, {len(knowledge.valuesets)} value sets, "
        f"{len(knowledge.cards)} card kinds, {len(knowledge.thresholds)} thresholds, "
        f"{len(knowledge.orders)} order templates"
    )


def validate_orders(knowledge: Any) -> list[str]:
    """Each order template, filled with sample values, parsed as its FHIR R4 resource type."""
    from fhir.resources.R4B import (
        get_fhir_model_class,  # R4B: the R4-compatible models fhir.resources ships
    )
    from pydantic import ValidationError

    from cds_service.knowledge.loader import fill_template

    problems = []
    sample = {"patient_id": "example", "today": "2026-01-01"}
    for order_id, order in knowledge.orders.items():
        resource = fill_template(order["resource"], sample)
        try:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except ValidationError as exc:
            problems.append(f"orders.yaml: {order_id}: not a valid FHIR R4 resource: {exc}")
    return problems


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the exact CDS Hooks response.")
@click.option("--service", default=None, help="Service id (default: the patient-view service).")
@click.option("--patient", default=None, help="Patient id, when a Bundle holds several patients.")
def evaluate(file: Path, as_json: bool, service: str | None, patient: str | None) -> None:
    """Print the cards for a hook request (JSON) or a patient Bundle, for reviewing the content."""
    from cds_service.app import create_app
    from cds_service.errors import CdsError
    from cds_service.hooks import call_service, request_from_bundle

    os.environ.setdefault("CDS_ENV", "development")
    app = _app_or_exit(create_app)
    rt = app.extensions["cds_runtime"]
    document = json.loads(file.read_text(encoding="utf-8"))
    if document.get("resourceType") == "Bundle":
        spec = next(
            s for s in rt.knowledge.services if service in (None, s.id) and s.hook == "patient-view"
        )
        patient_id = patient or _first_patient(document)
        request = request_from_bundle(spec, document, patient_id, str(uuid.uuid4()))
        service_id = spec.id
    else:
        request = document
        service_id = service or next(
            s.id for s in rt.knowledge.services if s.hook == document.get("hook")
        )
    try:
        result = call_service(rt, service_id, request)
    except CdsError as exc:
        click.echo(json.dumps(exc.body(), indent=2), err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.body, indent=2))
        return
    cards = result.body["cards"]
    if not cards:
        click.echo("No cards (the patient is out of scope or nothing applies).")
    for card in cards:
        click.echo(f"[{card['indicator'].upper()}] {card['summary']}")
        click.echo(f"  kind: {card['source']['topic']['code']}")
        for suggestion in card.get("suggestions", []):
            star = " (recommended)" if suggestion.get("isRecommended") else ""
            click.echo(f"  suggestion: {suggestion['label']}{star}")
        click.echo("")


def _first_patient(bundle: dict[str, Any]) -> str:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Patient" and resource.get("id"):
            return str(resource["id"])
    raise click.UsageError("the Bundle has no Patient; pass --patient")


def _app_or_exit(factory: Any) -> Any:
    try:
        return factory()
    except (ConfigError, KnowledgeError) as exc:
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
