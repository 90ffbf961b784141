"""The benchmark's hook requests (a) and (d), built from scenario fixture 42 and padded history."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FIXTURE_A = Path(__file__).resolve().parent.parent / "fixtures/scenarios/42-baclofen-egfr-59.json"
PATIENT_SERVICE = "leg-cramps-after-stroke"
ORDER_SERVICE = "leg-cramps-order-sign"
PATIENT = "bench-a"
EHR = "https://ehr.example.org/fhir"
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"

# fmt: off
# Lab history: LOINC, display, unit (shown, UCUM), reference range, i-th value, quarters back from 2026-08, every
HISTORY = [
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", (8.5, 10.5),
     lambda i: round(9.1 + 0.1 * (i % 5), 1), 12, 1),
    ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, "
     "Plasma or Blood by Creatinine-based formula (CKD-EPI 2021)", "mL/min/1.73m2",
     "mL/min/{1.73_m2}", None, lambda i: 62 + 2 * i, 8, 1),
    ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", "g/dL", (3.5, 5.0),
     lambda i: round(3.9 + 0.05 * (i % 4), 2), 6, 1),
    ("19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", (1.7, 2.2),
     lambda i: round(1.9 + 0.1 * i, 1), 8, 2),
    ("62292-8", "25-Hydroxyvitamin D3+25-Hydroxyvitamin D2 [Mass/volume] in Serum or Plasma",
     "ng/mL", "ng/mL", (30, 100), lambda i: 28 + 3 * i, 12, 4),
]
COMORBIDITIES = [  # ICD-10-CM code, display, onset (the last one resolved)
    ("I10", "Essential (primary) hypertension", "2012-05-02"),
    ("E11.9", "Type 2 diabetes mellitus without complications", "2016-09-20"),
    ("E78.5", "Hyperlipidemia, unspecified", "2014-01-11"),
    ("I48.91", "Unspecified atrial fibrillation", "2026-02-14"),
    ("N18.31", "Chronic kidney disease, stage 3a", "2025-06-30"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis", "2019-03-08"),
    ("M17.11", "Unilateral primary osteoarthritis, right knee", "2020-10-15"),
    ("J06.9", "Acute upper respiratory infection, unspecified", "2025-01-04"),
]
MEDICINES = [  # RxNorm code, display, text, dosage
    ("83367", "atorvastatin", "Atorvastatin 40 MG Oral Tablet", "40 mg by mouth at night"),
    ("29046", "lisinopril", "Lisinopril 10 MG Oral Tablet", "10 mg by mouth daily"),
    ("1364430", "apixaban 5 MG Oral Tablet", "Apixaban 5 MG Oral Tablet",
     "5 mg by mouth twice daily"),
    ("6809", "metformin", "Metformin 500 MG Oral Tablet", "500 mg by mouth twice daily"),
    ("7646", "omeprazole", "Omeprazole 20 MG Oral Capsule", "20 mg by mouth daily"),
]
DRAFTS = [
    ("21949", "cyclobenzaprine", "Cyclobenzaprine hydrochloride 10 MG Oral Tablet",
     "10 mg by mouth at bedtime"),
    ("10689", "Tramadol", "Tramadol hydrochloride 50 MG Oral Tablet",
     "50 mg by mouth every 6 hours as needed for pain"),
    ("9071", "Quinine", "Quinine sulfate 324 MG Oral Capsule", "324 mg by mouth at bedtime"),
    ("25480", "gabapentin", "Gabapentin 300 MG Oral Capsule", "300 mg by mouth three times daily"),
    ("1897", "Calcium Carbonate", "Calcium carbonate 1250 MG (500 MG elemental) Oral Tablet",
     "1 tablet by mouth twice daily with meals"),
]
# fmt: on


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entry = []
    for r in resources:
        url = f"{EHR}/{r['resourceType']}/{r['id']}"
        entry.append({"fullUrl": url, "resource": r, "search": {"mode": "match"}})
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources), "entry": entry}


def resources_of(value: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not value:
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry", []) if "resource" in e]
    return [value]


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]}


def _quarters(count: int) -> list[str]:
    """`count` dates a quarter apart, from 2026-08-14 back (before the fixture's own results)."""
    months = [2026 * 12 + 7 - 3 * i for i in range(count)]
    return [f"{m // 12:04d}-{m % 12 + 1:02d}-14" for m in months]


def _lab(n: int, when: str, value: float, row: tuple[Any, ...]) -> dict[str, Any]:
    code, display, unit, ucum, normal = row[:5]
    quantity = {"unit": unit, "system": UCUM, "code": ucum}
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{PATIENT}-hist-{n}",
        "status": "final",
        "category": [concept(TERMINOLOGY + "observation-category", "laboratory", "Laboratory")],
        "code": concept(LOINC, code, display),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": f"{when}T08:30:00Z",
        "issued": f"{when}T11:02:00Z",
        "valueQuantity": {"value": value, **quantity},
    }
    if normal:
        low, high = ({"value": limit, **quantity} for limit in normal)
        obs["referenceRange"] = [{"low": low, "high": high}]
    return obs


def _condition(n: int, code: str, display: str, onset: str) -> dict[str, Any]:
    status = "resolved" if code == "J06.9" else "active"
    return {
        "resourceType": "Condition",
        "id": f"{PATIENT}-comorb-{n}",
        "clinicalStatus": concept(TERMINOLOGY + "condition-clinical", status),
        "verificationStatus": concept(TERMINOLOGY + "condition-ver-status", "confirmed"),
        "category": [concept(TERMINOLOGY + "condition-category", "problem-list-item")],
        "code": concept("http://hl7.org/fhir/sid/icd-10-cm", code, display),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "onsetDateTime": onset,
        "recordedDate": onset,
    }


def _medication(rid: str, row: tuple[str, ...], status: str, authored: str) -> dict[str, Any]:
    code, display, text, dose = row
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": concept(RXNORM, code, display) | {"text": text},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "authoredOn": authored,
        "requester": {"reference": "Practitioner/dr-1"},
        "dosageInstruction": [{"text": dose}],
    }


def prefetch_a() -> dict[str, Any]:
    """The (a) patient's full prefetch: the fixture's resources plus a realistic history."""
    fixture = json.loads(FIXTURE_A.read_text(encoding="utf-8"))["request"]["prefetch"]
    fixture = json.loads(json.dumps(fixture).replace("pt-42", PATIENT))
    history: list[dict[str, Any]] = []
    for row in HISTORY:
        value, count, every = row[5:]
        for i, when in enumerate(_quarters(count)[::every]):
            history.append(_lab(len(history) + 1, when, value(i), row))
    observations = resources_of(fixture["observations"]) + history
    observations.sort(key=lambda o: o["effectiveDateTime"], reverse=True)
    conditions = resources_of(fixture["conditions"])
    conditions += [_condition(n, *row) for n, row in enumerate(COMORBIDITIES, start=1)]
    medications = resources_of(fixture["medications"])
    for n, row in enumerate(MEDICINES, start=1):
        medications.append(_medication(f"{PATIENT}-med-{n}", row, "active", "2025-03-01"))
    dxa = {
        "resourceType": "DiagnosticReport",
        "id": f"{PATIENT}-dxa-1",
        "status": "final",
        "code": concept(LOINC, "38268-9", "DXA Skeletal system Views for bone density"),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": "2024-04-22",
        "issued": "2024-04-23T09:00:00Z",
        "conclusion": "Osteopenia of the left femoral neck (T-score -1.6). No osteoporosis.",
    }
    return {
        "patient": fixture["patient"],
        "conditions": searchset(conditions),
        "observations": searchset(observations),
        "medications": searchset(medications),
        "reports": searchset([dxa]),
        "procedures": searchset([]),
    }


def request_a() -> dict[str, Any]:
    context = {"userId": "Practitioner/dr-1", "patientId": PATIENT}
    hook = {"hook": "patient-view", "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0a01"}
    return {**hook, "context": context, "prefetch": prefetch_a()}


def _fill(query: str, record: list[dict[str, Any]]) -> dict[str, Any]:
    """A prefetch value for `query` (`Type/{{id}}` or `Type?...`) from the (a) record."""
    kind = re.split(r"[/?]", query, maxsplit=1)[0]
    matching = [r for r in record if r["resourceType"] == kind]
    if "?" not in query and matching:
        return matching[0]
    if kind == "MedicationRequest":
        matching = [r for r in matching if r.get("status") in ("active", "on-hold")]
    return searchset(matching)


def request_d(discovered: dict[str, Any]) -> dict[str, Any]:
    """An order-sign request for the (a) patient; prefetch keys as the service's discovery lists."""
    record = [r for value in prefetch_a().values() for r in resources_of(value)]
    prefetch = {key: _fill(q, record) for key, q in (discovered.get("prefetch") or {}).items()}
    drafts = [
        _medication(f"{PATIENT}-draft-{n}", row, "draft", "2026-11-24")
        for n, row in enumerate(DRAFTS, start=1)
    ]
    entry = [{"resource": order} for order in drafts]
    orders = {"resourceType": "Bundle", "type": "collection", "entry": entry}
    context = {"userId": "Practitioner/dr-1", "patientId": PATIENT, "draftOrders": orders}
    hook = {"hook": "order-sign", "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0d04"}
    return {**hook, "context": context, "prefetch": prefetch}
