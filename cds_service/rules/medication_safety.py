"""Medication safety on every hook: Beers 2023 from the older-adult age, kidney function, CNS
burden, tizanidine with CYP1A2 inhibitors, two muscle relaxants, quinine for cramps.

Each check reads the medicines under review (patient-view: every current medicine; order-select and
order-sign: the orders under decision) within the regimen they belong to (current medicines and,
when ordering, the pending drafts), so a combination raised when one of its medicines is ordered is
raised too when the patient already takes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds_service.fhir.data import (
    Quantity,
    Resource,
    clinical_time,
    codings,
    items,
    reported_quantity,
    status,
    texts,
    valid_id,
)
from cds_service.rules.common import day, medicine_line, names
from cds_service.rules.evaluation import Evaluation, Finding, Medicine, reference

PATIENT_VIEW = "patient-view"
# The facts in which a finding names medicines (card text joins several with ", ").
_MEDICINE_FACTS = (
    "medicine",
    "partner",
    "others",
    "relaxants",
    "depressants",
    "medicines",
    "combined",
)


def evaluate(ev: Evaluation, cramps: bool) -> list[Finding]:
    """patient-view: every medication-safety card for the patient's current medicines (quinine
    only when `cramps` are documented)."""
    current = ev.current_medicines
    quinine = quinine_for_cramps(ev, current) if cramps else []
    return [*review(ev, current, current), *quinine]


def review(ev: Evaluation, under_review: list[Medicine], regimen: list[Medicine]) -> list[Finding]:
    """The checks every hook runs: those about the medicines under review, within the regimen."""
    found = [
        *beers_muscle_relaxants(ev, under_review),
        *baclofen_with_low_egfr(ev, under_review),
        *tizanidine_with_cyp1a2_inhibitor(ev, under_review, regimen),
        *duplicate_muscle_relaxants(ev, under_review, regimen),
        *relaxant_with_opioid_or_benzodiazepine(ev, under_review, regimen),
        *cns_active_burden(ev, under_review, regimen),
        *unidentified(regimen),
    ]
    return one_per_combination(found)


def unidentified(regimen: list[Medicine]) -> list[Finding]:
    """The medicines of the regimen nothing names (a reference to a Medication not received): the
    checks above cannot include them, so this is said rather than read as "no interaction"."""
    unknown = [m for m in regimen if not m.identified]
    if not unknown:
        return []
    facts = {"count": str(len(unknown)), "orders": ", ".join(m.ref for m in unknown)}
    return [Finding("medication-unidentified", facts, tuple(map(medicine_line, unknown)))]


def older_adult(ev: Evaluation) -> bool:
    """Whether the patient has reached the older-adult age of thresholds.yaml (Beers 2023 applies);
    an unknown age is not assumed to."""
    return ev.age is not None and ev.age >= ev.threshold("older-adult-age")


def stop_facts(ev: Evaluation, medicine: Medicine) -> dict[str, Any]:
    """The facts of a suggestion to stop a medicine under review: on patient-view a current
    medicine is discontinued; when ordering, a draft is removed and a re-signed order not renewed."""
    request = medicine.request
    discontinue = ev.hook == PATIENT_VIEW
    if discontinue:
        deletable = request.get("resourceType") == "MedicationRequest" and valid_id(
            request.get("id")
        )
    else:
        deletable = valid_id(request.get("id"))
    return {
        "medicine": medicine.name,
        "order": medicine.ref,
        "deletable": deletable,
        # The suggestion's label (cards.yaml phrase stop_label) says which.
        "discontinue": discontinue,
        "draft": not discontinue and status(request) == "draft",
    }


def beers_muscle_relaxants(ev: Evaluation, under_review: list[Medicine]) -> list[Finding]:
    """From the older-adult age, each Beers 2023 Table 2 skeletal muscle relaxant under review;
    a medicine being ordered may be replaced by a physical therapy referral."""
    if not older_adult(ev):
        return []
    ordering = ev.hook != PATIENT_VIEW
    found = []
    for m in ev.medicines("muscle-relaxants-beers", under_review):
        facts = {
            **stop_facts(ev, m),
            "age": str(ev.age),
            "replaceable": ordering and valid_id(m.request.get("id")),
        }
        # A draft is not yet taken: the order is reconsidered rather than the medicine stopped.
        variant = "ordering" if facts["draft"] else None
        found.append(Finding("beers-muscle-relaxant", facts, (medicine_line(m),), variant=variant))
    return found


def baclofen_with_low_egfr(ev: Evaluation, under_review: list[Medicine]) -> list[Finding]:
    """Baclofen under review with the latest eGFR below the limit: Beers 2023 Table 6 from the
    older-adult age, the label's caution and lower dose below it (either way: taper to stop)."""
    baclofen = ev.medicines("baclofen", under_review)
    egfr = latest_egfr(ev) if baclofen else None
    if egfr is None:
        return []
    reported, observation = egfr
    limit = ev.threshold("baclofen-egfr-limit")
    if not certainly_below(reported, limit):
        return []
    taken = day(clinical_time(observation))
    # Shown as the lab reported it: "<15" stays "<15".
    shown = f"{reported.comparator or ''}{reported.value:g}"
    facts = {"egfr": shown, "date": taken, "limit": f"{limit:g}"}
    evidence = (
        f"- eGFR {shown} mL/min/1.73 m2 on {taken} ({reference(observation)})",
        *map(medicine_line, baclofen),
    )
    variant = "older-adult" if older_adult(ev) else None
    return [Finding("baclofen-renal", facts, evidence, variant=variant)]


def latest_egfr(ev: Evaluation) -> tuple[Quantity, Resource] | None:
    """The newest eGFR in its look-back window, as reported (values are in mL/min/1.73 m2; a
    comparator, "<15" or ">60", is kept)."""
    window = ev.threshold("egfr-lookback-days")
    for observation in ev.results("egfr"):
        if not ev.within(observation, window):
            return None
        q = reported_quantity(observation)
        if q is not None:
            return q, observation
    return None


def certainly_below(reported: Quantity, limit: float) -> bool:
    """Whether a result is below the limit whatever its comparator means: "<15" is below 60,
    ">60" is not, and ">30" (at least 30) might not be, so it is not called below."""
    if reported.comparator is None:
        return reported.value < limit
    if reported.comparator == "<":
        return reported.value <= limit
    if reported.comparator == "<=":
        return reported.value < limit
    return False


def systemic(ev: Evaluation, medicine: Medicine) -> bool:
    """Whether a medicine reaches the circulation. Not when every coded route of its dosage is
    ophthalmic, otic or topical; with no coded route, not when the route text, the medicine's name
    or its dose form says so (eye or ear drops, a skin cream or gel), unless the text also names a
    systemic route (vaginal cream, transdermal gel). A coded oral or IV route wins over text."""
    request = medicine.request
    dosages = items(request.get("dosageInstruction")) + items(request.get("dosage"))
    routes = [
        d["route"] for d in dosages if isinstance(d, dict) and isinstance(d.get("route"), dict)
    ]
    local = ev.knowledge.valueset("non-systemic-routes")
    coded = [r for r in routes if codings(r)]
    if coded:
        return not all(ev.coded(r, "non-systemic-routes") for r in coded)
    medication = ev.record.medication_of(request) or {}
    words = [
        *medicine.texts,
        *texts(medication.get("form")),
        *(t for r in routes for t in texts(r)),
    ]
    systemic_text = ev.knowledge.valueset("systemic-routes").name_in(words) is not None
    return systemic_text or local.name_in(words) is None


def cyp1a2_inhibitor(ev: Evaluation, medicine: Medicine) -> str | None:
    """The tizanidine label's grade for a systemic CYP1A2 inhibitor (critical: contraindicated;
    warning: avoid), or None."""
    if ev.is_in(medicine, "tizanidine-cyp1a2-contraindicated"):
        grade = "critical"
    elif ev.is_in(medicine, "tizanidine-cyp1a2-inhibitors"):
        grade = "warning"
    else:
        return None
    return grade if systemic(ev, medicine) else None


def tizanidine_with_cyp1a2_inhibitor(
    ev: Evaluation, under_review: list[Medicine], regimen: list[Medicine]
) -> list[Finding]:
    """Tizanidine with a systemic CYP1A2 inhibitor, either one under review: critical when any
    partner is contraindicated (fluvoxamine, ciprofloxacin), else the label's warning."""
    found = []
    tizanidines = ev.medicines("tizanidine", regimen)
    for medicine in under_review:
        if ev.is_in(medicine, "tizanidine"):
            others = [m for m in regimen if not same_order(m, medicine)]
            partners = [m for m in others if cyp1a2_inhibitor(ev, m)]
            grades = {cyp1a2_inhibitor(ev, m) for m in partners}
        else:
            grade = cyp1a2_inhibitor(ev, medicine)
            # A tizanidine also under review raises the card from its own side.
            partners = [
                m
                for m in tizanidines
                if not same_order(m, medicine) and not _involves([m], under_review)
            ]
            grades = {grade} if grade and partners else set()
        if not grades:
            continue
        # The contraindicated partners first: they are what the critical card is about.
        partners.sort(key=lambda m: (cyp1a2_inhibitor(ev, m) != "critical", m.name))
        partner = ", ".join(dict.fromkeys(m.name for m in partners))
        facts = {**stop_facts(ev, medicine), "partner": partner}
        if ev.hook == PATIENT_VIEW:
            facts["deletable"] = False  # which one to change is the prescriber's choice
        variant = None if "critical" in grades else "label-warning"
        evidence = (medicine_line(medicine), *map(medicine_line, partners))
        found.append(Finding("tizanidine-cyp1a2-interaction", facts, evidence, variant=variant))
    return found


def duplicate_muscle_relaxants(
    ev: Evaluation, under_review: list[Medicine], regimen: list[Medicine]
) -> list[Finding]:
    """A muscle relaxant under review with another, different one in the regimen."""
    found = []
    relaxants = ev.medicines("muscle-relaxants", regimen)
    for medicine in ev.medicines("muscle-relaxants", under_review):
        same = identity(ev, medicine, "muscle-relaxants")
        others = [
            m
            for m in relaxants
            if not same_order(m, medicine) and identity(ev, m, "muscle-relaxants") != same
        ]
        if not others:
            continue
        facts = {**stop_facts(ev, medicine), "others": names(others)}
        if ev.hook == PATIENT_VIEW:
            facts["deletable"] = False  # which one to stop is the prescriber's choice
        evidence = (medicine_line(medicine), *map(medicine_line, others))
        variant = _baclofen_variant(ev, [medicine, *others])
        found.append(Finding("duplicate-muscle-relaxant", facts, evidence, variant=variant))
    return found


def relaxant_with_opioid_or_benzodiazepine(
    ev: Evaluation, under_review: list[Medicine], regimen: list[Medicine]
) -> list[Finding]:
    """Muscle relaxants with opioids or benzodiazepines in the regimen, one of them under review
    (additive CNS depression)."""
    relaxants = ev.medicines("muscle-relaxants", regimen)
    depressants = ev.medicines("opioids", regimen) + ev.medicines("benzodiazepines", regimen)
    if not relaxants or not depressants or not _involves(under_review, relaxants + depressants):
        return []
    # One product with both (carisoprodol + aspirin + codeine) is one medicine: named once.
    combined = [m for m in relaxants if _involves([m], depressants)]
    relaxants = [m for m in relaxants if m not in combined]
    depressants = [m for m in depressants if not _involves([m], combined)]
    parts = [
        ingredient(ev, m, vs_id)
        for m in combined
        for vs_id in ("muscle-relaxants", "opioids", "benzodiazepines")
        if ev.is_in(m, vs_id)
    ]
    facts = {
        "relaxants": names(relaxants),
        "depressants": names(depressants),
        "combined": names(combined),
        "ingredients": " and ".join(dict.fromkeys(p for p in parts if p)),
        "named_ingredients": all(parts),
        "others": names(relaxants + depressants),
        "has_others": bool(relaxants or depressants),
        "baclofen": bool(ev.medicines("baclofen", relaxants)),
    }
    evidence = tuple(map(medicine_line, [*combined, *relaxants, *depressants]))
    variant = "one-product" if combined else _baclofen_variant(ev, relaxants)
    return [Finding("relaxant-with-cns-depressant", facts, evidence, variant=variant)]


def ingredient(ev: Evaluation, medicine: Medicine, vs_id: str) -> str | None:
    """The ingredient of a medicine that puts it in a value set: the title of the single-drug
    value set it is in ("Carisoprodol" for a product named "Soma"), else the set's name found in
    its text ("codeine"), else None (the card then names the class)."""
    vs = ev.knowledge.valueset(vs_id)
    for member in vs.members:
        if ev.is_in(medicine, member):
            return ingredient(ev, medicine, member)
    if vs.title.lower() in vs.names:
        return vs.title.lower()
    return vs.name_in(medicine.texts)


def cns_active_burden(
    ev: Evaluation, under_review: list[Medicine], regimen: list[Medicine]
) -> list[Finding]:
    """From the older-adult age, three or more distinct CNS-active medicines (Beers 2023 Table 5
    classes) in the regimen, one of them under review."""
    if not older_adult(ev):
        return []
    active = ev.medicines("cns-active", regimen)
    if not _involves(under_review, active):
        return []
    # Beers counts drugs: a product holding two CNS-active drugs (carisoprodol + codeine) is two.
    classes = ev.knowledge.valueset("cns-active").members
    distinct: dict[str, Medicine] = {}
    for medicine in active:
        drugs = {
            ingredient(ev, medicine, vs_id) or identity(ev, medicine, vs_id)
            for vs_id in classes
            if ev.is_in(medicine, vs_id)
        }
        for drug in drugs or {identity(ev, medicine, "cns-active")}:
            distinct.setdefault(drug, medicine)
    minimum = int(ev.threshold("cns-active-count"))
    if len(distinct) < minimum:
        return []
    # The detail names a few; the evidence lists every one (a detail stays under 1,000 characters).
    named = sorted({m.name for m in distinct.values()})
    shown = int(ev.threshold("medicines-named-in-text"))
    more = max(len(named) - shown, 0)
    facts: dict[str, object] = {
        "count": str(len(distinct)),
        "medicines": ", ".join(named[:shown] if more else named),
        "more": str(more),
        "has_more": more > 0,
        "minimum": str(minimum),
    }
    products = list(distinct.values())
    unique = [m for i, m in enumerate(products) if all(m is not o for o in products[:i])]
    facts["combined"] = len(unique) < len(products)
    evidence = tuple(map(medicine_line, unique))
    variant = _baclofen_variant(ev, list(distinct.values()))
    return [Finding("cns-active-burden", facts, evidence, variant=variant)]


def quinine_for_cramps(ev: Evaluation, medicines: list[Medicine]) -> list[Finding]:
    """Quinine among the given medicines of a patient with leg cramps (FDA boxed warning); the
    caller has established the cramps."""
    return [
        Finding("quinine-for-cramps", stop_facts(ev, m), (medicine_line(m),))
        for m in ev.medicines("quinine", medicines)
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


def one_per_combination(findings: Iterable[Finding]) -> list[Finding]:
    """The findings, one per kind and set of medicines named (a pair seen from each of its
    medicines is one card), less each one whose medicines another of its kind names, and more.

    A finding tied to one order (its remove or replace action) is kept unless the same medicines
    were already raised.
    """
    found: dict[tuple[str, frozenset[str]], Finding] = {}
    for finding in findings:
        found.setdefault((finding.kind, _medicines_named(finding)), finding)
    return [
        finding
        for (kind, named), finding in found.items()
        if "order" in finding.facts
        or not any(other_kind == kind and named < other for other_kind, other in found)
    ]


def _medicines_named(finding: Finding) -> frozenset[str]:
    # Facts name medicines by their display name, joined with ", ": the same medicine reads the
    # same, so the split names compare as they are.
    named: set[str] = set()
    for fact in _MEDICINE_FACTS:
        value = finding.facts.get(fact)
        if isinstance(value, str):
            named.update(value.split(", "))
    return frozenset(named)


def same_order(a: Medicine, b: Medicine) -> bool:
    """Whether two medicines are one order: the same resource, or the same `Type/id` (a re-signed
    order is both a current medicine and a draft)."""
    return a.request is b.request or (valid_id(a.request.get("id")) and a.ref == b.ref)


def _involves(under_review: list[Medicine], medicines: list[Medicine]) -> bool:
    return any(same_order(m, other) for m in under_review for other in medicines)


def _baclofen_variant(ev: Evaluation, medicines: list[Medicine]) -> str | None:
    """The `baclofen` text (stop it by tapering) when a card that may advise stopping names baclofen."""
    return "baclofen" if ev.medicines("baclofen", medicines) else None
