"""Clinical governance (issue 22): the content version on every card, in discovery and in every
issued-card record; silent card kinds; the report by version and as a picture."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.clock import Clock
from cds_service.config import ConfigError, load_settings
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import KNOWLEDGE_EXTENSION
from cds_service.store import engine_for
from cds_service.store.report import report
from cds_service.store.schema import feedback, issued_cards
from tests.conftest import FIXTURES, NOW, SERVICE_ID, assert_valid_response, make_settings

LOW_CALCIUM = FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json"
REASON = {
    "reason": {
        "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
        "code": "cds-not-applicable",
        "display": "PC CDS does not apply to patient",
    }
}


def hook_request(calcium: str = "8.4") -> dict[str, Any]:
    request: dict[str, Any] = json.loads(LOW_CALCIUM.read_text(encoding="utf-8"))["request"]
    return json.loads(json.dumps(request).replace("8.4", calcium))


def kinds_of(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert_valid_response(body)
    return {card["source"]["topic"]["code"]: card for card in body["cards"]}


def build_app(tmp_path: Path, database_url: str, knowledge: Knowledge, modes: str) -> Flask:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        card_modes=load_settings({"CDS_CARD_MODES": modes}, only=["card_modes"]).card_modes,
    )
    # Random card ids: several apps record into one database.
    return create_app(settings, clock=Clock(now_fn=lambda: NOW), knowledge=knowledge)


@pytest.fixture
def silent_app(tmp_path: Path, database_url: str, knowledge: Knowledge) -> Iterator[Flask]:
    """The service with calcium-low silent for this deployment (cards.yaml says active)."""
    app = build_app(tmp_path, database_url, knowledge, "calcium-low=silent")
    yield app
    app.extensions["cds_runtime"].close()


def records(url: str) -> list[Any]:
    with engine_for(url).connect() as connection:
        return list(connection.execute(select(issued_cards).order_by(issued_cards.c.card_kind)))


def test_every_card_and_discovery_entry_names_the_content_version(
    client: FlaskClient, knowledge: Knowledge
) -> None:
    expected = {"version": knowledge.version, "contentHash": knowledge.content_hash}
    discovery = client.get("/cds-services").get_json()
    for service in discovery["services"]:
        assert service["extension"] == {KNOWLEDGE_EXTENSION: expected}
    cards = kinds_of(client.post(f"/cds-services/{SERVICE_ID}", json=hook_request()))
    assert cards
    for card in cards.values():
        assert card["extension"] == {KNOWLEDGE_EXTENSION: expected}
    ready = client.get("/readyz").get_json()["knowledge"]
    assert (ready["version"], ready["contentHash"], ready["silentKinds"]) == (
        knowledge.version,
        knowledge.content_hash,
        [],
    )


def test_a_silent_kind_is_recorded_with_its_version_and_not_returned(
    silent_app: Flask, database_url: str, knowledge: Knowledge, tmp_path: Path
) -> None:
    client = silent_app.test_client()
    assert client.get("/readyz").get_json()["knowledge"]["silentKinds"] == ["calcium-low"]
    cards = kinds_of(client.post(f"/cds-services/{SERVICE_ID}", json=hook_request()))
    assert "calcium-low" not in cards
    silent_app.extensions["cds_runtime"].recorder.flush()
    [row] = [r for r in records(database_url) if r.card_kind == "calcium-low"]
    assert row.silent is True
    assert (row.knowledge_version, row.content_hash) == (knowledge.version, knowledge.content_hash)
    for shown in (r for r in records(database_url) if r.card_kind != "calcium-low"):
        assert shown.silent is False and shown.knowledge_version == knowledge.version

    # Feedback on the silent card's id (no EHR was shown it): stored as sent, attributed to no
    # card, so it counts nothing and snoozes nothing.
    posted = client.post(
        f"/cds-services/{SERVICE_ID}/feedback",
        json={
            "feedback": [
                {
                    "card": row.card_uuid,
                    "outcome": "overridden",
                    "overrideReason": REASON,
                    "outcomeTimestamp": "2026-11-24T12:01:00Z",
                }
            ]
        },
    )
    assert posted.status_code == 200 and posted.get_json() == {"received": 1, "new": 1}
    with engine_for(database_url).connect() as connection:
        stored = connection.execute(select(feedback.c.card_kind)).all()
    assert stored == [(None,)]
    [low] = [r for r in report(database_url, None) if r.kind == "calcium-low"]
    assert (low.shown, low.silent, low.accepted, low.overridden) == (0, 1, 0, 0)

    # Switched to active: the kind is shown again (not snoozed by that feedback) and its silent
    # history is kept beside what it now shows.
    active = build_app(tmp_path, database_url, knowledge, "calcium-low=active")
    try:
        cards = kinds_of(
            active.test_client().post(f"/cds-services/{SERVICE_ID}", json=hook_request())
        )
        assert "calcium-low" in cards
        active.extensions["cds_runtime"].recorder.flush()
    finally:
        active.extensions["cds_runtime"].close()
    [low] = [r for r in report(database_url, None) if r.kind == "calcium-low"]
    assert (low.shown, low.silent) == (1, 1)


def test_a_silent_kind_snoozed_by_an_earlier_override_is_not_counted_as_would_have_shown(
    tmp_path: Path, database_url: str, knowledge: Knowledge
) -> None:
    active = build_app(tmp_path, database_url, knowledge, "")
    try:
        client = active.test_client()
        card = kinds_of(client.post(f"/cds-services/{SERVICE_ID}", json=hook_request()))[
            "calcium-low"
        ]
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "overrideReason": REASON,
            "outcomeTimestamp": "2026-11-24T12:01:00Z",
        }
        posted = client.post(f"/cds-services/{SERVICE_ID}/feedback", json={"feedback": [item]})
        assert posted.status_code == 200
    finally:
        active.extensions["cds_runtime"].close()
    silent = build_app(tmp_path, database_url, knowledge, "calcium-low=silent")
    try:
        kinds_of(silent.test_client().post(f"/cds-services/{SERVICE_ID}", json=hook_request()))
        silent.extensions["cds_runtime"].recorder.flush()
    finally:
        silent.extensions["cds_runtime"].close()
    [low] = [r for r in report(database_url, None) if r.kind == "calcium-low"]
    assert (low.shown, low.silent, low.overridden) == (1, 0, 1)


def test_card_modes_are_checked_at_start_up(tmp_path: Path, knowledge: Knowledge) -> None:
    for value, message in [
        ("calcium-low=quiet", "calcium-low must be active or silent, not 'quiet'"),
        ("calcium-low", "'calcium-low' is not card-kind=mode"),
        ("calcium-low=silent,calcium-low=active", "names calcium-low more than once"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings({"CDS_CARD_MODES": value}, only=["card_modes"])
    with pytest.raises(ConfigError, match=re.escape("unknown card kind(s) calcium-lo;")):
        build_app(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite3'}", knowledge, "calcium-lo=silent")
    assert load_settings(
        {"CDS_CARD_MODES": " a=silent , b=active,"}, only=["card_modes"]
    ).card_modes == (
        ("a", "silent"),
        ("b", "active"),
    )


class Page(HTMLParser):
    """The report page read back: each cell's text by (kind section, table class, row, column)."""

    def __init__(self) -> None:
        super().__init__()
        self.kind = ""
        self.table = ""
        self.cells: dict[tuple[str, str, str], str] = {}  # (kind, table/week, cell class) -> text
        self.row = ""
        self.cell: str | None = None
        self.ids: set[str] = set()
        self.sources: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "section":
            self.kind = str(a.get("data-kind"))
        elif tag == "table":
            self.table = str(a.get("class") or a.get("id"))
        elif tag == "tr":
            self.row = str(a.get("data-week") or a.get("data-version") or "")
        elif tag == "td":
            self.cell = a.get("class")
        elif tag == "svg":
            self.svgs += 1
        for name in ("src", "href"):
            if a.get(name):
                self.sources.append(str(a[name]))

    def handle_data(self, data: str) -> None:
        if self.cell:
            self.cells[(self.kind, self.row or self.table, self.cell)] = data.strip()
            self.cell = None


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_by_version_and_as_html_through_the_cli(
    tmp_path: Path, database_url: str, knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scenario 08 gives a calcium-workup card (silent here) and a differential-workup card.
    scenario = json.loads((FIXTURES / "scenarios" / "08-snomed-stroke-and-cramp.json").read_text())
    app = build_app(tmp_path, database_url, knowledge, "calcium-workup=silent")
    try:
        client = app.test_client()
        url = f"/cds-services/{SERVICE_ID}"
        first = kinds_of(client.post(url, json=scenario["request"]))
        assert list(first) == ["differential-workup"]
        item = {
            "card": first["differential-workup"]["uuid"],
            "outcome": "overridden",
            "overrideReason": REASON,
            "outcomeTimestamp": "2026-11-24T12:01:00Z",
        }
        assert client.post(f"{url}/feedback", json={"feedback": [item]}).status_code == 200
        assert kinds_of(client.post(url, json=scenario["request"])) == {}  # snoozed, and silent
        app.extensions["cds_runtime"].recorder.flush()
    finally:
        app.extensions["cds_runtime"].close()
    kind = "differential-workup"
    # An older card, recorded before cards carried their version.
    with engine_for(database_url).begin() as connection:
        [old] = [r._asdict() for r in records(database_url) if r.card_kind == kind]
        old.update(card_uuid="00000000-0000-4000-8000-000000000099", knowledge_version=None)
        old.update(content_hash=None, issued_at=NOW.replace(month=10))
        connection.execute(issued_cards.insert(), old)

    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    plain = CliRunner().invoke(main, ["report"])
    assert plain.exit_code == 0, plain.output
    workup = next(x for x in plain.output.splitlines() if x.startswith("calcium-workup "))
    assert workup.split()[1:3] == ["0", "2"]  # shown, silent (would have shown)
    shown = next(x for x in plain.output.splitlines() if x.startswith(f"{kind} "))
    assert shown.split()[1:6] == ["2", "0", "0", "1", "0%"]

    by_version = CliRunner().invoke(main, ["report", "--by-version"])
    assert by_version.exit_code == 0, by_version.output
    rows = [x.split() for x in by_version.output.splitlines() if x.startswith(f"{kind} ")]
    prefix = knowledge.content_hash[:12]
    assert [r[1:5] for r in rows] == [
        ["(unversioned)", "-", "1", "0"],
        [knowledge.version, prefix, "1", "0"],
    ]
    assert "without a version bump" not in by_version.output

    out = tmp_path / "html"
    result = CliRunner().invoke(main, ["report", "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = read_page(out / "report.html")
    assert page.sources == []  # self-contained: no script, stylesheet, image or link to fetch
    assert page.svgs == len({r.kind for r in report(database_url, None)})
    for row in report(database_url, None):
        for column in ("shown", "silent", "accepted", "overridden"):
            assert page.cells[(row.kind, "totals", column)] == str(getattr(row, column))
    for row in report(database_url, None, by_week=True):
        assert row.week is not None
        for column in ("shown", "silent", "accepted", "overridden"):
            cell = page.cells[(row.kind, row.week.isoformat(), column)]
            assert cell == str(getattr(row, column))
    # The weeks between October's card and November's are plotted as zeros, not left out.
    assert page.cells[(kind, "2026-11-02", "shown")] == "0"
    assert page.cells[("", knowledge.version, "cards")] == "3"
    assert page.cells[("", "(unversioned)", "cards")] == "1"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "PC CDS does not apply to patient (1)" in html
    # Each plot marks the week each content version came in.
    assert html.count('<line class="version"') == 2 * page.svgs


def test_an_empty_store_gives_a_page_that_says_so(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds_service.store import migrate

    migrate(database_url)
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["report", "--html", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "(no cards recorded)" in result.output
    page = read_page(tmp_path / "out" / "report.html")
    assert {"empty", "no-versions"} <= page.ids and page.svgs == 0


def record_cards(url: str, *cards: tuple[str, str, str, str]) -> None:
    """Issued-card records as (kind, version, content hash, issued at ISO time), none silent."""
    from cds_service.store import migrate

    migrate(url)
    with engine_for(url).begin() as connection:
        for n, (kind, version, content, at) in enumerate(cards):
            connection.execute(
                issued_cards.insert(),
                {
                    "card_uuid": f"00000000-0000-4000-8000-{n:012}",
                    "service_id": SERVICE_ID,
                    "card_kind": kind,
                    "indicator": "info",
                    "patient_hash": "p" * 64,
                    "evidence_hash": f"{n:064}",
                    "issued_at": datetime.fromisoformat(at),
                    "knowledge_version": version,
                    "content_hash": content,
                    "silent": False,
                },
            )


def test_one_week_of_cards_is_drawn_and_version_labels_do_not_collide(
    tmp_path: Path, database_url: str
) -> None:
    from cds_service.report_html import SERIES, write_report

    record_cards(
        database_url,
        ("calcium-low", "1.0.0", "a" * 64, "2026-11-23T09:00:00+00:00"),
        ("calcium-low", "1.0.1", "b" * 64, "2026-11-25T09:00:00+00:00"),
    )
    html = write_report(database_url, None, tmp_path).read_text(encoding="utf-8")
    # One week: each series is one point, drawn as a dot (a one-point polyline draws nothing).
    markers = re.findall(r'<circle class="marker" cx="([\d.]+)" cy="([\d.]+)"', html)
    assert len(markers) == len(SERIES)
    labels = re.findall(r'<text class="version" x="([\d.]+)" y="([\d.]+)">([^<]+)</text>', html)
    assert sorted(v for _, _, v in labels) == ["1.0.0", "1.0.1"]
    assert len({(x, y) for x, y, _ in labels}) == 2  # same week: stacked, not on top of each other
    assert abs(float(labels[0][1]) - float(labels[1][1])) >= 10


def test_report_on_a_database_without_the_schema_says_to_migrate(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["report"])
    assert result.exit_code == 1
    assert "run `cds-service migrate`" in result.output
    assert "unreachable" not in result.output


def test_a_version_seen_with_two_content_hashes_is_flagged(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_cards(
        database_url,
        ("calcium-low", "1.0.0", "a" * 64, "2026-11-02T09:00:00+00:00"),
        ("calcium-low", "1.0.0", "b" * 64, "2026-11-23T09:00:00+00:00"),
        ("calcium-low", "1.0.1", "c" * 64, "2026-11-24T09:00:00+00:00"),
    )
    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["report", "--by-version", "--html", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [x.split() for x in result.output.splitlines() if x.startswith("calcium-low ")]
    assert [r[1:4] for r in rows] == [
        ["1.0.0", "a" * 12, "1"],
        ["1.0.0", "b" * 12, "1"],
        ["1.0.1", "c" * 12, "1"],
    ]
    flagged = [x for x in result.output.splitlines() if "without a version bump" in x]
    assert flagged == [
        f"version 1.0.0: content changed without a version bump (sha256 {'a' * 12}, {'b' * 12})"
    ]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.count('class="unbumped"') == 2  # both rows of 1.0.0 in the versions table
    assert "Version 1.0.0: content changed without a version bump" in html
    assert "Version 1.0.1:" not in html


def test_silencing_a_critical_kind_is_warned_at_start_up(
    tmp_path: Path, knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    warned = "critical card kind(s) silent: "
    # Through CDS_CARD_MODES, and through cards.yaml (`mode: silent`, here set on the loaded kind).
    in_yaml = dataclasses.replace(
        knowledge,
        cards={
            **knowledge.cards,
            "tizanidine-cyp1a2-interaction": dataclasses.replace(
                knowledge.cards["tizanidine-cyp1a2-interaction"], mode="silent"
            ),
        },
    )
    for modes, loaded, named in [
        ("calcium-low-severe=silent,calcium-low=silent", knowledge, "calcium-low-severe"),
        ("", in_yaml, "tizanidine-cyp1a2-interaction"),
    ]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cds_service.app"):
            build_app(tmp_path, url, loaded, modes).extensions["cds_runtime"].close()
        [warning] = [r.getMessage() for r in caplog.records if warned in r.getMessage()]
        assert warning.startswith(warned + named + ":"), warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cds_service.app"):
        build_app(tmp_path, url, knowledge, "calcium-low=silent").extensions["cds_runtime"].close()
    assert not [r for r in caplog.records if warned in r.getMessage()]


def test_the_report_fits_a_phone_in_a_real_browser(tmp_path: Path, database_url: str) -> None:
    from playwright.sync_api import sync_playwright

    from cds_service.report_html import write_report
    from tests.test_gallery import chromium

    record_cards(
        database_url,
        ("calcium-low", "1.0.0", "a" * 64, "2026-11-02T09:00:00+00:00"),
        ("calcium-low", "1.0.1", "b" * 64, "2026-11-24T09:00:00+00:00"),
    )
    path = write_report(database_url, None, tmp_path)
    executable = chromium()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800})
            page.goto(path.as_uri())
            whole = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert whole[0] <= whole[1], whole  # no sideways scrolling
            wide = (
                "[...document.querySelectorAll('table')].filter(t => t.scrollWidth > t.clientWidth)"
            )
            assert page.evaluate(f"{wide}.length") == 0  # every table fits too
            for svg in page.locator("svg").all():
                box = svg.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
                assert box["height"] > 50  # scaled down with its width, not squashed away
        finally:
            browser.close()
