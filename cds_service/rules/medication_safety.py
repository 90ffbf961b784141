"""Medication review for the cramp-related medicines: Beers 2023, kidney function, CNS burden, quinine."""

from __future__ import annotations

from cds_service.fhir.data import Resource, clinical_time, codings, quantity, valid_id
from cds_service.knowledge.valuesets import ValueSet
from cds_service.rules.base import Finding, HookInput
from cds_service.rules.common import (
    age_years,
    day,
    medication_concepts,
    medication_name,
    medications_in,
    medicine_of,
    reference,
    results_in,
    within,
)


def evaluate(hook: HookInput) -> list[Finding]:
    """Every medication-safety card that applies to the patient's current medicines."""
    return [
        *beers_muscle_relaxants(hook),
        *baclofen_with_low_egfr(hook),
        *relaxant_with_opioid_or_benzodiazepine(hook),
        *cns_active_burden(hook),
        *quinine_for_cramps(hook),
    ]


def beers_muscle_relaxants(hook: HookInput) -> list[Finding]:
    """Age >= 65 on a Beers 2023 Table 2 skeletal muscle relaxant: one card per order, to deprescribe."""
    age = age_years(hook)
    if age is None or age < hook.knowledge.threshold("older-adult-age"):
        return []
    findings = []
    for request in medications_in(hook.record, hook.knowledge.valueset("muscle-relaxants-beers")):
        target = reference(request)
        facts = {
            "medicine": medication_name(hook.record, request),
            "age": str(age),
            "order": target,
            "deletable": request.get("resourceType") == "MedicationRequest"
            and valid_id(request.get("id")),
            "stop_label": f"Discontinue {medication_name(hook.record, request)}",
            "replaceable": False,
        }
        findings.append(Finding("beers-muscle-relaxant", facts, (_med_line(hook, request),)))
    return findings


def baclofen_with_low_egfr(
    hook: HookInput, requests: list[Resource] | None = None
) -> list[Finding]:
    """Baclofen (current, or among `requests`) with the latest eGFR below the Beers 2023 Table 6 limit."""
    kb = hook.knowledge
    baclofen = medications_in(hook.record, kb.valueset("baclofen"), requests)
    if not baclofen:
        return []
    egfr = latest_egfr(hook)
    if egfr is None:
        return []
    value, observation = egfr
    limit = kb.threshold("baclofen-egfr-limit")
    if value >= limit:
        return []
    facts = {
        "egfr": f"{value:g}",
        "date": day(clinical_time(observation)),
        "limit": f"{limit:g}",
    }
    evidence = (
        f"- eGFR {value:g} mL/min/1.73 m2 on {day(clinical_time(observation))} ({reference(observation)})",
        *(_med_line(hook, m) for m in baclofen),
    )
    return [Finding("baclofen-renal", facts, evidence)]


def latest_egfr(hook: HookInput) -> tuple[float, Resource] | None:
    """The newest eGFR in its look-back window (values are reported in mL/min/1.73 m2)."""
    kb = hook.knowledge
    window = kb.threshold("egfr-lookback-days")
    for observation in results_in(hook.record, kb.valueset("egfr")):
        if not within(observation, hook.now, window):
            return None
        q = quantity(observation.get("valueQuantity"))
        if q is not None:
            # ">60" style results mean "at least 60": not below the limit.
            value = q.value + (0.001 if q.comparator in {">", ">="} else 0.0)
            return value, observation
    return None


def relaxant_with_opioid_or_benzodiazepine(hook: HookInput) -> list[Finding]:
    """A muscle relaxant together with an opioid or a benzodiazepine (additive CNS depression)."""
    kb = hook.knowledge
    relaxants = medications_in(hook.record, kb.valueset("muscle-relaxants"))
    depressants = medications_in(hook.record, kb.valueset("opioids")) + medications_in(
        hook.record, kb.valueset("benzodiazepines")
    )
    if not relaxants or not depressants:
        return []
    facts = {
        "relaxants": _names(hook, relaxants),
        "depressants": _names(hook, depressants),
    }
    evidence = tuple(_med_line(hook, m) for m in [*relaxants, *depressants])
    return [Finding("relaxant-with-cns-depressant", facts, evidence)]


def cns_active_burden(hook: HookInput, requests: list[Resource] | None = None) -> list[Finding]:
    """Three or more distinct CNS-active medicines, current or among `requests` (Beers 2023 Table 5)."""
    # Asked once per CNS-active order with the same medicines: answered once per call.
    memo = hook.record.answers
    key = ("cns-active-burden", None if requests is None else frozenset(map(id, requests)))
    if key not in memo:
        memo[key] = _cns_active_burden(hook, requests)
    found: list[Finding] = memo[key]
    return found


def _cns_active_burden(hook: HookInput, requests: list[Resource] | None) -> list[Finding]:
    kb = hook.knowledge
    cns_active = kb.valueset("cns-active")
    distinct: dict[str, Resource] = {}
    for request in medications_in(hook.record, cns_active, requests):
        distinct.setdefault(identity(hook, request, cns_active), request)
    minimum = int(kb.threshold("cns-active-count"))
    if len(distinct) < minimum:
        return []
    facts = {
        "count": str(len(distinct)),
        "medicines": _names(hook, list(distinct.values())),
        "minimum": str(minimum),
    }
    return [
        Finding("cns-active-burden", facts, tuple(_med_line(hook, m) for m in distinct.values()))
    ]


def quinine_for_cramps(hook: HookInput) -> list[Finding]:
    """Quinine prescribed to a patient with leg cramps (FDA boxed warning)."""
    quinine = medications_in(hook.record, hook.knowledge.valueset("quinine"))
    return [
        Finding(
            "quinine-for-cramps",
            {
                "medicine": medication_name(hook.record, m),
                "order": reference(m),
                "stop_label": f"Discontinue {medication_name(hook.record, m)}",
                "deletable": m.get("resourceType") == "MedicationRequest" and valid_id(m.get("id")),
            },
            (_med_line(hook, m),),
        )
        for m in quinine
    ]


def identity(hook: HookInput, request: Resource, vs: ValueSet) -> str:
    """One key per drug, not per product: the ingredient name found in its text or coding displays
    (two strengths of gabapentin are one drug), else its first RxNorm code, else its name."""
    name = medicine_of(hook.record, request).name_in(vs)
    if name:
        return name
    for concept in medication_concepts(hook.record, request):
        for coding in codings(concept):
            if "rxnorm" in coding.system:
                return coding.code
    return medication_name(hook.record, request).lower()


def _names(hook: HookInput, requests: list[Resource]) -> str:
    return ", ".join(sorted({medication_name(hook.record, m) for m in requests}))


def _med_line(hook: HookInput, request: Resource) -> str:
    authored = request.get("authoredOn")
    when = f", ordered {authored[:10]}" if isinstance(authored, str) else ""
    return f"- {medication_name(hook.record, request)} ({request.get('status')}{when}; {reference(request)})"
