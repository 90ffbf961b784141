"""The order-select and order-sign services: medication safety of the medicines being ordered.

Cards concern only the orders under decision: on order-select the `selections`, on order-sign every
MedicationRequest in `draftOrders` (a re-signed order may already be active; cancelled, stopped,
completed or entered-in-error entries are not being signed and are skipped). They are judged against
the patient's age, latest eGFR, current medicines, the other draft orders and diagnoses, by the
medication-safety checks patient-view runs too, plus those that concern ordering only.
"""

from __future__ import annotations

from cds_service.fhir.data import Resource, items, iter_bundle, status
from cds_service.rules import calcium, medication_safety
from cds_service.rules.evaluation import Evaluation, Finding, Medicine, reference
from cds_service.rules.patient_view import cramps_documented, in_scope

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
    ordered = list(map(ev.medicine, targets))
    # What the patient would take if the orders are signed: current medicines and every pending
    # draft (two new drugs signed together must be checked against each other).
    regimen = [*ev.current_medicines, *map(ev.medicine, drafts)]
    found = medication_safety.review(ev, ordered, regimen)
    for order in ordered:
        found.extend(check_order(ev, order))
    return found


def check_order(ev: Evaluation, ordered: Medicine) -> list[Finding]:
    """The checks that concern ordering only, for one ordered medicine."""
    name = ordered.name
    evidence = (f"- ordered: {name} ({ordered.request.get('status')}; {ordered.ref})",)
    base = medication_safety.stop_facts(ev, ordered)
    found: list[Finding] = []

    def ordered_is(vs_id: str) -> bool:
        return ev.is_in(ordered, vs_id)

    if ordered_is("quinine") and _for_cramps(ev, ordered.request):
        found.append(Finding("quinine-for-cramps", base, evidence))
    if ordered_is("carisoprodol"):
        found.append(Finding("carisoprodol-schedule-iv", base, evidence))
    if ordered_is("enzyme-inducing-antiepileptics"):
        found.append(Finding("enzyme-inducing-antiepileptic", {"medicines": name}, evidence))
    if ordered_is(calcium.RAISE_CALCIUM):
        # The "no calcium result" reminder is for calcium ordered for cramps; the high-calcium
        # warning is for vitamin D alone too.
        remind = ordered_is("calcium-supplements") and in_scope(ev)
        found.extend(calcium.supplement_ordered(ev, ordered, base, evidence, remind))
    return found


def _for_cramps(ev: Evaluation, order: Resource) -> bool:
    """Quinine is flagged when ordered for cramps: the order's reason, or documented leg cramps."""
    if any(ev.coded(reason, "leg-cramps") for reason in items(order.get("reasonCode"))):
        return True
    return cramps_documented(ev)  # coded or written, as on patient-view
