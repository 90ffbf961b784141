"""Hook requests for the benchmark scenarios, built from the repository's fixtures and Synthea data.

(a) patient-view, full prefetch of ~50 resources: fixture 42 (infarction, right spastic hemiparesis,
    leg cramps, baclofen with eGFR 59) renamed to patient `bench-a` and padded with the history an
    older stroke patient has: 3 years of calcium/eGFR/albumin/magnesium/vitamin D results, common
    comorbidities, current medicines, an old DXA report.
(b) patient-view, ~2,000 resources: the Synthea patient Yulanda554 (a stroke, SNOMED 230690007) plus
    an active leg-cramp Condition (ICD-10-CM R25.2), entries split by resource type into the keys
    (every Observation, MedicationRequest, DiagnosticReport and Procedure of a 70-year record: an EHR
    that ignores the prefetch's code filters, the heaviest realistic request).
(c) patient-view with only `patient` prefetched: the other five keys are fetched from `fhirServer`
    (the local FHIR server seeded with the (a) patient, behind a 50 ms delaying proxy).
(d) order-sign with five draft MedicationRequests for the (a) patient; its prefetch is filled from the
    (a) record for whatever keys discovery lists for the order service.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_A = ROOT / "fixtures" / "scenarios" / "42-baclofen-egfr-59.json"
SYNTHEA_B = (
    ROOT.parent
    / "shared"
    / "data"
    / "synthea"
    / "Yulanda554_Kemmer137_03914175-1366-4101-b4a4-9b8af0de4aed.json"
)
PATIENT_SERVICE = "leg-cramps-after-stroke"
ORDER_SERVICE = "leg-cramps-order-review"
PATIENT_A = "bench-a"
EHR = "https://ehr.example.org/fhir"

LOINC = "http://loinc.org"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# Resource type read by each prefetch key of the patient-view service (cards/services.yaml).
KEY_TYPES = {
    "conditions": "Condition",
    "observations": "Observation",
    "medications": "MedicationRequest",
    "reports": "DiagnosticReport",
    "procedures": "Procedure",
}


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{EHR}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def resources_of(value: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not value:
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry", []) if "resource" in e]
    return [value]


# ---------------------------------------------------------------------------------------------
# (a) ~50 resources


def _lab(
    n: int,
    code: str,
    display: str,
    when: str,
    value: float,
    unit: str,
    ucum: str,
    low: float | None = None,
    high: float | None = None,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{PATIENT_A}-hist-{n}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                        "display": "Laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "effectiveDateTime": f"{when}T08:30:00Z",
        "issued": f"{when}T11:02:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }
    if low is not None and high is not None:
        obs["referenceRange"] = [
            {
                "low": {"value": low, "unit": unit, "system": UCUM, "code": ucum},
                "high": {"value": high, "unit": unit, "system": UCUM, "code": ucum},
            }
        ]
    return obs


def _condition(
    n: int, code: str, display: str, onset: str, status: str = "active"
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"{PATIENT_A}-comorb-{n}",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": ICD, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "onsetDateTime": onset,
        "recordedDate": onset,
    }


def _medication(
    rid: str,
    code: str,
    display: str,
    text: str,
    dose: str,
    status: str = "active",
    authored: str = "2025-03-01",
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}],
            "text": text,
        },
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "authoredOn": authored,
        "requester": {"reference": "Practitioner/dr-1"},
        "dosageInstruction": [{"text": dose}],
    }


def _quarters(count: int) -> list[str]:
    """`count` dates, a quarter apart, all before the fixture's results of 2026-11-10."""
    dates = []
    year, month = 2026, 8
    for _ in range(count):
        dates.append(f"{year:04d}-{month:02d}-14")
        month -= 3
        if month < 1:
            month += 12
            year -= 1
    return dates


def padded_prefetch_a() -> dict[str, Any]:
    """The (a) patient's full prefetch: the fixture's resources plus a realistic history."""
    fixture = json.loads(FIXTURE_A.read_text(encoding="utf-8"))["request"]["prefetch"]
    renamed = json.loads(json.dumps(fixture).replace("pt-42", PATIENT_A))
    conditions = resources_of(renamed["conditions"])
    observations = resources_of(renamed["observations"])
    medications = resources_of(renamed["medications"])
    n = 0
    history: list[dict[str, Any]] = []
    for i, when in enumerate(_quarters(12)):
        n += 1
        history.append(
            _lab(
                n,
                "17861-6",
                "Calcium [Mass/volume] in Serum or Plasma",
                when,
                round(9.1 + 0.1 * (i % 5), 1),
                "mg/dL",
                "mg/dL",
                8.5,
                10.5,
            )
        )
    for i, when in enumerate(_quarters(8)):
        n += 1
        history.append(
            _lab(
                n,
                "98979-8",
                "Glomerular filtration rate/1.73 sq M.predicted "
                "[Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based "
                "formula (CKD-EPI 2021)",
                when,
                62 + 2 * i,
                "mL/min/1.73m2",
                "mL/min/{1.73_m2}",
            )
        )
    for i, when in enumerate(_quarters(6)):
        n += 1
        history.append(
            _lab(
                n,
                "1751-7",
                "Albumin [Mass/volume] in Serum or Plasma",
                when,
                round(3.9 + 0.05 * (i % 4), 2),
                "g/dL",
                "g/dL",
                3.5,
                5.0,
            )
        )
    for i, when in enumerate(_quarters(8)[::2]):
        n += 1
        history.append(
            _lab(
                n,
                "19123-9",
                "Magnesium [Mass/volume] in Serum or Plasma",
                when,
                round(1.9 + 0.1 * i, 1),
                "mg/dL",
                "mg/dL",
                1.7,
                2.2,
            )
        )
    for i, when in enumerate(_quarters(12)[::4]):
        n += 1
        history.append(
            _lab(
                n,
                "62292-8",
                "25-Hydroxyvitamin D3+25-Hydroxyvitamin D2 [Mass/volume] in Serum or Plasma",
                when,
                28 + 3 * i,
                "ng/mL",
                "ng/mL",
                30,
                100,
            )
        )
    observations = sorted(
        observations + history, key=lambda o: o["effectiveDateTime"], reverse=True
    )
    conditions += [
        _condition(1, "I10", "Essential (primary) hypertension", "2012-05-02"),
        _condition(2, "E11.9", "Type 2 diabetes mellitus without complications", "2016-09-20"),
        _condition(3, "E78.5", "Hyperlipidemia, unspecified", "2014-01-11"),
        _condition(4, "I48.91", "Unspecified atrial fibrillation", "2026-02-14"),
        _condition(5, "N18.31", "Chronic kidney disease, stage 3a", "2025-06-30"),
        _condition(
            6, "K21.9", "Gastro-esophageal reflux disease without esophagitis", "2019-03-08"
        ),
        _condition(7, "M17.11", "Unilateral primary osteoarthritis, right knee", "2020-10-15"),
        _condition(
            8, "J06.9", "Acute upper respiratory infection, unspecified", "2025-01-04", "resolved"
        ),
    ]
    medications += [
        _medication(
            f"{PATIENT_A}-med-1",
            "83367",
            "atorvastatin",
            "Atorvastatin 40 MG Oral Tablet",
            "40 mg by mouth at night",
        ),
        _medication(
            f"{PATIENT_A}-med-2",
            "29046",
            "lisinopril",
            "Lisinopril 10 MG Oral Tablet",
            "10 mg by mouth daily",
        ),
        _medication(
            f"{PATIENT_A}-med-3",
            "1364430",
            "apixaban 5 MG Oral Tablet",
            "Apixaban 5 MG Oral Tablet",
            "5 mg by mouth twice daily",
        ),
        _medication(
            f"{PATIENT_A}-med-4",
            "6809",
            "metformin",
            "Metformin 500 MG Oral Tablet",
            "500 mg by mouth twice daily",
        ),
        _medication(
            f"{PATIENT_A}-med-5",
            "7646",
            "omeprazole",
            "Omeprazole 20 MG Oral Capsule",
            "20 mg by mouth daily",
        ),
    ]
    reports = [
        {
            "resourceType": "DiagnosticReport",
            "id": f"{PATIENT_A}-dxa-1",
            "status": "final",
            "code": {
                "coding": [
                    {
                        "system": LOINC,
                        "code": "38268-9",
                        "display": "DXA Skeletal system Views for bone density",
                    }
                ]
            },
            "subject": {"reference": f"Patient/{PATIENT_A}"},
            "effectiveDateTime": "2024-04-22",
            "issued": "2024-04-23T09:00:00Z",
            "conclusion": "Osteopenia of the left femoral neck (T-score -1.6). No osteoporosis.",
        }
    ]
    return {
        "patient": renamed["patient"],
        "conditions": searchset(conditions),
        "observations": searchset(observations),
        "medications": searchset(medications),
        "reports": searchset(reports),
        "procedures": searchset([]),
    }


def request_a() -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0a01",
        "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT_A},
        "prefetch": padded_prefetch_a(),
    }


def record_a() -> list[dict[str, Any]]:
    """Every resource of the (a) patient (to seed the FHIR server for (c))."""
    found: list[dict[str, Any]] = []
    for value in padded_prefetch_a().values():
        found.extend(resources_of(value))
    return found


# ---------------------------------------------------------------------------------------------
# (b) ~2,000 resources


def request_b(path: Path = SYNTHEA_B) -> dict[str, Any]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    resources.append(
        {
            "resourceType": "Condition",
            "id": "bench-added-leg-cramps",
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
            "code": {
                "coding": [{"system": ICD, "code": "R25.2", "display": "Cramp and spasm"}],
                "text": "Nocturnal cramps in both calves",
            },
            "subject": {"reference": f"Patient/{patient['id']}"},
            "onsetDateTime": "2026-10-01",
        }
    )
    by_type: dict[str, list[dict[str, Any]]] = {t: [] for t in KEY_TYPES.values()}
    for resource in resources:
        if resource["resourceType"] in by_type:
            by_type[resource["resourceType"]].append(resource)
    by_type["Observation"].sort(key=lambda o: o.get("effectiveDateTime", ""), reverse=True)
    prefetch: dict[str, Any] = {"patient": patient}
    prefetch.update({key: searchset(by_type[kind]) for key, kind in KEY_TYPES.items()})
    return {
        "hook": "patient-view",
        "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0b02",
        "context": {"userId": "Practitioner/dr-1", "patientId": patient["id"]},
        "prefetch": prefetch,
    }


# ---------------------------------------------------------------------------------------------
# (c) five keys fetched from the FHIR server

FHIR_TOKEN = "bench-fhir-access-token"


def request_c(fhir_base: str) -> dict[str, Any]:
    full = request_a()
    return {
        "hook": "patient-view",
        "hookInstance": "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0c03",
        "context": full["context"],
        "fhirServer": fhir_base,
        "fhirAuthorization": {
            "access_token": FHIR_TOKEN,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "patient/*.read",
            "subject": "leg-cramps-cds",
        },
        # Only the Patient is sent: conditions, observations, medications, reports and procedures
        # (five keys) are missing and must be fetched.
        "prefetch": {"patient": full["prefetch"]["patient"]},
    }


def seed_c() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in record_a()],
    }


def fhir_queries(discovered: dict[str, Any], patient_id: str = PATIENT_A) -> dict[str, str]:
    """The service's prefetch queries as discovery lists them, for `patient_id` (so a FHIR round
    trip can be timed with exactly what the service asks)."""
    return {
        key: query.replace("{{context.patientId}}", patient_id)
        for key, query in (discovered.get("prefetch") or {}).items()
    }


# ---------------------------------------------------------------------------------------------
# (d) order-sign with five draft orders

DRAFTS = [
    (
        "21949",
        "cyclobenzaprine",
        "Cyclobenzaprine hydrochloride 10 MG Oral Tablet",
        "10 mg by mouth at bedtime",
    ),
    (
        "10689",
        "Tramadol",
        "Tramadol hydrochloride 50 MG Oral Tablet",
        "50 mg by mouth every 6 hours as needed for pain",
    ),
    ("9071", "Quinine", "Quinine sulfate 324 MG Oral Capsule", "324 mg by mouth at bedtime"),
    ("25480", "gabapentin", "Gabapentin 300 MG Oral Capsule", "300 mg by mouth three times daily"),
    (
        "1897",
        "Calcium Carbonate",
        "Calcium carbonate 1250 MG (500 MG elemental) Oral Tablet",
        "1 tablet by mouth twice daily with meals",
    ),
]


def draft_orders() -> dict[str, Any]:
    orders = [
        _medication(
            f"{PATIENT_A}-draft-{i}",
            code,
            display,
            text,
            dose,
            status="draft",
            authored="2026-11-24",
        )
        for i, (code, display, text, dose) in enumerate(DRAFTS, start=1)
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": o} for o in orders],
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
    record = record_a()
    prefetch = {
        key: _fill(query, record) for key, query in (discovered.get("prefetch") or {}).items()
    }
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.UUID("2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0d04")),
        "context": {
            "userId": "Practitioner/dr-1",
            "patientId": PATIENT_A,
            "draftOrders": draft_orders(),
        },
        "prefetch": prefetch,
    }


def count_resources(request: dict[str, Any]) -> int:
    total = sum(len(resources_of(v)) for v in (request.get("prefetch") or {}).values())
    drafts = request.get("context", {}).get("draftOrders")
    return total + len(resources_of(drafts))
