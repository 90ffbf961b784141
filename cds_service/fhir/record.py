"""A patient's record for one hook call: the resources from every prefetch key, grouped by type."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_service.fhir.data import Resource, items, iter_bundle, last_possible_date, reference_id

log = logging.getLogger(__name__)

# A relative reference to a Medication by a FHIR id (R4 id: 1-64 of [A-Za-z0-9-.]): the only kind
# looked up on fhirServer, where it resolves (an absolute one may name another server's resource).
_MEDICATION_REF = re.compile(r"Medication/([A-Za-z0-9.-]{1,64})")

# The resource types the rules read besides the Patient and Medications, and the record's list each
# goes to; anything else in a prefetch Bundle is ignored.
_LIST_OF = {
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medication_requests",
    "MedicationStatement": "medication_requests",
    "DiagnosticReport": "diagnostic_reports",
    "Procedure": "procedures",
}


@dataclass
class PatientRecord:
    """What the rules may look at, as plain data: the rules never see HTTP or prefetch keys."""

    patient_id: str
    patient: Resource | None = None
    conditions: list[Resource] = field(default_factory=list)
    observations: list[Resource] = field(default_factory=list)
    medication_requests: list[Resource] = field(default_factory=list)
    diagnostic_reports: list[Resource] = field(default_factory=list)
    procedures: list[Resource] = field(default_factory=list)
    medications: dict[str, Resource] = field(default_factory=dict)

    @property
    def birth_date(self) -> date | None:
        """The patient's birth date, if known; of a partial one ("1961", "1961-11") the last day it
        may be, so that an age read from it is one the patient has certainly reached (a patient
        born in 1961 may still be 64 on a day of 2026: an age threshold is not assumed met)."""
        return last_possible_date(self.patient.get("birthDate")) if self.patient else None

    def medication_of(self, request: Resource) -> Resource | None:
        """The Medication a MedicationRequest points to (contained or prefetched), if any."""
        ref = request.get("medicationReference")
        if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
            return None
        target = ref["reference"]
        if target.startswith("#"):
            for contained in items(request.get("contained")):
                if isinstance(contained, dict) and contained.get("id") == target[1:]:
                    return contained
            return None
        med_id = reference_id(ref, "Medication")
        return self.medications.get(target) or (
            self.medications.get(f"Medication/{med_id}") if med_id else None
        )

    def unresolved_medication_ids(self, requests: Iterable[Resource] = ()) -> list[str]:
        """Ids of the Medications that this record's medicine orders and statements, and `requests`,
        name by a relative reference this record cannot resolve; those with no display first (nothing
        else names them)."""
        named: dict[str, bool] = {}
        for request in (*self.medication_requests, *requests):
            ref = request.get("medicationReference")
            target = ref.get("reference") if isinstance(ref, dict) else None
            found = _MEDICATION_REF.fullmatch(target) if isinstance(target, str) else None
            if found is None or self.medication_of(request) is not None:
                continue
            has_display = isinstance(ref, dict) and bool(ref.get("display"))
            named[found.group(1)] = named.get(found.group(1), True) and has_display
        return sorted(named, key=named.__getitem__)  # stable: False (no display) first

    def add_medications(self, found: Resource | None, wanted: Collection[str]) -> None:
        """The Medications of a search result whose ids are `wanted` (and not already held)."""
        for _, resource in iter_bundle(found) if found else ():
            rid = resource.get("id")
            key = f"Medication/{rid}"
            if resource.get("resourceType") == "Medication" and rid in wanted:
                self.medications.setdefault(key, resource)

    @classmethod
    def from_resources(cls, patient_id: str, sources: Iterable[Resource | None]) -> PatientRecord:
        """A record from prefetch values (resources or Bundles); other patients' data is dropped."""
        record = cls(patient_id=patient_id)
        seen: set[tuple[str, str]] = set()
        lists = {kind: getattr(record, name) for kind, name in _LIST_OF.items()}
        for source in sources:
            if source is None:
                continue
            items: Iterable[tuple[str | None, Resource]]
            items = (
                iter_bundle(source) if source.get("resourceType") == "Bundle" else [(None, source)]
            )
            for full_url, resource in items:
                kind: Any = resource.get("resourceType")
                found = lists.get(kind)
                if found is None and kind not in ("Patient", "Medication"):
                    continue  # a type the rules do not read
                rid = resource.get("id")
                if isinstance(rid, str):
                    if (kind, rid) in seen:
                        continue
                    seen.add((kind, rid))
                if found is None:
                    record._add_patient_or_medication(kind, rid, full_url, resource)
                    continue
                subject = resource.get("subject") or resource.get("patient")
                if record._may_be_this_patient(subject):
                    found.append(resource)
                else:
                    log.warning(
                        "dropped a resource about another patient", extra={"resource_type": kind}
                    )
        return record

    def _add_patient_or_medication(
        self, kind: str, rid: Any, full_url: str | None, resource: Resource
    ) -> None:
        if kind == "Patient":
            if rid in (None, self.patient_id) or self.patient is None:
                self.patient = resource
            return
        if isinstance(rid, str):
            self.medications[f"Medication/{rid}"] = resource
        if full_url:
            self.medications[full_url] = resource

    def _may_be_this_patient(self, subject: Any) -> bool:
        # Only a literal Patient/<id> reference can name another patient; urn:uuid references inside a
        # patient Bundle and conditional references are kept.
        other = reference_id(subject, "Patient")
        return other is None or other == self.patient_id


def record_from_prefetch(patient_id: str, data: Mapping[str, Any]) -> PatientRecord:
    """The record built from a service's resolved prefetch data."""
    return PatientRecord.from_resources(patient_id, data.values())
