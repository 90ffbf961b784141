"""Rules and card kinds agree: declared facts are supplied, named rule sets exist."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

from cds_service.fhir.record import record_from_prefetch
from cds_service.knowledge import Knowledge
from cds_service.rules import RULES, Evaluation
from tests.conftest import FIXTURES, NOW, SERVICE_ID

# Facts that quote the record (a report's own sentence), not text of ours.
QUOTED = {("eeg-epileptiform-untreated", "eeg_finding")}


def scenario_now(scenario: dict[str, Any]) -> datetime:
    """The time a scenario is evaluated at (its `now`, else the shared test clock)."""
    return datetime.fromisoformat(scenario["now"]) if "now" in scenario else NOW


def test_each_finding_supplies_its_declared_facts(knowledge: Knowledge) -> None:
    seen = set()
    for path in sorted((FIXTURES / "scenarios").glob("*.json")):
        scenario = json.loads(path.read_text(encoding="utf-8"))
        request = scenario["request"]
        if scenario["expect"].get("status", 200) != 200 or "prefetch" not in request:
            continue
        service = next(
            s
            for s in knowledge.services
            if s.id == scenario.get("service", SERVICE_ID) and s.hook == request["hook"]
        )
        context = request["context"]
        record = record_from_prefetch(context["patientId"], request["prefetch"])
        for finding in RULES[service.rules](
            Evaluation(request["hook"], context, record, knowledge, scenario_now(scenario))
        ):
            missing = set(knowledge.cards[finding.kind].facts) - set(finding.facts)
            assert not missing, (path.stem, finding.kind, missing)
            for name, value in finding.facts.items():
                if (finding.kind, name) in QUOTED or not isinstance(value, str):
                    continue
                # A sentence a card shows lives in cards/ (a phrase), not in a rule's facts.
                assert not value.rstrip().endswith("."), (path.stem, finding.kind, name, value)
            seen.add(finding.kind)
    assert seen == set(knowledge.cards)  # every card kind was raised by some scenario


def test_the_rule_sets_services_may_name_are_those_registered(knowledge: Knowledge) -> None:
    schema = json.loads(
        resources.files("cds_service.knowledge")
        .joinpath("schemas/services.schema.json")
        .read_text()
    )
    named = schema["properties"]["services"]["items"]["properties"]["rules"]["enum"]
    assert set(named) == set(RULES)
    assert {s.rules for s in knowledge.services} <= set(RULES)
