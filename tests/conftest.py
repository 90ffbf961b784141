"""Shared fixtures: the app with a fixed clock, its test client, and response-schema checking."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.config import Settings, load_settings
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.protocol.schemas import validate

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# Every test runs "today" at this instant, so look-back windows and ages are reproducible.
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SERVICE_ID = "leg-cramps-after-stroke"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Development settings with the database in tmp_path; keyword overrides win."""
    return load_settings(
        {"CDS_ENV": "development", "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'test.sqlite3'}"},
        **overrides,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    """The knowledge base in cards/, loaded once for the session."""
    return load_knowledge(ROOT / "cards")


@pytest.fixture
def app(settings: Settings, knowledge: Knowledge) -> Iterator[Flask]:
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    app.config["TESTING"] = True
    yield app
    app.extensions["cds_runtime"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_valid_response(body: Any) -> None:
    """The body is a valid CDS Hooks response (our schema: no nulls, no empties, card rules)."""
    problems = validate(body, "response")
    assert problems == [], problems
