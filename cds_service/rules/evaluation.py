"""What every rule receives and returns: one Evaluation per hook call in, Findings out (no I/O)."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.fhir.data import (
    Code,
    Resource,
    age_on,
    clinical_time,
    codings,
    label,
    status,
    status_of,
    texts,
)
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.knowledge.valuesets import Key

# FHIR statuses that make a result or diagnosis count (R4 ObservationStatus, condition-ver-status).
USABLE_RESULT = frozenset({"final", "amended", "corrected"})
NOT_A_DIAGNOSIS = {"refuted", "entered-in-error"}
ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
CURRENT_MEDICATION = {"active", "on-hold"}
_UNDATED = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Finding:
    """One card to raise: its kind in cards/cards.yaml, the facts its text needs, and its evidence.

    facts fill `{name}` placeholders in the card kind's text (each is declared in its `facts`); a
    fact that is True enables a suggestion whose `when` names it; a `Type/id` fact is the target of
    a delete action. evidence lines are plain-text bullets ("- " then value, unit, date, resource)
    appended to the detail; the renderer escapes them, like the facts, for Markdown. variant names
    one of the kind's `variants` (its text for that case), if any.
    """

    kind: str
    facts: dict[str, Any] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    indicator: str | None = None
    variant: str | None = None  # one of the card kind's `variants` (other wording), if not the main


@dataclass(frozen=True)
class Medicine:
    """A medicine the patient takes or is being ordered: its MedicationRequest (or
    MedicationStatement), display name, codings, code keys and names (its own, or its Medication's)."""

    request: Resource
    name: str
    codings: tuple[Code, ...]
    keys: frozenset[Key]
    texts: tuple[str, ...]

    @property
    def ref(self) -> str:
        """`Type/id` of its MedicationRequest."""
        return reference(self.request)

    @property
    def identified(self) -> bool:
        """Whether anything names the medicine: a code, a text or a display (its own or its
        Medication's). One named only by a reference to a Medication not received is not."""
        return bool(self.codings or self.texts)


def condition_counts(condition: Resource) -> bool:
    """A Condition counts unless refuted or entered in error."""
    return not (status_of(condition, "verificationStatus") & NOT_A_DIAGNOSIS)


def condition_is_active(condition: Resource) -> bool:
    """A counting Condition whose clinical status is active (or unstated, which FHIR reads as active)."""
    clinical = status_of(condition, "clinicalStatus")
    return condition_counts(condition) and (not clinical or bool(clinical & ACTIVE_CLINICAL))


def reference(resource: Resource) -> str:
    """`Type/id` of a resource (or just its type when it has no id)."""
    rid = resource.get("id")
    kind = resource.get("resourceType")
    return f"{kind}/{rid}" if isinstance(rid, str) else str(kind)


class Evaluation:
    """One hook call as the rules see it: the hook and its context, the patient's record, the
    knowledge, the time, and what the rules read from the record, worked out once for the call."""

    def __init__(
        self,
        hook: str,
        context: dict[str, Any],
        record: PatientRecord,
        knowledge: Knowledge,
        now: datetime,
    ) -> None:
        self.hook = hook
        self.context = context
        self.record = record
        self.knowledge = knowledge
        self.now = now
        born = record.birth_date
        self.age = None if born is None else age_on(born, now.date())
        # The code keys of each coded resource the rules look up, per list of the record.
        self._coded: dict[str, list[tuple[Resource, frozenset[Key]]]] = {}
        # A request not to give a medicine (doNotPerform) is no exposure to it.
        self.current_medicines = [
            self.medicine(r)
            for r in record.medication_requests
            if status(r) in CURRENT_MEDICATION and r.get("doNotPerform") is not True
        ]

    @property
    def deceased(self) -> bool:
        """Whether the Patient resource records a death (deceasedBoolean true or a deceasedDateTime)."""
        patient = self.record.patient or {}
        return patient.get("deceasedBoolean") is True or bool(patient.get("deceasedDateTime"))

    def threshold(self, threshold_id: str) -> float:
        """The value of a threshold of cards/thresholds.yaml."""
        return self.knowledge.threshold(threshold_id)

    def coded(self, concept: Any, vs_id: str) -> bool:
        """Whether a CodeableConcept (or a list of them) has a code in the value set."""
        return self.knowledge.valueset(vs_id).has(self.knowledge.code_keys(concept))

    def coded_in(self, list_name: str, vs_id: str) -> list[Resource]:
        """The resources of one of the record's lists (e.g. "conditions") whose `code` is in the
        value set, in list order."""
        if list_name not in self._coded:
            keys = self.knowledge.code_keys
            resources = getattr(self.record, list_name)
            self._coded[list_name] = [(r, keys(r.get("code"))) for r in resources]
        vs = self.knowledge.valueset(vs_id)
        return [r for r, keys in self._coded[list_name] if vs.has(keys)]

    def conditions(self, vs_id: str, active_only: bool) -> list[Resource]:
        """The patient's Conditions in the value set that count (and are active, if asked)."""
        check = condition_is_active if active_only else condition_counts
        return [c for c in self.coded_in("conditions", vs_id) if check(c)]

    def results(self, vs_id: str, statuses: Set[str] = USABLE_RESULT) -> list[Resource]:
        """Observations in the value set with one of `statuses`, newest first (undated last)."""
        return _newest_first(self.coded_in("observations", vs_id), statuses)

    def reports(self, vs_id: str, statuses: Set[str] = USABLE_RESULT) -> list[Resource]:
        """DiagnosticReports in the value set with one of `statuses`, newest first (undated last)."""
        return _newest_first(self.coded_in("diagnostic_reports", vs_id), statuses)

    def procedures_done(self, vs_id: str) -> list[Resource]:
        """Completed Procedures in the value set."""
        return [p for p in self.coded_in("procedures", vs_id) if status(p) == "completed"]

    def within(self, resource: Resource, days: float) -> bool:
        """Whether a result was taken within `days` before now (future-dated results do not count)."""
        when = clinical_time(resource)
        now = self.now
        return when is not None and now - timedelta(days=days) <= when <= now + timedelta(minutes=5)

    def medicine(self, request: Resource) -> Medicine:
        """A MedicationRequest (or MedicationStatement) read as a Medicine."""
        concepts: list[Any] = []
        if isinstance(request.get("medicationCodeableConcept"), dict):
            concepts.append(request["medicationCodeableConcept"])
        medication = self.record.medication_of(request)
        if medication and isinstance(medication.get("code"), dict):
            concepts.append(medication["code"])
        ref = request.get("medicationReference")
        if isinstance(ref, dict) and isinstance(ref.get("display"), str):
            concepts.append({"text": ref["display"]})
        name = next((n for n in map(label, concepts) if n), "unnamed medicine")
        keys = self.knowledge.code_keys(concepts)
        return Medicine(request, name, tuple(codings(concepts)), keys, tuple(texts(concepts)))

    def is_in(self, medicine: Medicine, vs_id: str) -> bool:
        """Whether a medicine is in the value set: by product or ingredient code, else by name."""
        return self.knowledge.valueset(vs_id).has(medicine.keys, medicine.texts)

    def medicines(self, vs_id: str, among: list[Medicine] | None = None) -> list[Medicine]:
        """The medicines in the value set, of the current ones unless `among` is given."""
        pool = self.current_medicines if among is None else among
        return [m for m in pool if self.is_in(m, vs_id)]


def _newest_first(resources: list[Resource], statuses: Set[str]) -> list[Resource]:
    found = [r for r in resources if status(r) in statuses]
    return sorted(found, key=lambda r: clinical_time(r) or _UNDATED, reverse=True)
