"""The order-select and order-sign services: medication safety of the medicines being ordered.

Cards concern only the orders under decision: on order-select the `selections`, on order-sign every
MedicationRequest in `draftOrders` (a re-signed order may already be active; cancelled, stopped,
completed or entered-in-error entries are not being signed and are skipped). They are judged against
the patient's age, latest eGFR, current medicines, the other draft orders and diagnoses.
"""

from __future__ import annotations

from typing import NamedTuple

from cds_service.errors import InvalidRequest, Issue
from cds_service.fhir.data import Resource, items, iter_bundle, status, valid_id
from cds_service.knowledge.valuesets import Medicine, ValueSet
from cds_service.rules import medication_safety
from cds_service.rules.base import Finding, HookInput
from cds_service.rules.common import (
    USABLE_RESULT,
    age_years,
    any_coded_in,
    conditions_in,
    current_medications,
    medicine_of,
    reference,
)
from cds_service.rules.patient_view import in_scope

NOT_BEING_SIGNED = {"cancelled", "stopped", "completed", "entered-in-error", "revoked"}


def orders_under_decision(hook: HookInput) -> tuple[list[Resource], list[Resource]]:
    """(the MedicationRequests this call is about, every pending draft order of the session)."""
    drafts = [
        r
        for _, r in iter_bundle(hook.context["draftOrders"])
        if r.get("resourceType") == "MedicationRequest"
    ]
    if hook.hook == "order-select":
        selected = set(hook.context["selections"])
        known = {reference(r) for _, r in iter_bundle(hook.context["draftOrders"])}
        unknown = sorted(selected - known)
        if unknown:
            raise InvalidRequest(
                "selections must name entries of draftOrders",
                [
                    Issue("invalid", f"'{ref}' is not in draftOrders", "$.context.selections")
                    for ref in unknown
                ],
            )
        targets = [r for r in drafts if reference(r) in selected]
    else:
        targets = [r for r in drafts if status(r) not in NOT_BEING_SIGNED]
    pending = [r for r in drafts if status(r) not in NOT_BEING_SIGNED]
    return targets, pending


class Taken(NamedTuple):
    """A medicine the patient would take if the orders are signed, read once per call."""

    ref: str  # `Type/id`
    request: Resource
    medicine: Medicine  # its catalog entry: display name and value sets


def evaluate(hook: HookInput) -> list[Finding]:
    """Every card that applies to the orders under decision."""
    targets, drafts = orders_under_decision(hook)
    record = hook.record
    found: dict[tuple[str, frozenset[str]], Finding] = {}
    # What the patient would take if the orders are signed: current medicines and every other
    # pending draft (two new drugs signed together must be checked against each other).
    regimen = [
        Taken(reference(m), m, medicine_of(record, m))
        for m in [*current_medications(record), *drafts]
    ]
    for order in targets:
        this = Taken(reference(order), order, medicine_of(record, order))
        context = [taken for taken in regimen if taken.ref != this.ref]
        for finding in check_order(hook, this, context):
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


def check_order(hook: HookInput, this: Taken, context: list[Taken]) -> list[Finding]:
    """The checks of cards/cards.yaml for one ordered medicine, against the rest of the regimen."""
    kb = hook.knowledge
    order, ordered, name, target = this.request, this.medicine, this.medicine.name, this.ref

    def ordered_is(vs_id: str) -> bool:
        """Whether the ordered medicine is in the value set."""
        return kb.valueset(vs_id).id in ordered.in_sets

    def taking(vs_id: str) -> list[Taken]:
        """The rest of the regimen in the value set, in regimen order."""
        vs = kb.valueset(vs_id).id
        return [taken for taken in context if vs in taken.medicine.in_sets]

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
    age = age_years(hook)
    older = age is not None and age >= kb.threshold("older-adult-age")

    if older and ordered_is("muscle-relaxants-beers"):
        found.append(
            Finding(
                "beers-muscle-relaxant",
                {**base, "age": str(age), "replaceable": valid_id(order.get("id"))},
                evidence,
            )
        )
    if ordered_is("baclofen"):
        found.extend(medication_safety.baclofen_with_low_egfr(hook, [order]))
    interacting = _tizanidine_partner(hook, ordered, context)
    if interacting:
        found.append(
            Finding(
                "tizanidine-cyp1a2-interaction",
                {**base, "partner": interacting.medicine.name, "partner_order": interacting.ref},
                (
                    *evidence,
                    f"- with: {interacting.medicine.name} "
                    f"({interacting.request.get('status')}; {interacting.ref})",
                ),
            )
        )
    if ordered_is("quinine") and _for_cramps(hook, order):
        found.append(Finding("quinine-for-cramps", base, evidence))
    relaxant = ordered_is("muscle-relaxants")
    if relaxant:
        others = [t for t in taking("muscle-relaxants") if not _same_drug(hook, t.request, order)]
        if others:
            found.append(
                Finding(
                    "duplicate-muscle-relaxant",
                    {**base, "others": _names(others)},
                    (*evidence, *(f"- also: {t.medicine.name} ({t.ref})" for t in others)),
                )
            )
    depressant = ordered_is("opioids") or ordered_is("benzodiazepines")
    if relaxant or depressant:
        partners = (
            (taking("opioids") + taking("benzodiazepines"))
            if relaxant
            else taking("muscle-relaxants")
        )
        if partners:
            relaxants = [this] if relaxant else partners
            depressants = partners if relaxant else [this]
            found.append(
                Finding(
                    "relaxant-with-cns-depressant",
                    {"relaxants": _names(relaxants), "depressants": _names(depressants)},
                    (*evidence, *(f"- with: {t.medicine.name} ({t.ref})" for t in partners)),
                )
            )
    if ordered_is("cns-active"):
        regimen = [order, *(t.request for t in context)]
        found.extend(medication_safety.cns_active_burden(hook, regimen))
    if ordered_is("carisoprodol"):
        found.append(Finding("carisoprodol-schedule-iv", base, evidence))
    if ordered_is("enzyme-inducing-antiepileptics"):
        found.append(Finding("enzyme-inducing-antiepileptic", {"medicines": name}, evidence))
    if ordered_is("calcium-supplements") and in_scope(hook) and not _any_calcium_result(hook):
        found.append(Finding("calcium-order-without-result", base, evidence))
    return found


def _names(regimen: list[Taken]) -> str:
    """Card text naming medicines: each display name once, sorted."""
    return ", ".join(sorted({taken.medicine.name for taken in regimen}))


def _tizanidine_partner(hook: HookInput, ordered: Medicine, context: list[Taken]) -> Taken | None:
    """The ciprofloxacin/fluvoxamine (or tizanidine) that makes this order a contraindicated pair."""
    kb = hook.knowledge
    tizanidine = kb.valueset("tizanidine")
    inhibitors = kb.valueset("ciprofloxacin"), kb.valueset("fluvoxamine")
    if tizanidine.id in ordered.in_sets:
        partner_sets: tuple[ValueSet, ...] = inhibitors
    elif any(vs.id in ordered.in_sets for vs in inhibitors):
        partner_sets = (tizanidine,)
    else:
        return None
    for vs in partner_sets:
        for taken in context:
            if vs.id in taken.medicine.in_sets:
                return taken
    return None


def _for_cramps(hook: HookInput, order: Resource) -> bool:
    """Quinine is flagged when ordered for cramps: the order's reason, or documented leg cramps."""
    cramps = hook.knowledge.valueset("leg-cramps")
    if any(cramps.matches(reason) for reason in items(order.get("reasonCode"))):
        return True
    return bool(conditions_in(hook.record, cramps, active_only=True))


def _same_drug(hook: HookInput, a: Resource, b: Resource) -> bool:
    vs = hook.knowledge.valueset("muscle-relaxants")
    return medication_safety.identity(hook, a, vs) == medication_safety.identity(hook, b, vs)


def _any_calcium_result(hook: HookInput) -> bool:
    calcium = hook.knowledge.valueset("calcium-any")
    return any_coded_in(
        hook.record, hook.record.observations, calcium, lambda r: status(r) in USABLE_RESULT
    )
