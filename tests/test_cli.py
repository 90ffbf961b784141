"""The `cds-service` offline commands (serving: test_serve.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.clock import fixed_clock
from cds_service.knowledge import Knowledge
from cds_service.store import engine_for
from cds_service.store.schema import issued_cards
from tests.conftest import FIXTURES, NOW, ROOT, SERVICE_ID, make_settings, release

# ---------------------------------------------------------------------------------------------
# The offline commands: each reads only the settings it uses.

LOW_CALCIUM = FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json"
AT_NOW = ["--now", NOW.strftime("%Y-%m-%dT%H:%M:%S")]
MIGRATIONS = len(list((ROOT / "cds_service" / "store" / "migrations" / "versions").glob("0*.py")))


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A production environment with none of the serving settings (no hash key, no JWT settings)
    and a database of its own; returns the database URL."""
    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("CDS_ENV", "production")
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    yield url
    release(url)


@pytest.fixture
def reviewer(production: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Production settings for `evaluate`: it looks snoozes up by the keyed patient hash, so it
    needs the hash key, and nothing about JWTs (it serves no request)."""
    monkeypatch.setenv("CDS_PATIENT_HASH_KEY", "cli-test-patient-hash-key")
    return production


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_migrate_says_what_it_applied(production: str) -> None:
    first = invoke("migrate")
    assert first.exit_code == 0, first.output
    assert first.output.strip().startswith(f"applied {MIGRATIONS} migrations")
    second = invoke("migrate")
    assert second.exit_code == 0, second.output
    assert second.output.strip() == "database schema already up to date: nothing applied"


def test_report_needs_no_serving_settings(production: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A setting report does not use is not read, so not even a malformed one stops it.
    monkeypatch.setenv("CDS_FHIR_TIMEOUT_SECONDS", "soon")
    assert invoke("migrate").exit_code == 0
    result = invoke("report")
    assert result.exit_code == 0, result.output
    assert "CDS_PATIENT_HASH_KEY" not in result.output
    assert "(no cards recorded)" in result.output


def test_prune_needs_no_serving_settings(production: str) -> None:
    assert invoke("migrate").exit_code == 0
    result = invoke("prune", "--older-than-days", "30")
    assert result.exit_code == 0, result.output
    assert "issued_cards: 0 removed" in result.output


def test_report_on_an_unreachable_database_fails_clearly(
    production: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = invoke("report")
    assert result.exit_code == 1
    assert "database unreachable" in result.output
    assert "Traceback" not in result.output


def test_serve_names_every_missing_setting_at_once(production: str) -> None:
    result = invoke("serve")
    assert result.exit_code == 1
    for name in ("CDS_PATIENT_HASH_KEY", "CDS_PUBLIC_BASE_URL", "CDS_TRUSTED_ISSUERS"):
        assert name in result.output


def test_check_knowledge_reads_only_the_knowledge_dir(production: str) -> None:
    result = invoke("check-knowledge")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("knowledge OK: ")


@pytest.fixture
def cards(production: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of cards/ for a test to break, as CDS_KNOWLEDGE_DIR."""
    copy = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", copy)
    monkeypatch.setenv("CDS_KNOWLEDGE_DIR", str(copy))
    return copy


def test_check_knowledge_lists_problems(cards: Path) -> None:
    thresholds = cards / "thresholds.yaml"
    thresholds.write_text(thresholds.read_text(encoding="utf-8") + "\nnot: [valid", "utf-8")
    result = invoke("check-knowledge")
    assert result.exit_code == 1
    assert "thresholds.yaml" in result.output


def test_check_knowledge_lists_every_order_that_is_not_fhir(cards: Path) -> None:
    orders = cards / "orders.yaml"
    # Valid for the knowledge schema (a resource template is any object), not for FHIR R4.
    text = orders.read_text(encoding="utf-8").replace("authoredOn:", "authoredAt:")
    orders.write_text(text, "utf-8")
    result = invoke("check-knowledge")
    assert result.exit_code == 1
    named = [line for line in result.output.splitlines() if line.startswith("orders.yaml: ")]
    assert len(named) == text.count("authoredAt:") > 1
    assert all("not a valid FHIR R4 resource" in line for line in named), named
    assert "knowledge OK" not in result.output


def test_evaluate_a_scenario_file(reviewer: str) -> None:
    # Scenario files wrap the request (and name the expected cards); evaluate reads them as is.
    result = invoke("evaluate", str(LOW_CALCIUM), *AT_NOW)
    assert result.exit_code == 0, result.output
    scenario = json.loads(LOW_CALCIUM.read_text(encoding="utf-8"))
    assert f"Scenario: {scenario['title']}" in result.output
    assert "[WARNING] Low total calcium 8.4 mg/dL" in result.output
    assert "kind: calcium-low" in result.output
    assert "SNOOZED" not in result.output


def test_evaluate_prints_the_review_and_no_start_up_lines(tmp_path: Path) -> None:
    # A reviewer reads the output; the service's start-up log lines are not part of it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cds.db'}"
    ran = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "evaluate", str(LOW_CALCIUM), *AT_NOW],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "kind: calcium-low" in ran.stdout
    assert ran.stderr == ""
    assert '"level"' not in ran.stdout


def test_evaluate_needs_the_hash_key_it_uses(production: str) -> None:
    result = invoke("evaluate", str(LOW_CALCIUM), *AT_NOW)
    assert result.exit_code == 1
    assert "CDS_PATIENT_HASH_KEY" in result.output
    assert "CDS_PUBLIC_BASE_URL" not in result.output and "CDS_TRUSTED_ISSUERS" not in result.output


def test_evaluate_a_request_and_a_bundle(reviewer: str, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps(json.loads(LOW_CALCIUM.read_text("utf-8"))["request"]), "utf-8")
    from_request = invoke("evaluate", str(request), *AT_NOW)
    assert from_request.exit_code == 0, from_request.output
    assert "kind: calcium-low" in from_request.output
    from_bundle = invoke("evaluate", str(FIXTURES / "fhir" / "example-patient.json"), *AT_NOW)
    assert from_bundle.exit_code == 0, from_bundle.output
    assert "patient example-stroke-cramps" in from_bundle.output
    assert "kind: calcium-low" in from_bundle.output


def test_evaluate_an_out_of_scope_patient(reviewer: str) -> None:
    path = FIXTURES / "scenarios" / "01-out-of-scope-cramps-without-stroke.json"
    result = invoke("evaluate", str(path), *AT_NOW)
    assert result.exit_code == 0, result.output
    assert "No cards" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"hook": "encounter-start", "context": {}}', "no service answers the hook"),
        ("[1, 2]", "holds no JSON object"),
        ("{not json", "is not a JSON file"),
    ],
)
def test_evaluate_refuses_what_it_cannot_read(
    reviewer: str, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "input.json"
    path.write_text(content, "utf-8")
    result = invoke("evaluate", str(path))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_evaluate_shows_a_snoozed_card_and_records_nothing(
    tmp_path: Path, knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    try:
        client = app.test_client()
        request = json.loads(LOW_CALCIUM.read_text(encoding="utf-8"))["request"]
        cards = client.post(f"/cds-services/{SERVICE_ID}", json=request).get_json()["cards"]
        low = next(c for c in cards if c["source"]["topic"]["code"] == "calcium-low")
        overridden = {
            "card": low["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-24T12:05:00Z",
        }
        sent = client.post(f"/cds-services/{SERVICE_ID}/feedback", json={"feedback": [overridden]})
        assert sent.status_code == 200, sent.get_data(as_text=True)
        # The service itself now holds the card back for this patient...
        again = client.post(f"/cds-services/{SERVICE_ID}", json=request).get_json()["cards"]
        assert "calcium-low" not in {c["source"]["topic"]["code"] for c in again}
    finally:
        app.extensions["cds_runtime"].close()
    issued = count_issued(settings.database_url)

    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", settings.database_url)
    later = NOW.replace(hour=13).strftime("%Y-%m-%dT%H:%M:%S")
    # ...evaluate shows it, marked as snoozed, rather than hiding it...
    result = invoke("evaluate", str(LOW_CALCIUM), "--now", later)
    assert result.exit_code == 0, result.output
    block = result.output.split("kind: calcium-low", 1)[1].split("\n\n", 1)[0]
    assert "SNOOZED" in block
    assert "No cards" not in result.output
    # ...and --json prints what the service would send, naming what it left out.
    as_json = invoke("evaluate", str(LOW_CALCIUM), "--now", later, "--json")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert "calcium-low" not in {c["source"]["topic"]["code"] for c in body["cards"]}
    assert "left out (snoozed): calcium-low" in as_json.stderr
    # A review records no issued cards (they would take feedback and snoozes for cards never shown).
    assert count_issued(settings.database_url) == issued
    release(settings.database_url)


def count_issued(url: str) -> int:
    with engine_for(url).connect() as connection:
        return int(connection.execute(select(func.count()).select_from(issued_cards)).scalar_one())
