"""Real-world shapes: the Synthea R4 patient bundles evaluate without errors, in scope or not."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service.hooks import call_service, request_from_bundle
from tests.conftest import ROOT, SERVICE_ID, assert_valid_response

SYNTHEA = sorted((ROOT / "fixtures" / "synthea").glob("*.json"))
STROKE = "230690007"


@cache
def bundle(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def patient_of(document: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient"
    )


def has_stroke(document: dict[str, Any]) -> bool:
    return any(
        c.get("code") == STROKE
        for e in document["entry"]
        if e["resource"]["resourceType"] == "Condition"
        for c in e["resource"].get("code", {}).get("coding", [])
    )


def with_cramps(document: dict[str, Any]) -> dict[str, Any]:
    """The bundle plus an active leg-cramp Condition (added here, never in the fixture files)."""
    patient = patient_of(document)
    augmented = copy.deepcopy(document)
    augmented["entry"].append(
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-00000000c2a5",
            "resource": {
                "resourceType": "Condition",
                "id": "test-added-leg-cramps",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R25.2"}]
                },
                "subject": {"reference": f"urn:uuid:{patient['id']}"},
                "onsetDateTime": "2026-10-01",
            },
        }
    )
    return augmented


def evaluate(app: Flask, document: dict[str, Any]) -> dict[str, Any]:
    rt = app.extensions["cds_runtime"]
    spec = next(s for s in rt.knowledge.services if s.id == SERVICE_ID)
    request = request_from_bundle(
        spec, document, patient_of(document)["id"], "7f8c4a2e-9d1b-4c3a-8e5f-0a1b2c3d4e5f"
    )
    body = call_service(rt, SERVICE_ID, request).body
    assert_valid_response(body)
    return body


def test_the_synthea_files_are_there() -> None:
    assert len(SYNTHEA) >= 9
    assert sum(has_stroke(bundle(p)) for p in SYNTHEA) >= 3
    living = [p for p in SYNTHEA if "deceasedDateTime" not in patient_of(bundle(p))]
    assert (
        sum(has_stroke(bundle(p)) for p in living) >= 1
    )  # the stroke checks below are not vacuous


@pytest.mark.parametrize("path", SYNTHEA, ids=lambda p: p.stem.split("_")[0])
def test_synthea_patient_as_is_gets_no_cards(app: Flask, path: Path) -> None:
    # No Synthea patient has documented leg cramps, so none is in scope.
    assert evaluate(app, bundle(path))["cards"] == []


@pytest.mark.parametrize("path", SYNTHEA, ids=lambda p: p.stem.split("_")[0])
def test_synthea_patient_with_cramps(app: Flask, path: Path) -> None:
    document = bundle(path)
    cards = evaluate(app, with_cramps(document))["cards"]
    kinds = {c["source"]["topic"]["code"] for c in cards}
    if not has_stroke(document) or "deceasedDateTime" in patient_of(document):
        assert cards == []  # out of scope, or deceased (issue 18: no cards for a deceased patient)
        return
    # Every stroke patient is in scope and gets a calcium card: the last Synthea calcium is years old,
    # so the workup card applies; nothing else points to a cause in these records.
    assert "calcium-workup" in kinds
    assert "differential-workup" in kinds
