"""The seizure rule: EEG reports read by cds_service.clinical_text, EEG advice by seizure timing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.rules import seizure
from cds_service.rules.evaluation import Evaluation
from tests.conftest import NOW


def condition(cid: str, code: str, onset: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]},
    }
    if onset:
        resource["onsetDateTime"] = onset
    return resource


def eeg(rid: str, conclusion: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "11523-8"}]},
        "effectiveDateTime": "2026-10-20T10:00:00Z",
        "conclusion": conclusion,
    }


def evaluation(knowledge: Knowledge, **lists: Any) -> Evaluation:
    record = PatientRecord("p", {"resourceType": "Patient", "id": "p"}, **lists)
    return Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)


@pytest.mark.parametrize(
    ("onset", "new"),
    [("2026-02-13", False), ("2026-02-14", True), ("2026-02-15", True), (None, False)],
)
def test_a_seizure_on_or_after_the_day_of_the_infarction_is_new(
    onset: str | None, new: bool
) -> None:
    seizures = [condition("s", "R56.9", onset)]
    assert seizure.new_seizure(seizures, date(2026, 2, 14)) is new
    assert seizure.new_seizure(seizures, None) is False  # an undated infarction


def test_the_first_dated_infarction_is_the_one_seizures_are_placed_after(
    knowledge: Knowledge,
) -> None:
    ev = evaluation(
        knowledge,
        conditions=[
            condition("i2", "I63.9", "2026-02-14"),
            condition("i1", "I63.9", "2019-05-01"),
            condition("i0", "Z86.73", None),
        ],
    )
    assert seizure.infarction_day(ev) == date(2019, 5, 1)


@pytest.mark.parametrize(
    ("conclusion", "kinds", "points"),
    [
        ("Epileptiform discharges were not seen.", [], False),
        ("Spikes: none.", [], False),
        ("Left temporal sharp waves.", ["eeg-epileptiform-untreated"], True),
        ("Sharp transients of uncertain significance.", ["eeg-report-review"], False),
    ],
)
def test_eeg_reports_are_read_with_the_lexicon_of_the_knowledge(
    knowledge: Knowledge, conclusion: str, kinds: list[str], points: bool
) -> None:
    ev = evaluation(knowledge, diagnostic_reports=[eeg("e", conclusion)])
    findings, pointed = seizure.evaluate(ev)
    assert [f.kind for f in findings] == kinds
    assert pointed is points
    for finding in findings:
        assert "pileptiform" not in str(finding.facts) or finding.kind.startswith("eeg-epi")


@pytest.mark.parametrize(
    ("status", "kind", "variant"),
    [
        ("final", "eeg-epileptiform-untreated", None),
        ("amended", "eeg-epileptiform-untreated", None),
        ("corrected", "eeg-epileptiform-untreated", None),
        ("appended", "eeg-epileptiform-untreated", None),
        # On file (the study was done), never read as epileptiform: results may change.
        ("preliminary", "eeg-report-review", "not-final"),
        ("partial", "eeg-report-review", "not-final"),
        ("unknown", "eeg-report-review", "not-final"),
        # Nothing available, not done, or not a report at all: no EEG on file.
        ("registered", "eeg-recommended", None),
        ("cancelled", "eeg-recommended", None),
        ("entered-in-error", "eeg-recommended", None),
    ],
)
def test_each_report_status_is_handled_deliberately(
    status: str, kind: str, variant: str | None, knowledge: Knowledge
) -> None:
    ev = evaluation(
        knowledge,
        conditions=[condition("s", "R56.9", "2026-10-01")],
        diagnostic_reports=[eeg("e", "Frequent left temporal spikes.", status=status)],
    )
    findings, _ = seizure.evaluate(ev)
    assert [(f.kind, f.variant) for f in findings] == [(kind, variant)]


def test_a_not_final_report_that_reads_normal_gives_no_card(knowledge: Knowledge) -> None:
    ev = evaluation(
        knowledge,
        conditions=[condition("s", "R56.9", "2026-10-01")],
        diagnostic_reports=[eeg("e", "Normal awake and drowsy EEG.", status="preliminary")],
    )
    findings, pointed = seizure.evaluate(ev)
    assert findings == [] and pointed  # on file (no EEG advice), nothing to review


def test_a_final_reading_outranks_a_not_final_review(knowledge: Knowledge) -> None:
    ev = evaluation(
        knowledge,
        conditions=[condition("s", "R56.9", "2026-10-01")],
        diagnostic_reports=[
            eeg("p", "Possible sharp waves.", status="preliminary"),
            eeg("f", "Frequent left temporal spikes."),
        ],
    )
    findings, _ = seizure.evaluate(ev)
    assert [f.kind for f in findings] == ["eeg-epileptiform-untreated"]


def test_a_long_sentence_is_quoted_up_to_a_word() -> None:
    from cds_service.clinical_text import EegReading

    reading = EegReading("epileptiform", "text", ("sharp waves " * 40,))
    quoted = seizure.quote(reading)
    assert len(quoted) <= seizure.QUOTE_LIMIT and quoted.endswith("waves…")


@pytest.mark.parametrize(
    ("eeg_day", "seizure_onset", "recommended"),
    [
        # A new seizure after the 2026-02-14 infarction: an EEG from before the infarction says
        # nothing of it (issue 18 attack, k08); one from the infarction's day on is on file.
        ("2015-03-03", "2026-10-01", True),
        ("2026-02-13", "2026-10-01", True),
        ("2026-02-14", "2026-10-01", False),
        ("2026-10-20", "2026-10-01", False),
        # A seizure before the infarction (remote history): any EEG on file counts.
        ("2015-03-03", "2010-01-01", False),
    ],
)
def test_for_a_new_seizure_only_an_eeg_from_the_infarction_on_is_on_file(
    knowledge: Knowledge, eeg_day: str, seizure_onset: str, recommended: bool
) -> None:
    report = {**eeg("e", "Normal EEG."), "effectiveDateTime": eeg_day}
    ev = evaluation(
        knowledge,
        conditions=[condition("i", "I63.9", "2026-02-14"), condition("s", "R56.9", seizure_onset)],
        diagnostic_reports=[report],
    )
    findings, _ = seizure.evaluate(ev)
    assert ("eeg-recommended" in [f.kind for f in findings]) is recommended
