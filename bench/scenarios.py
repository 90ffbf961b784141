"""The benchmark's hook requests, built from scenario fixture 42 (no data from outside the repository).

(a) patient-view with a full prefetch of 54 resources: fixture 42 (infarction, spastic hemiparesis,
    leg cramps, baclofen with eGFR 59) as patient `bench-a`, padded with the history an older stroke
    patient has (three years of calcium, eGFR, albumin, magnesium and vitamin D results, eight
    comorbidities, five current medicines, a DXA report).
(d) order-sign for the same patient with five draft MedicationRequests (cyclobenzaprine, tramadol,
    quinine, gabapentin, calcium carbonate); its prefetch is filled from the (a) record for whatever
    keys discovery lists for the order service.
"""

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

# Result history: LOINC, display, unit (as shown, UCUM), reference range, first value, step, how
# many quarters back from 2026-08 and every how many of them.
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


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [
        {"fullUrl": f"{EHR}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in resources
    ]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources), "entry": entries}


def resources_of(value: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not value:
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry", []) if "resource" in e]
    return [value]


def _quarters(count: int) -> list[str]:
    """`count` dates a quarter apart, from 2026-08-14 back (before the fixture's own results)."""
    months = [2026 * 12 + 7 - 3 * i for i in range(count)]
    return [f"{m // 12:04d}-{m % 12 + 1:02d}-14" for m in months]


def _lab(n: int, code: str, display: str, when: str, value: float, unit: str, ucum: str,
         normal: tuple[float, float] | None) -> dict[str, Any]:
    quantity = {"unit": unit, "system": UCUM, "code": ucum}
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": f"{PATIENT}-hist-{n}", "status": "final",
        "category": [{"coding": [{"system": TERMINOLOGY + "observation-category",
                                  "code": "laboratory", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": f"{when}T08:30:00Z", "issued": f"{when}T11:02:00Z",
        "valueQuantity": {"value": value, **quantity},
    }
    if normal:
        low, high = normal
        obs["referenceRange"] = [{"low": {"value": low, **quantity}, "high": {"value": high, **quantity}}]
    return obs


def _condition(n: int, code: str, display: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": f"{PATIENT}-comorb-{n}",
        "clinicalStatus": {"coding": [{"system": TERMINOLOGY + "condition-clinical",
                                       "code": "resolved" if code == "J06.9" else "active"}]},
        "verificationStatus": {"coding": [{"system": TERMINOLOGY + "condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": TERMINOLOGY + "condition-category",
                                  "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code,
                             "display": display}]},
        "subject": {"reference": f"Patient/{PATIENT}"}, "onsetDateTime": onset, "recordedDate": onset,
    }


def _medication(rid: str, code: str, display: str, text: str, dose: str,
                status: str = "active", authored: str = "2025-03-01") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                      "text": text},
        "subject": {"reference": f"Patient/{PATIENT}"}, "authoredOn": authored,
        "requester": {"reference": "Practitioner/dr-1"}, "dosageInstruction": [{"text": dose}],
    }


def prefetch_a() -> dict[str, Any]:
    """The (a) patient's full prefetch: the fixture's resources plus a realistic history."""
    fixture = json.loads(FIXTURE_A.read_text(encoding="utf-8"))["request"]["prefetch"]
    fixture = json.loads(json.dumps(fixture).replace("pt-42", PATIENT))
    history = []
    for code, display, unit, ucum, normal, value, count, every in HISTORY:
        for i, when in enumerate(_quarters(count)[::every]):
            history.append(_lab(len(history) + 1, code, display, when, value(i), unit, ucum, normal))
    observations = resources_of(fixture["observations"]) + history
    observations.sort(key=lambda o: o["effectiveDateTime"], reverse=True)
    conditions = resources_of(fixture["conditions"]) + [
        _condition(n, *row) for n, row in enumerate(COMORBIDITIES, start=1)
    ]
    medications = resources_of(fixture["medications"]) + [
        _medication(f"{PATIENT}-med-{n}", *row) for n, row in enumerate(MEDICINES, start=1)
    ]
    dxa = {
        "resourceType": "DiagnosticReport", "id": f"{PATIENT}-dxa-1", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "38268-9",
                             "display": "DXA Skeletal system Views for bone density"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": "2024-04-22", "issued": "2024-04-23T09:00:00Z",
        "conclusion": "Osteopenia of the left femoral neck (T-score -1.6). No osteoporosis.",
    }
    return {
        "patient": fixture["patient"], "conditions": searchset(conditions),
        "observations": searchset(observations), "medications": searchset(medications),
        "reports": searchset([dxa]), "procedures": searchset([]),
    }


def request_a() -> dict[str, Any]:
    return {
        "hook": "patient-view", "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0a01",
        "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT}, "prefetch": prefetch_a(),
    }


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
        _medication(f"{PATIENT}-draft-{n}", *row, status="draft", authored="2026-11-24")
        for n, row in enumerate(DRAFTS, start=1)
    ]
    context = {
        "userId": "Practitioner/dr-1", "patientId": PATIENT,
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": o} for o in drafts]},
    }
    return {"hook": "order-sign", "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0d04",
            "context": context, "prefetch": prefetch}
