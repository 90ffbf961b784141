"""Spasticity documented by code or written in a diagnosis's text (negation-aware)."""

from __future__ import annotations

import pytest

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.rules import spasticity
from cds_service.rules.evaluation import Evaluation
from tests.conftest import NOW


def evaluation(knowledge: Knowledge, text: str) -> Evaluation:
    local = {"coding": [{"system": "urn:oid:1.2.3", "code": "L-9"}], "text": text}
    condition = {"resourceType": "Condition", "id": "s", "code": local}
    record = PatientRecord("p", {"resourceType": "Patient", "id": "p"}, conditions=[condition])
    return Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("Spastic right leg after stroke", True),
        ("Post-stroke spasticity", True),
        ("Spasticity of left lower limb", True),
        ("Right leg spastic since the infarct", True),
        ("Spastic hemiparesis, right", True),
        ("No spasticity of the right leg", False),
        ("Possible spasticity right leg", False),
        ("Spastic colon", False),
        ("Bladder spasticity", False),
        ("Spasticity of the bladder", False),
        ("Spastic dysphonia", False),
        ("Right hemiparesis", False),  # weakness, not spasticity (its code gets "assess for")
    ],
)
def test_spasticity_written_with_a_local_code(
    knowledge: Knowledge, text: str, written: bool
) -> None:
    ev = evaluation(knowledge, text)
    findings, points = spasticity.evaluate(ev)
    assert points is written
    assert [(f.kind, f.variant) for f in findings] == (
        [("spasticity-review", None)] if written else []
    )
    if written:
        assert findings[0].facts["diagnosis"] == text
