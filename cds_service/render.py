"""Findings to CDS Hooks cards, using the text, sources and suggestions of each card kind in cards/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import fill_template
from cds_service.rules.base import Finding

CARD_KIND_SYSTEM = "urn:leg-cramps-cds:card-kind"
SUMMARY_LIMIT = 139  # CDS Hooks: "<140-character summary"
INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}
ADVISORY = "_Advisory only: this card supports, and does not replace, clinical judgement._"


class _Facts(dict[str, Any]):
    """Template facts; a fact a template names but the finding lacks renders visibly, not as a crash."""

    def __missing__(self, key: str) -> str:
        return f"[{key}?]"


def render_cards(
    findings: list[Finding], knowledge: Knowledge, clock: Clock, patient_id: str
) -> list[tuple[dict[str, Any], Finding]]:
    """(card, finding) for each finding, most urgent first (stable within an indicator)."""
    if not findings:
        return []
    # What suggestion templates may name besides a finding's facts: the same for every card.
    call = {"patient_id": patient_id, "today": clock.now().date().isoformat()}
    cards = [(render_card(f, knowledge, clock, call), f) for f in findings]
    return sorted(cards, key=lambda pair: INDICATOR_ORDER[pair[0]["indicator"]])


def render_card(
    finding: Finding, knowledge: Knowledge, clock: Clock, call: dict[str, str]
) -> dict[str, Any]:
    """One card: summary, Markdown detail with evidence and sources, source, suggestions, reasons.

    `call` holds the call's own template values: `patient_id` and `today`.
    """
    kind = knowledge.cards[finding.kind]
    fixed = _fixed_parts(finding.kind, kind, knowledge)
    facts = _Facts(finding.facts)
    summary = kind["summary"].format_map(facts)
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
    parts = [kind["detail"].format_map(facts).strip()]
    if finding.evidence:
        parts.append("**Evidence**\n\n" + "\n".join(finding.evidence))
    parts.append(fixed.sources)
    card: dict[str, Any] = {
        "uuid": clock.new_id(),
        "summary": summary,
        "indicator": finding.indicator or kind["indicator"],
        "detail": "\n\n".join(parts),
        "source": fixed.source,
    }
    suggestions = _suggestions(kind, finding, facts, knowledge, clock, call)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = kind.get("selection_behavior", "any")
    if fixed.override_reasons:
        card["overrideReasons"] = fixed.override_reasons
    if fixed.links:
        card["links"] = fixed.links
    return card


@dataclass(frozen=True)
class _FixedParts:
    """What every card of a kind says whatever the patient: built once per kind, shared by its cards
    (a card is serialised as it is returned, never changed afterwards)."""

    sources: str
    source: dict[str, Any]
    override_reasons: list[dict[str, str]]
    links: list[dict[str, str]]


# Card kind dict (by id) -> what the parts were built from (held, so ids stay theirs) and the parts.
_FIXED: dict[int, tuple[tuple[Any, ...], _FixedParts]] = {}


def _fixed_parts(kind_id: str, kind: dict[str, Any], knowledge: Knowledge) -> _FixedParts:
    inputs = (
        kind,
        kind["sources"],
        kind["source"],
        kind.get("override_reasons"),
        kind.get("links"),
        knowledge.sources,
        knowledge.override_reasons,
    )
    known = _FIXED.get(id(kind))
    if known is not None and known[0] == inputs:  # tuples compare items by identity first
        return known[1]
    citations = [f"- {knowledge.sources[key]['citation']}" for key in kind["sources"]]
    table = knowledge.override_reasons
    parts = _FixedParts(
        sources="**Sources**\n\n" + "\n".join(citations) + "\n\n" + ADVISORY,
        source=_source(kind_id, kind),
        override_reasons=[
            {"system": table["system"], "code": code, "display": table["codes"][code]}
            for code in kind.get("override_reasons") or ()
        ],
        links=[
            {"label": link["label"], "url": link["url"], "type": "absolute"}
            for link in kind.get("links") or ()
        ],
    )
    _FIXED[id(kind)] = (inputs, parts)
    return parts


def _source(kind_id: str, kind: dict[str, Any]) -> dict[str, Any]:
    spec = kind["source"]
    source: dict[str, Any] = {
        "label": spec["label"],
        "topic": {
            "system": CARD_KIND_SYSTEM,
            "code": spec["topic"]["code"],
            "display": spec["topic"]["display"],
        },
    }
    if spec.get("url"):
        source["url"] = spec["url"]
    return source


def _suggestions(
    kind: dict[str, Any],
    finding: Finding,
    facts: _Facts,
    knowledge: Knowledge,
    clock: Clock,
    call: dict[str, str],
) -> list[dict[str, Any]]:
    specs = kind.get("suggestions")
    if not specs:
        return []
    fill = {**call, **{k: str(v) for k, v in finding.facts.items()}}
    suggestions = []
    for spec in specs:
        condition = spec.get("when")
        if condition and finding.facts.get(condition) is not True:
            continue
        actions = []
        for action in spec["actions"]:
            entry: dict[str, Any] = {
                "type": action["type"],
                "description": fill_template(action["description"], fill),
            }
            if action["type"] == "create":
                entry["resource"] = fill_template(
                    knowledge.orders[action["resource"]]["resource"], fill
                )
            else:
                entry["resourceId"] = str(finding.facts[action["resource_id_fact"]])
            actions.append(entry)
        suggestion: dict[str, Any] = {
            "label": spec["label"].format_map(facts),
            "uuid": clock.new_id(),
            "actions": actions,
        }
        if spec.get("recommended"):
            suggestion["isRecommended"] = True
        suggestions.append(suggestion)
    return suggestions
