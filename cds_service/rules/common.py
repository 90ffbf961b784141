"""Evidence lines and names shared by the rules' card text."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cds_service.fhir.data import Resource, label, recorded_time
from cds_service.rules.evaluation import Evaluation, Medicine, reference


def day(when: datetime | None) -> str:
    """A date for card text."""
    return when.date().isoformat() if when else "undated"


def condition_line(condition: Resource) -> str:
    """An evidence line for a Condition."""
    when = recorded_time(condition)
    return f"- {label(condition.get('code')) or 'Condition'} ({day(when)}; {reference(condition)})"


def medicine_line(medicine: Medicine) -> str:
    """An evidence line for a medicine: name, status, order date and its MedicationRequest."""
    authored = medicine.request.get("authoredOn")
    when = f", ordered {authored[:10]}" if isinstance(authored, str) else ""
    return f"- {medicine.name} ({medicine.request.get('status')}{when}; {medicine.ref})"


def names(medicines: Iterable[Medicine]) -> str:
    """Card text naming medicines: each display name once, sorted."""
    return ", ".join(sorted({m.name for m in medicines}))


def infarctions(ev: Evaluation) -> list[Resource]:
    """The cerebral infarctions on file (current or past, not refuted or entered in error).

    A code that does not state the stroke type (stroke-type-unspecified) counts unless a
    hemorrhagic stroke is coded for the same event: the same encounter, or onset (else recorded)
    dates within stroke-same-event-days. A code that states infarction always counts.
    """
    unspecified = ev.knowledge.valueset("stroke-type-unspecified").codes
    stated = ev.knowledge.valueset("cerebral-infarction").codes - unspecified
    hemorrhages = ev.conditions("hemorrhagic-stroke", active_only=False)
    window = ev.threshold("stroke-same-event-days")
    found = []
    for condition in ev.conditions("cerebral-infarction", active_only=False):
        keys = ev.knowledge.code_keys(condition.get("code"))
        generic = keys.isdisjoint(stated)
        if not (generic and any(_same_event(condition, h, window) for h in hemorrhages)):
            found.append(condition)
    return found


def _same_event(one: Resource, other: Resource, window_days: float) -> bool:
    encounter = (one.get("encounter") or {}).get("reference")
    if isinstance(encounter, str) and encounter == (other.get("encounter") or {}).get("reference"):
        return True
    first, second = recorded_time(one), recorded_time(other)
    if first is None or second is None:
        return False
    return abs((first.date() - second.date()).days) <= window_days
