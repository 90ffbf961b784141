"""Medication review for the cramp-related medicines: Beers 2023, kidney function, CNS burden, quinine."""

from __future__ import annotations

from cds_service.fhir.data import Resource, clinical_time, quantity, valid_id
from cds_service.rules.common import day, medicine_line, names
from cds_service.rules.evaluation import Evaluation, Finding, Medicine, reference


def evaluate(ev: Evaluation) -> list[Finding]:
    """Every medication-safety card that applies to the patient's current medicines."""
    return [
        *beers_muscle_relaxants(ev),
        *baclofen_with_low_egfr(ev),
        *relaxant_with_opioid_or_benzodiazepine(ev),
        *cns_active_burden(ev),
        *quinine_for_cramps(ev),
    ]


def _deletable(medicine: Medicine) -> bool:
    """Whether a suggestion may delete the medicine's order (a MedicationRequest with a valid id)."""
    request = medicine.request
    return request.get("resourceType") == "MedicationRequest" and valid_id(request.get("id"))


def beers_muscle_relaxants(ev: Evaluation) -> list[Finding]:
    """Age >= 65 on a Beers 2023 Table 2 skeletal muscle relaxant: one card per order, to deprescribe."""
    age = ev.age
    if age is None or age < ev.threshold("older-adult-age"):
        return []
    return [
        Finding(
            "beers-muscle-relaxant",
            {
                "medicine": m.name,
                "age": str(age),
                "order": m.ref,
                "deletable": _deletable(m),
                "stop_label": f"Discontinue {m.name}",
                "replaceable": False,
            },
            (medicine_line(m),),
        )
        for m in ev.medicines("muscle-relaxants-beers")
    ]


def baclofen_with_low_egfr(ev: Evaluation, among: list[Medicine] | None = None) -> list[Finding]:
    """Baclofen (current, or `among` the given medicines) with the latest eGFR below the Beers 2023
    Table 6 limit."""
    baclofen = ev.medicines("baclofen", among)
    if not baclofen:
        return []
    egfr = latest_egfr(ev)
    if egfr is None:
        return []
    value, observation = egfr
    limit = ev.threshold("baclofen-egfr-limit")
    if value >= limit:
        return []
    taken = day(clinical_time(observation))
    facts = {"egfr": f"{value:g}", "date": taken, "limit": f"{limit:g}"}
    evidence = (
        f"- eGFR {value:g} mL/min/1.73 m2 on {taken} ({reference(observation)})",
        *map(medicine_line, baclofen),
    )
    return [Finding("baclofen-renal", facts, evidence)]


def latest_egfr(ev: Evaluation) -> tuple[float, Resource] | None:
    """The newest eGFR in its look-back window (values are reported in mL/min/1.73 m2)."""
    window = ev.threshold("egfr-lookback-days")
    for observation in ev.results("egfr"):
        if not ev.within(observation, window):
            return None
        q = quantity(observation.get("valueQuantity"))
        if q is not None:
            # ">60" style results mean "at least 60": not below the limit.
            value = q.value + (0.001 if q.comparator in {">", ">="} else 0.0)
            return value, observation
    return None


def relaxant_with_opioid_or_benzodiazepine(ev: Evaluation) -> list[Finding]:
    """A muscle relaxant together with an opioid or a benzodiazepine (additive CNS depression)."""
    relaxants = ev.medicines("muscle-relaxants")
    depressants = ev.medicines("opioids") + ev.medicines("benzodiazepines")
    if not relaxants or not depressants:
        return []
    facts = {"relaxants": names(relaxants), "depressants": names(depressants)}
    evidence = tuple(map(medicine_line, [*relaxants, *depressants]))
    return [Finding("relaxant-with-cns-depressant", facts, evidence)]


def cns_active_burden(ev: Evaluation, among: list[Medicine] | None = None) -> list[Finding]:
    """Three or more distinct CNS-active medicines, current or `among` those given (Beers 2023 Table 5)."""
    distinct: dict[str, Medicine] = {}
    for medicine in ev.medicines("cns-active", among):
        distinct.setdefault(identity(ev, medicine, "cns-active"), medicine)
    minimum = int(ev.threshold("cns-active-count"))
    if len(distinct) < minimum:
        return []
    facts = {
        "count": str(len(distinct)),
        "medicines": names(distinct.values()),
        "minimum": str(minimum),
    }
    return [Finding("cns-active-burden", facts, tuple(map(medicine_line, distinct.values())))]


def quinine_for_cramps(ev: Evaluation) -> list[Finding]:
    """Quinine prescribed to a patient with leg cramps (FDA boxed warning)."""
    return [
        Finding(
            "quinine-for-cramps",
            {
                "medicine": m.name,
                "order": m.ref,
                "stop_label": f"Discontinue {m.name}",
                "deletable": _deletable(m),
            },
            (medicine_line(m),),
        )
        for m in ev.medicines("quinine")
    ]


def identity(ev: Evaluation, medicine: Medicine, vs_id: str) -> str:
    """One key per drug, not per product: the value set's ingredient name found in its text or
    coding displays (two strengths of gabapentin are one drug), else its first RxNorm code, else its
    name."""
    found = ev.knowledge.valueset(vs_id).name_in(medicine.texts)
    if found:
        return found
    rxnorm = next((c.code for c in medicine.codings if "rxnorm" in c.system), None)
    return rxnorm or medicine.name.lower()
