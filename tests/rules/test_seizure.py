"""Reading EEG conclusions: epileptiform findings, negation scoped to its clause, bounded text."""

from __future__ import annotations

import pytest

from cds_service.rules.seizure import MAX_CONCLUSION, eeg_abnormal, eeg_epileptiform


def report(conclusion: str, interpretation: str | None = None) -> dict[str, object]:
    resource: dict[str, object] = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "conclusion": conclusion,
    }
    if interpretation:
        resource["interpretation"] = [{"coding": [{"system": "x", "code": interpretation}]}]
    return resource


@pytest.mark.parametrize(
    ("conclusion", "epileptiform"),
    [
        ("Focal epileptiform discharges over the right central region.", True),
        (
            "No seizures captured, but frequent epileptiform discharges over the right central region",
            True,
        ),
        ("No epileptiform activity.", False),
        (
            "Abnormal EEG: focal slowing over the left temporal region, no epileptiform discharges.",
            False,
        ),
        ("Without epileptiform discharges; sharp waves seen over C4.", True),
        ("Negative for spike-and-wave complexes.", False),
        ("Normal awake and drowsy EEG.", False),
    ],
)
def test_epileptiform_findings_respect_negation(conclusion: str, epileptiform: bool) -> None:
    assert eeg_epileptiform(report(conclusion)) is epileptiform


def test_slowing_alone_is_not_a_pointer_but_a_coded_abnormal_interpretation_is() -> None:
    assert not eeg_abnormal(report("Abnormal EEG: focal slowing, no epileptiform discharges."))
    assert eeg_abnormal(report("See report.", interpretation="A"))


def test_only_the_start_of_a_huge_conclusion_is_read() -> None:
    # Hostile input: a 100 kB conclusion with the finding far past the reading limit.
    padding = "no sharp wave " * (MAX_CONCLUSION // 10)
    assert not eeg_epileptiform(report(padding + ". Epileptiform discharges."))
    assert eeg_epileptiform(report("Epileptiform discharges. " + padding))
