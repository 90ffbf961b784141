"""Findings to CDS Hooks cards, using the text, sources and suggestions of each card kind in cards/."""

from __future__ import annotations

from typing import Any

from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import CardKind, fill
from cds_service.rules.evaluation import Finding

SUMMARY_LIMIT = 139  # CDS Hooks: "<140-character summary"
INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


def render_cards(
    findings: list[Finding], knowledge: Knowledge, clock: Clock, patient_id: str
) -> list[tuple[dict[str, Any], Finding]]:
    """(card, finding) for each finding, most urgent first (stable within an indicator)."""
    # What order templates may name besides a finding's facts: the same for every card.
    call = {"patient_id": patient_id, "today": clock.now().date().isoformat()}
    cards = [
        (render_card(f, knowledge.cards[f.kind].variant(f.variant), clock, call), f)
        for f in findings
    ]
    return sorted(cards, key=lambda pair: INDICATOR_ORDER[pair[0]["indicator"]])


def render_card(
    finding: Finding, kind: CardKind, clock: Clock, call: dict[str, str]
) -> dict[str, Any]:
    """One card: summary, Markdown detail with evidence and sources, source, suggestions, reasons.

    `call` holds the call's own template values: `patient_id` and `today`.
    """
    summary = fill(kind.summary, finding.facts)
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
    parts = [fill(kind.detail, finding.facts).strip()]
    if finding.evidence:
        parts.append("**Evidence**\n\n" + "\n".join(finding.evidence))
    parts.append(kind.citations)
    card: dict[str, Any] = {
        "uuid": clock.new_id(),
        "summary": summary,
        "indicator": finding.indicator or kind.indicator,
        "detail": "\n\n".join(parts),
        "source": kind.source,
    }
    suggestions = _suggestions(kind, finding, clock, call)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = kind.selection_behavior
    if kind.override_reasons:
        card["overrideReasons"] = list(kind.override_reasons)
    if kind.links:
        card["links"] = list(kind.links)
    return card


def _suggestions(
    kind: CardKind, finding: Finding, clock: Clock, call: dict[str, str]
) -> list[dict[str, Any]]:
    facts = finding.facts
    values = {**call, **facts}
    suggestions = []
    for spec in kind.suggestions:
        if spec.when and facts.get(spec.when) is not True:
            continue
        actions = []
        for action in spec.actions:
            entry: dict[str, Any] = {
                "type": action.type,
                "description": fill(action.description, values),
            }
            if action.resource is not None:
                entry["resource"] = fill(action.resource, values)
            else:
                entry["resourceId"] = str(facts[action.resource_id_fact or ""])
            actions.append(entry)
        suggestion: dict[str, Any] = {
            "label": fill(spec.label, facts),
            "uuid": clock.new_id(),
            "actions": actions,
        }
        if spec.recommended:
            suggestion["isRecommended"] = True
        suggestions.append(suggestion)
    return suggestions
