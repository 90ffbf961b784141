"""Evidence lines and names shared by the rules' card text."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cds_service.fhir.data import Resource, label, recorded_time
from cds_service.rules.evaluation import Medicine, reference


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
