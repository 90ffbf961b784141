"""What every rule receives and returns; rules are pure functions of these, with no I/O and no Flask."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge


@dataclass(frozen=True)
class HookInput:
    """A hook call as the rules see it: the context, the patient's record, the knowledge, the time."""

    hook: str
    context: dict[str, Any]
    record: PatientRecord
    knowledge: Knowledge
    now: datetime

    def __post_init__(self) -> None:
        # The rules ask the record which value sets a medicine is in: it answers with this knowledge.
        if self.record.catalog is not self.knowledge.catalog:
            self.record.catalog = self.knowledge.catalog
            self.record.medicines.clear()
            self.record.answers.clear()


@dataclass(frozen=True)
class Finding:
    """One card to raise: its kind in cards/cards.yaml, the facts its text needs, and its evidence.

    facts fill `{name}` placeholders in the card's summary and detail; a fact that is True enables a
    suggestion whose `when` names it; a `Type/id` fact is the target of a delete action. evidence lines
    are Markdown bullets (value, unit, date, resource) appended to the detail.
    """

    kind: str
    facts: dict[str, Any] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    indicator: str | None = None
