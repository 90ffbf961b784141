"""The `cds-service` command: run, serve, migrate, report, prune, check-knowledge, evaluate, gallery."""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from cds_service.clock import Clock
from cds_service.config import PROJECT_ROOT, ConfigError, Settings, load_settings
from cds_service.knowledge import Knowledge, KnowledgeError, load_knowledge

log = logging.getLogger(__name__)


# An option a deployment may set in the environment instead; --help names the variable.
env_option = functools.partial(click.option, show_default=True, show_envvar=True)


@click.group()
@click.version_option(package_name="cds-service")
def main() -> None:
    """CDS Hooks service: leg muscle cramps after cerebral infarction."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@env_option("--port", type=int, default=8080, envvar="PORT")
def run(host: str, port: int) -> None:
    """Run the development server (CDS_ENV=development defaults: SQLite under ./var, no JWT)."""
    from cds_service.app import create_app

    os.environ.setdefault("CDS_ENV", "development")
    app = _app_or_exit(create_app)
    click.echo(f"CDS Hooks discovery: http://{host}:{port}/cds-services", err=True)
    # SIGTERM (docker stop, an IDE's stop button) would end the process without running `finally`:
    # make it leave like Ctrl-C, so the queued issued-card records are stored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app.run(host=host, port=port, threaded=True)
    finally:
        app.extensions["cds_runtime"].exiting()


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@env_option("--port", type=int, default=8080, envvar="PORT")
@env_option("--workers", type=int, default=2, envvar="CDS_WORKERS")
@env_option("--threads", type=int, default=4, envvar="CDS_THREADS")
@env_option("--certfile", envvar="CDS_TLS_CERTFILE", help="TLS certificate (PEM) to serve https.")
@env_option("--keyfile", envvar="CDS_TLS_KEYFILE", help="TLS private key (PEM).")
def serve(
    host: str, port: int, workers: int, threads: int, certfile: str | None, keyfile: str | None
) -> None:
    """Run production-style under gunicorn (settings from CDS_* variables; JWT auth by default).

    CDS Hooks requires HTTPS: give --certfile/--keyfile, or put a TLS-terminating proxy in front.
    """
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    # As PID 1 (the image's CMD) a signal without a handler is dropped: until gunicorn installs
    # its own, SIGTERM or SIGQUIT (a pod stopped while it starts) ends the start here.
    signal.signal(signal.SIGTERM, _stop_starting)
    signal.signal(signal.SIGQUIT, _stop_starting)
    from gunicorn.app.base import BaseApplication

    from cds_service.app import create_app, warm_up
    from cds_service.store import dispose_engines

    _prepare_metrics_dir()
    # The app is built once, in the master (failing fast on bad settings or knowledge), and warmed
    # up there; the workers are forked from it and share that memory copy-on-write.
    app = _app_or_exit(create_app)
    warm_up()
    # Everything built so far lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it (one stopped a worker for 100-300 ms every ~1,000 calls: the
    # p99, and ~7% of its CPU; bench/README.md), and the workers keep sharing its pages.
    gc.freeze()

    def when_ready(server: Any) -> None:
        # A worker runs the master's signal handlers from fork until it installs its own. Those
        # only queue the signal for the master's loop, which the worker never runs: the worker
        # ignored a stop and the master waited the whole graceful timeout for it. A worker that
        # has not booted yet has no call to finish: such a signal ends it at once.
        master = os.getpid()
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(number, _in_master_only(master, signal.getsignal(number)))

    def post_fork(server: Any, worker: Any) -> None:
        # Database connections must not be shared across processes: each worker opens its own.
        dispose_engines()
        # The master SIGKILLs a worker still running GRACEFUL_TIMEOUT_SECONDS after a stop: the
        # worker stops waiting for its calls 15 s earlier, which leaves worker_exit the time to
        # store the queued card records, ~10 s at worst with a database that does not answer
        # (else a call answered near the limit lost its record, unlogged).
        worker.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT_SECONDS - 15)

    def worker_exit(server: Any, worker: Any) -> None:
        # A stopping worker (SIGTERM, restart, max requests) stores its queued issued-card records;
        # stopped at once (SIGINT, SIGQUIT), its requests still run and store theirs as they go.
        app.extensions["cds_runtime"].exiting()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 30)
            # Idle keep-alive connections live longer here than in the proxy in front (nginx and
            # ingress-nginx keep idle upstream connections 60 s): the proxy closes one first, and
            # never sends a call on a connection gunicorn is closing at that instant (a reset).
            self.cfg.set("keepalive", KEEPALIVE_SECONDS)
            # SIGTERM: stop accepting; each worker waits up to 15 s for its calls (the longest is
            # ~10 s with the default deadlines) and stores their records (post_fork); the master
            # kills what still runs at 30 s (deploy/k8s's terminationGracePeriodSeconds counts on
            # this value).
            self.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT_SECONDS)
            # gunicorn >= 25.1 opens a control socket the service never uses (in a home directory
            # that is read-only in the image); older versions have no such setting.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("accesslog", None)  # the app writes its own structured request log
            self.cfg.set("preload_app", True)
            self.cfg.set("when_ready", when_ready)
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


GRACEFUL_TIMEOUT_SECONDS = 30


def _stop_starting(number: int, frame: Any) -> None:
    raise SystemExit(128 + number)


def _in_master_only(master: int, handler: Any) -> Any:
    """`handler` in the master; in a forked worker that has not installed its own, an exit."""

    def relay(number: int, frame: Any) -> None:
        if os.getpid() != master:
            os._exit(0)
        handler(number, frame)

    return relay


KEEPALIVE_SECONDS = 75


def _prepare_metrics_dir() -> None:
    """Check PROMETHEUS_MULTIPROC_DIR and empty it (files left by a previous run would be added to
    this one's counts); exit 1 if it is set but unusable. Unset: /metrics shows one worker's counts."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if value is None:
        log.warning(
            "PROMETHEUS_MULTIPROC_DIR is not set: /metrics counts only the worker that answers it"
        )
        return
    directory = Path(value)
    if not value.strip() or not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        _fail(
            f"cannot start: PROMETHEUS_MULTIPROC_DIR={value!r} must name a writable directory "
            "(or be unset)",
        )
    for stale in directory.glob("*.db"):
        stale.unlink()


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (run once per release before starting replicas)."""
    from cds_service.store import StoreUnavailable
    from cds_service.store import migrate as run_migrations

    settings = _settings_or_exit("database_url")
    try:
        applied = run_migrations(settings.database_url)
    except StoreUnavailable as exc:
        _fail(f"database unreachable: {exc}")
    if applied:
        click.echo(
            f"applied {applied} migration{'s' if applied != 1 else ''}; the schema is current"
        )
    else:
        click.echo("database schema already up to date: nothing applied")


@main.command("report")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Only cards shown from this date (UTC).",
)
@click.option("--by-version", is_flag=True, help="One row per card kind and content version.")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write OUT_DIR/report.html: weekly plots per card kind (self-contained, no network).",
)
def report_command(since: datetime | None, by_version: bool, html_dir: Path | None) -> None:
    """Per card kind: shown, silent (would have shown), accepted, overridden, acceptance rate and
    the top override reasons."""
    from cds_service.store import StoreUnavailable
    from cds_service.store.report import report, unbumped, versions

    settings = _settings_or_exit("database_url")
    start = since.replace(tzinfo=UTC) if since else None
    try:
        rows = report(settings.database_url, start, by_version=by_version)
        changed = unbumped(versions(settings.database_url, start))
        if html_dir is not None:
            from cds_service.report_html import write_report

            written = write_report(settings.database_url, start, html_dir)
    except StoreUnavailable as exc:
        _fail(_store_problem(settings.database_url, exc))
    click.echo(f"Card outcomes since {start.date().isoformat() if start else 'the first record'}")
    click.echo(
        "one outcome per card: accepted if a suggestion was taken (even if dismissed later), else\n"
        "overridden; rate = accepted / (accepted + overridden); cards without feedback were not acted on;\n"
        "silent = would have been shown: recorded while the kind was silent, never sent to the EHR\n"
    )
    version = f" {'version':>13} {'sha256':12}" if by_version else ""
    header = (
        f"{'card kind':32}{version} {'shown':>6} {'silent':>6} {'accepted':>9} {'overridden':>11} "
        f"{'rate':>6}  top override reasons"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        rate = f"{row.acceptance_rate:.0%}" if row.acceptance_rate is not None else "-"
        reasons = "; ".join(f"{reason} ({n})" for reason, n in row.reasons.most_common(3)) or "-"
        version = f" {row.version:>13} {(row.content or '-')[:12]:12}" if by_version else ""
        click.echo(
            f"{row.kind:32}{version} {row.shown:>6} {row.silent:>6} {row.accepted:>9} "
            f"{row.overridden:>11} {rate:>6}  {reasons}"
        )
    if not rows:
        click.echo("(no cards recorded)")
    for release, hashes in changed.items():
        click.echo(
            f"\nversion {release}: content changed without a version bump "
            f"(sha256 {', '.join(h[:12] for h in hashes)})"
        )
    if html_dir is not None:
        click.echo(f"\nwritten: {written}")


def _store_problem(url: str, error: Exception) -> str:
    """Why a read failed: a schema that lacks migrations (the tables may not exist), else the
    database could not be reached."""
    from cds_service.store import StoreUnavailable, schema_lag

    try:
        lag = schema_lag(url)
    except StoreUnavailable:
        lag = None
    return lag or f"database unreachable: {error}"


@main.command()
@click.option("--older-than-days", type=click.IntRange(min=1), default=365, show_default=True)
def prune(older_than_days: int) -> None:
    """Delete issued cards and feedback older than the retention period, and expired JWT ids."""
    from cds_service.store import StoreUnavailable
    from cds_service.store.report import prune as prune_store

    settings = _settings_or_exit("database_url")
    now = datetime.now(UTC)
    try:
        removed = prune_store(settings.database_url, now - timedelta(days=older_than_days), now)
    except StoreUnavailable as exc:
        _fail(f"database unreachable: {exc}")
    click.echo(", ".join(f"{table}: {count} removed" for table, count in removed.items()))


def _fail(message: str) -> NoReturn:
    """Say why on stderr and exit 1."""
    click.echo(message, err=True)
    sys.exit(1)


def _settings_or_exit(*used: str, **overrides: Any) -> Settings:
    """The settings a command uses (Settings field names), read and checked; no others."""
    try:
        return load_settings(only=used, **overrides)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


@main.command("check-knowledge")
@click.option(
    "--fhir/--no-fhir", default=True, help="Also validate order templates as FHIR R4 resources."
)
def check_knowledge(fhir: bool) -> None:
    """Validate cards/ against its schemas and cross-references; exit 1 listing every problem."""
    settings = _settings_or_exit("knowledge_dir")
    try:
        knowledge = load_knowledge(settings.knowledge_dir)
    except KnowledgeError as exc:
        _fail(str(exc))
    problems = validate_orders(knowledge) if fhir else []
    if problems:
        _fail("\n".join(problems))
    click.echo(
        f"knowledge OK: {len(knowledge.services)} services, {len(knowledge.valuesets)} value sets, "
        f"{len(knowledge.cards)} card kinds, {len(knowledge.thresholds)} thresholds, "
        f"{len(knowledge.orders)} order templates"
    )


def validate_orders(knowledge: Knowledge) -> list[str]:
    """Each order template, filled with sample values, parsed as its FHIR R4 resource type."""
    from fhir.resources.R4B import (
        get_fhir_model_class,  # R4B: the R4-compatible models fhir.resources ships
    )
    from pydantic import ValidationError

    from cds_service.knowledge.loader import fill

    problems = []
    sample = {"patient_id": "example", "today": "2026-01-01"}
    for order_id, order in knowledge.orders.items():
        resource = fill(order["resource"], sample)
        try:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except ValidationError as exc:
            problems.append(f"orders.yaml: {order_id}: not a valid FHIR R4 resource: {exc}")
    return problems


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--scenarios",
    "scenario_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=lambda: PROJECT_ROOT / "fixtures" / "scenarios",
    show_default="fixtures/scenarios of the checkout",
    help="Scenario fixtures to render the cards from.",
)
def gallery(out_dir: Path, scenario_dir: Path) -> None:
    """Write OUT_DIR/index.html: every card kind as an EHR shows it, for the committee's sign-off.

    Each card comes from a scenario fixture (the rules run on its record at its `now`, the cards
    rendered as a hook response renders them), with the facts that raised it and its citations.
    Reads only CDS_KNOWLEDGE_DIR, CDS_CARD_MODES (each kind's mode as this deployment runs it)
    and the scenarios; one static file, nothing fetched when opened.
    """
    try:
        from cds_service.gallery import GalleryError, write_gallery
    except ModuleNotFoundError as exc:  # the gallery extra: not in the served image
        _fail(f"{exc.name} is not installed: pip install -e '.[gallery]'")

    settings = _settings_or_exit("knowledge_dir", "card_modes")
    try:
        knowledge = load_knowledge(settings.knowledge_dir)
        page = write_gallery(knowledge, scenario_dir, out_dir, dict(settings.card_modes))
    except (KnowledgeError, GalleryError, ValueError) as exc:
        _fail(f"cannot write the gallery: {exc}")
    click.echo(f"card gallery: {page} ({len(knowledge.cards)} card kinds)")


# What a hook call reads. Not the HTTP shell's settings (JWT, CORS, body size): evaluate serves no
# request, so it authenticates no one.
EVALUATE_SETTINGS = (
    "database_url",
    "knowledge_dir",
    "fhir_server_allowlist",
    "fhir_timeout_seconds",
    "fhir_deadline_seconds",
    "fhir_max_pages",
    "fhir_max_concurrency",
    "patient_hash_key",
    "log_level",
    "validate_responses",
    "store_retry_seconds",
    "card_modes",
)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the CDS Hooks response the service would send now (snoozed and silent cards left out).",
)
@click.option("--service", default=None, help="Service id (default: the one for the file's hook).")
@click.option("--patient", default=None, help="Patient id, when a Bundle holds several patients.")
@click.option(
    "--now",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Evaluate as at this UTC time (the scenario tests use 2026-11-24T12:00:00).",
)
def evaluate(
    file: Path, as_json: bool, service: str | None, patient: str | None, now: datetime | None
) -> None:
    """Show the cards the rules give for FILE, for reviewing the content.

    FILE is a hook request, a scenario file (fixtures/scenarios: the request under "request") or
    a patient Bundle (evaluated as patient-view with the Bundle as every prefetch). Every card the
    rules find is shown; one that a clinician's recent override would snooze is marked, not hidden.
    Nothing is recorded in the database.
    """
    from cds_service.app import create_app
    from cds_service.errors import CdsError
    from cds_service.hooks import call_service

    os.environ.setdefault("CDS_ENV", "development")
    # The output is the review; start-up lines (migrations, "JWT verification is OFF", which is by
    # design here) would bury it. CDS_LOG_LEVEL=INFO shows them again.
    os.environ.setdefault("CDS_LOG_LEVEL", "ERROR")
    settings = _settings_or_exit(*EVALUATE_SETTINGS, auth="off")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.UsageError(f"{file} is not a JSON file: {exc}") from None
    if not isinstance(document, dict):
        raise click.UsageError(f"{file} holds no JSON object")
    clock = None
    if now is not None:
        at = now.replace(tzinfo=UTC)
        clock = Clock(now_fn=lambda: at)
    app = _app_or_exit(lambda: create_app(settings, clock=clock))
    rt = app.extensions["cds_runtime"]
    title, service_id, request = _hook_request(rt, document, service, patient)
    try:
        result = call_service(rt, service_id, request, review=True)
    except CdsError as exc:
        click.echo(json.dumps(exc.body(), indent=2), err=True)
        sys.exit(2)
    finally:
        rt.close()
    snoozed = set(result.snoozed_kinds)
    silent = set(result.silent_kinds)
    unchecked = not rt.store_available()
    if as_json:
        shown = [c for c in result.body["cards"] if _kind(c) not in snoozed | silent]
        click.echo(json.dumps({**result.body, "cards": shown}, indent=2))
        if snoozed:
            click.echo(f"left out (snoozed): {', '.join(sorted(snoozed))}", err=True)
        if silent:
            click.echo(f"left out (silent): {', '.join(sorted(silent))}", err=True)
        if unchecked:
            click.echo(SNOOZES_UNCHECKED, err=True)
        return
    context = request.get("context") or {}
    if title:
        click.echo(f"Scenario: {title}")
    click.echo(f"Service: {service_id} ({result.hook}), patient {context.get('patientId')}\n")
    cards = result.body["cards"]
    if not cards:
        click.echo(
            "No cards: no rule applies (the patient is out of scope, or nothing needs saying)."
        )
    for card in cards:
        click.echo(f"[{card['indicator'].upper()}] {card['summary']}")
        click.echo(f"  kind: {_kind(card)}")
        if _kind(card) in snoozed:
            click.echo(
                "  SNOOZED: a clinician overrode this card for this patient within its snooze "
                "period; the service would not show it now"
            )
        if _kind(card) in silent:
            click.echo("  SILENT: recorded as issued, not shown (cards.yaml or CDS_CARD_MODES)")
        for suggestion in card.get("suggestions", []):
            star = " (recommended)" if suggestion.get("isRecommended") else ""
            click.echo(f"  suggestion: {suggestion['label']}{star}")
        click.echo("")
    if unchecked:
        click.echo(SNOOZES_UNCHECKED)


SNOOZES_UNCHECKED = "Snoozes not checked: the database could not be read."


def _kind(card: dict[str, Any]) -> str:
    return str(card["source"]["topic"]["code"])


def _hook_request(
    rt: Any, document: dict[str, Any], service: str | None, patient: str | None
) -> tuple[str | None, str, dict[str, Any]]:
    """(scenario title, service id, hook request) for a request, scenario or Bundle document."""
    from cds_service.hooks import request_from_bundle

    title = None
    if isinstance(document.get("request"), dict):  # a scenario file wraps the request
        title = document.get("title")
        service = service or document.get("service")
        document = document["request"]
    if document.get("resourceType") == "Bundle":
        spec = next(
            (
                s
                for s in rt.knowledge.services
                if service in (None, s.id) and s.hook == "patient-view"
            ),
            None,
        )
        if spec is None:
            raise click.UsageError(
                f"a Bundle is evaluated as patient-view; {service} does not answer it"
            )
        patient_id = patient or _first_patient(document)
        return title, spec.id, request_from_bundle(spec, document, patient_id, str(uuid.uuid4()))
    if service:
        return title, service, document
    hook = document.get("hook")
    found = next((s.id for s in rt.knowledge.services if s.hook == hook), None)
    if found is None:
        raise click.UsageError(
            f"no service answers the hook {hook!r}: give a hook request, a scenario file or a "
            "patient Bundle (or --service)"
        )
    return title, found, document


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
        _fail(f"cannot start: {exc}")


if __name__ == "__main__":
    main()
