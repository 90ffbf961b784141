"""The order-select and order-sign services: medication safety of the medicines being ordered.

Cards concern only the orders under decision: on order-select the `selections`, on order-sign every
MedicationRequest in `draftOrders` (a re-signed order may already be active; cancelled, stopped,
completed or entered-in-error entries are not being signed and are skipped). They are judged against
the patient's age, latest eGFR, current medicines, the other draft orders and diagnoses.
"""

from __future__ import annotations

from cds_service.fhir.data import Resource, items, iter_bundle, status, valid_id
from cds_service.rules import calcium, medication_safety
from cds_service.rules.common import names
from cds_service.rules.evaluation import Evaluation, Finding, Medicine, reference
from cds_service.rules.patient_view import in_scope

NOT_BEING_SIGNED = {"cancelled", "stopped", "completed", "entered-in-error", "revoked"}


def orders_under_decision(ev: Evaluation) -> tuple[list[Resource], list[Resource]]:
    """(the MedicationRequests this call is about, every pending draft order of the session).

    On order-select, hooks.py has checked that every selection names a draft order.
    """
    drafts = [
        r
        for _, r in iter_bundle(ev.context["draftOrders"])
        if r.get("resourceType") == "MedicationRequest"
    ]
    pending = [r for r in drafts if status(r) not in NOT_BEING_SIGNED]
    if ev.hook == "order-select":
        selected = set(ev.context["selections"])
        return [r for r in drafts if reference(r) in selected], pending
    return pending, pending


def evaluate(ev: Evaluation) -> list[Finding]:
    """Every card that applies to the orders under decision."""
    targets, drafts = orders_under_decision(ev)
    found: dict[tuple[str, frozenset[str]], Finding] = {}
    # What the patient would take if the orders are signed: current medicines and every other
    # pending draft (two new drugs signed together must be checked against each other).
    regimen = [*ev.current_medicines, *map(ev.medicine, drafts)]
    for order in map(ev.medicine, targets):
        others = [m for m in regimen if m.ref != order.ref]
        for finding in check_order(ev, order, others):
            # A pair or a combination found from each of its orders is one card, not one per order.
            found.setdefault((finding.kind, _medicines_named(finding)), finding)
    return _without_subsumed(found)


def _without_subsumed(found: dict[tuple[str, frozenset[str]], Finding]) -> list[Finding]:
    """The findings, less each one whose medicines another finding of its kind names, and more.

    A combination seen from each of its orders can name different subsets (cyclobenzaprine with
    oxycodone; oxycodone with baclofen and cyclobenzaprine): the fuller card says all the smaller
    one does. A finding tied to one order (its remove or replace action) is always kept.
    """
    return [
        finding
        for (kind, names), finding in found.items()
        if "order" in finding.facts
        or not any(other_kind == kind and names < other for other_kind, other in found)
    ]


# The facts in which a finding names medicines (card text joins several with ", ").
_MEDICINE_FACTS = ("medicine", "partner", "others", "relaxants", "depressants", "medicines")


def _medicines_named(finding: Finding) -> frozenset[str]:
    # Facts name medicines by their catalog display name, joined with ", ": the same medicine reads
    # the same, so the split names compare as they are.
    facts = finding.facts
    names: set[str] = set()
    for fact in _MEDICINE_FACTS:
        value = facts.get(fact)
        if isinstance(value, str):
            names.update(value.split(", "))
    return frozenset(names)


def check_order(ev: Evaluation, ordered: Medicine, others: list[Medicine]) -> list[Finding]:
    """The checks of cards/cards.yaml for one ordered medicine, against the rest of the regimen."""
    order, name, target = ordered.request, ordered.name, ordered.ref

    def ordered_is(vs_id: str) -> bool:
        return ev.is_in(ordered, vs_id)

    # A re-signed order may already be active: it is "not renewed" rather than "removed".
    stop = (
        f"Remove the draft order for {name}" if status(order) == "draft" else f"Do not renew {name}"
    )
    base = {
        "medicine": name,
        "order": target,
        "deletable": valid_id(order.get("id")),
        "stop_label": stop,
    }
    evidence = (f"- ordered: {name} ({order.get('status')}; {target})",)
    found: list[Finding] = []
    older = ev.age is not None and ev.age >= ev.threshold("older-adult-age")

    if older and ordered_is("muscle-relaxants-beers"):
        found.append(
            Finding(
                "beers-muscle-relaxant",
                {**base, "age": str(ev.age), "replaceable": valid_id(order.get("id"))},
                evidence,
            )
        )
    if ordered_is("baclofen"):
        found.extend(medication_safety.baclofen_with_low_egfr(ev, [ordered]))
    partner = _tizanidine_partner(ev, ordered, others)
    if partner:
        found.append(
            Finding(
                "tizanidine-cyp1a2-interaction",
                {**base, "partner": partner.name, "partner_order": partner.ref},
                (
                    *evidence,
                    f"- with: {partner.name} ({partner.request.get('status')}; {partner.ref})",
                ),
            )
        )
    if ordered_is("quinine") and _for_cramps(ev, order):
        found.append(Finding("quinine-for-cramps", base, evidence))
    relaxant = ordered_is("muscle-relaxants")
    if relaxant:
        same = medication_safety.identity(ev, ordered, "muscle-relaxants")
        duplicates = [
            m
            for m in ev.medicines("muscle-relaxants", others)
            if medication_safety.identity(ev, m, "muscle-relaxants") != same
        ]
        if duplicates:
            found.append(
                Finding(
                    "duplicate-muscle-relaxant",
                    {**base, "others": names(duplicates)},
                    (*evidence, *(f"- also: {m.name} ({m.ref})" for m in duplicates)),
                )
            )
    depressant = ordered_is("opioids") or ordered_is("benzodiazepines")
    if relaxant or depressant:
        partners = (
            ev.medicines("opioids", others) + ev.medicines("benzodiazepines", others)
            if relaxant
            else ev.medicines("muscle-relaxants", others)
        )
        if partners:
            relaxants = [ordered] if relaxant else partners
            depressants = partners if relaxant else [ordered]
            found.append(
                Finding(
                    "relaxant-with-cns-depressant",
                    {"relaxants": names(relaxants), "depressants": names(depressants)},
                    (*evidence, *(f"- with: {m.name} ({m.ref})" for m in partners)),
                )
            )
    if ordered_is("cns-active"):
        found.extend(medication_safety.cns_active_burden(ev, [ordered, *others]))
    if ordered_is("carisoprodol"):
        found.append(Finding("carisoprodol-schedule-iv", base, evidence))
    if ordered_is("enzyme-inducing-antiepileptics"):
        found.append(Finding("enzyme-inducing-antiepileptic", {"medicines": name}, evidence))
    if ordered_is("calcium-supplements"):
        found.extend(calcium.supplement_ordered(ev, base, evidence, in_scope(ev)))
    return found


def _tizanidine_partner(
    ev: Evaluation, ordered: Medicine, others: list[Medicine]
) -> Medicine | None:
    """The ciprofloxacin/fluvoxamine (or tizanidine) that makes this order a contraindicated pair."""
    inhibitors = ("ciprofloxacin", "fluvoxamine")
    if ev.is_in(ordered, "tizanidine"):
        partner_sets: tuple[str, ...] = inhibitors
    elif any(ev.is_in(ordered, vs_id) for vs_id in inhibitors):
        partner_sets = ("tizanidine",)
    else:
        return None
    for vs_id in partner_sets:
        for medicine in others:
            if ev.is_in(medicine, vs_id):
                return medicine
    return None


def _for_cramps(ev: Evaluation, order: Resource) -> bool:
    """Quinine is flagged when ordered for cramps: the order's reason, or documented leg cramps."""
    if any(ev.coded(reason, "leg-cramps") for reason in items(order.get("reasonCode"))):
        return True
    return bool(ev.conditions("leg-cramps", active_only=True))
