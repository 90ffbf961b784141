"""Clinical governance (issue 22): the content version on every card, in discovery and in every
issued-card record; silent card kinds; the report by version and as a picture."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import KNOWLEDGE_EXTENSION
from tests.conftest import FIXTURES, SERVICE_ID, assert_valid_response

LOW_CALCIUM = FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json"


def hook_request() -> dict[str, Any]:
    request: dict[str, Any] = json.loads(LOW_CALCIUM.read_text(encoding="utf-8"))["request"]
    return request


def test_every_card_and_discovery_entry_names_the_content_version(
    client: FlaskClient, knowledge: Knowledge
) -> None:
    expected = {"version": "1.0.0", "contentHash": knowledge.content_hash}
    discovery = client.get("/cds-services").get_json()
    for service in discovery["services"]:
        assert service["extension"] == {KNOWLEDGE_EXTENSION: expected}
    response = client.post(f"/cds-services/{SERVICE_ID}", json=hook_request()).get_json()
    assert_valid_response(response)
    assert response["cards"]
    for card in response["cards"]:
        assert card["extension"] == {KNOWLEDGE_EXTENSION: expected}
