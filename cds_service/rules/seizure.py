"""Cause 3, focal seizures: seizure diagnoses, EEG reports, and antiepileptic treatment."""

from __future__ import annotations

from datetime import date

from cds_service.clinical_text import EegReading, read_eeg_report
from cds_service.fhir.data import Resource, clinical_time, label, recorded_time, status
from cds_service.rules.common import condition_line, day, infarctions, medicine_line, names
from cds_service.rules.evaluation import Evaluation, Finding, reference

# FHIR R4 DiagnosticReport/Observation status. Verified results are read in full (an appended
# report is a final one with an addendum). A preliminary, partial or unknown-status report means
# the study was done, so it puts an EEG on file, but its results may still change: they never
# suggest treatment, and one that does not read as normal asks for a review ("not-final"). A
# registered report has nothing available yet and a cancelled one was not done: no EEG is on file,
# so a seizure still gets the EEG recommendation. entered-in-error is not read at all.
EEG_FINAL = frozenset({"final", "amended", "corrected", "appended"})
EEG_NOT_FINAL = frozenset({"preliminary", "partial", "unknown"})
EEG_ON_FILE = EEG_FINAL | EEG_NOT_FINAL
# The sentence of a report a card quotes is cut (at a word) to this many characters.
QUOTE_LIMIT = 160


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """Seizure-related cards, and whether seizures or an epileptiform EEG point to this cause."""
    seizures = ev.conditions("seizure", active_only=False)
    eegs = ev.reports("eeg", EEG_ON_FILE) + ev.results("eeg", EEG_ON_FILE)
    eeg_procedures = ev.procedures_done("eeg")
    readings = [(e, read_eeg_report(e, ev.knowledge.eeg_reading)) for e in eegs]
    final = [(e, r) for e, r in readings if status(e) in EEG_FINAL]
    epileptiform = [(e, r) for e, r in final if r.kind == "epileptiform"]
    unclear = [(e, r) for e, r in final if r.kind == "unclear"]
    not_final = [
        e
        for e, r in readings
        if status(e) in EEG_NOT_FINAL and r.kind in {"epileptiform", "unclear"}
    ]
    aeds = ev.medicines("antiepileptics")
    findings: list[Finding] = []

    infarcted = infarction_day(ev)
    on_file = [*eegs, *eeg_procedures]
    if infarcted and new_seizure(seizures, infarcted):
        # An EEG from before the infarction cannot show a seizure focus the infarction made: for
        # a seizure after it, only an EEG done on or after its day (or undated) is on file.
        on_file = [e for e in on_file if not (t := clinical_time(e)) or t.date() >= infarcted]
    if seizures and not on_file:
        new = new_seizure(seizures, infarcted) and not aeds
        facts = {"diagnosis": _diagnoses(seizures), "new_seizure": new, "treated": bool(aeds)}
        findings.append(
            Finding(
                "eeg-recommended",
                facts,
                tuple(condition_line(c) for c in seizures) + tuple(map(medicine_line, aeds)),
                indicator="warning" if new else "info",
            )
        )
    if epileptiform and not aeds:
        latest, reading = epileptiform[0]
        findings.append(
            Finding(
                "eeg-epileptiform-untreated",
                {"date": day(clinical_time(latest)), "eeg_finding": quote(reading)},
                tuple(_eeg_line(e, r) for e, r in epileptiform),
            )
        )
    elif unclear and not epileptiform:
        latest, _ = unclear[0]
        findings.append(
            Finding(
                "eeg-report-review",
                {"date": day(clinical_time(latest))},
                tuple(f"- EEG {day(clinical_time(e))} ({reference(e)})" for e, _ in unclear),
            )
        )
    elif not_final and not epileptiform:
        latest = not_final[0]
        findings.append(
            Finding(
                "eeg-report-review",
                {"date": day(clinical_time(latest))},
                tuple(
                    f"- EEG {day(clinical_time(e))}, {status(e)} ({reference(e)})"
                    for e in not_final
                ),
                variant="not-final",
            )
        )
    inducers = ev.medicines("enzyme-inducing-antiepileptics")
    if inducers:
        findings.append(
            Finding(
                "enzyme-inducing-antiepileptic",
                {"medicines": names(inducers)},
                tuple(map(medicine_line, inducers)),
            )
        )
    return findings, bool(seizures or epileptiform)


def infarction_day(ev: Evaluation) -> date | None:
    """The day of the first cerebral infarction on file (onset, else recorded), if any is dated."""
    days = [when.date() for c in infarctions(ev) if (when := recorded_time(c))]
    return min(days, default=None)


def new_seizure(seizures: list[Resource], infarcted: date | None) -> bool:
    """Whether a seizure began on or after the day of the infarction (the same day counts).

    A seizure before the infarction is a remote history; an undated seizure, or an undated
    infarction, cannot be placed after it, so neither is called new.
    """
    if infarcted is None:
        return False
    return any((when := recorded_time(s)) and when.date() >= infarcted for s in seizures)


def quote(reading: EegReading) -> str:
    """The sentence (or coded interpretation) an epileptiform reading rests on, cut at a word."""
    text = reading.evidence[0] if reading.evidence else ""
    if len(text) <= QUOTE_LIMIT:
        return text
    return text[: QUOTE_LIMIT - 1].rsplit(" ", 1)[0] + "…"


def _eeg_line(report: Resource, reading: EegReading) -> str:
    return f"- EEG {day(clinical_time(report))}: {quote(reading)} ({reference(report)})"


def _diagnoses(conditions: list[Resource]) -> str:
    return ", ".join(sorted({label(c.get("code")) or "seizure" for c in conditions}))
