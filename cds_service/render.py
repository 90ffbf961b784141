"""Findings to CDS Hooks cards, using the text, sources and suggestions of each card kind in cards/."""

from __future__ import annotations

import re
from typing import Any

from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import (
    DETAIL_LIMIT,
    SUMMARY_LIMIT,
    CardKind,
    Phrase,
    Suggestion,
    fill,
)
from cds_service.rules.evaluation import Finding

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}
# SNOMED CT semantic tags (SNOMED CT Editorial Guide, "Semantic tags"): part of a concept's fully
# specified name that EHRs often send as its display ("Cerebrovascular accident (disorder)"); a
# clinician reading a card does not need them.
SEMANTIC_TAG = re.compile(
    r"\s*\((?:administration method|assessment scale|attribute|basic dose form|body structure|"
    r"cell|cell structure|clinical drug|core metadata concept|disorder|disposition|dose form|"
    r"environment|environment / location|ethnic group|event|finding|foundation metadata concept|"
    r"geographic location|inactive concept|intended site|life style|link assertion|"
    r"linkage concept|medicinal product|medicinal product form|metadata|morphologic abnormality|"
    r"namespace concept|navigational concept|observable entity|occupation|organism|person|"
    r"physical force|physical object|procedure|product|product name|qualifier value|"
    r"racial group|record artifact|regime/therapy|release characteristic|religion/philosophy|"
    r"role|situation|social concept|special concept|specimen|staging scale|state of matter|"
    r"substance|supplier|transformation|tumor staging|unit of presentation)\)",
    re.IGNORECASE,
)


def render_cards(
    findings: list[Finding], knowledge: Knowledge, clock: Clock, patient_id: str
) -> list[tuple[dict[str, Any], Finding]]:
    """(card, finding) for each finding, most urgent first (stable within an indicator)."""
    # What order templates may name besides a finding's facts: the same for every card.
    call = {"patient_id": patient_id, "today": clock.now().date().isoformat()}
    cards = [(render_card(f, knowledge.cards[f.kind], clock, call), f) for f in findings]
    for card, _ in cards:  # which content produced it, for the EHR's logs (README, "Versions")
        card["extension"] = knowledge.extension()
    return sorted(cards, key=lambda pair: INDICATOR_ORDER[pair[0]["indicator"]])


def render_card(
    finding: Finding, kind: CardKind, clock: Clock, call: dict[str, str]
) -> dict[str, Any]:
    """One card: summary, Markdown detail with evidence and sources, source, suggestions, reasons.

    `call` holds the call's own template values: `patient_id` and `today`.
    """
    kind = kind.variant(finding.variant)  # the wording (and indicator, sources) it names, if any
    text = kind.text
    facts = {k: untagged(v) if isinstance(v, str) else v for k, v in finding.facts.items()}
    chosen = choose_phrases(kind, facts)
    worded = {**facts, **fill_phrases(chosen, facts)}
    summary = fit_summary(text.summaries, worded)
    shown = [s for s in kind.suggestions if not s.when or facts.get(s.when) is True]
    cited = [p.sources for p in chosen.values()] + [s.sources for s in shown]
    citations, links = kind.cited(sum(cited, ()))
    # Facts come from the patient's record: in the Markdown detail they are literal text (the
    # summary, labels and descriptions are plain text and take them as they are).
    literal = {k: markdown_literal(v) if isinstance(v, str) else v for k, v in facts.items()}
    parts = [fill(text.detail, {**literal, **fill_phrases(chosen, literal)}).strip()]
    room = DETAIL_LIMIT - sum(len(p) + 2 for p in parts) - len(citations)
    if finding.evidence:
        lines = [evidence_line(untagged(line)) for line in finding.evidence]
        parts.append(evidence_block(lines, kind, room))
    parts.append(citations)
    card: dict[str, Any] = {
        "uuid": clock.new_id(),
        "summary": summary,
        "indicator": finding.indicator or kind.indicator,
        "detail": "\n\n".join(parts),
        "source": kind.source,
    }
    suggestions = _suggestions(shown, facts, {**call, **worded}, clock)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = kind.selection_behavior
    if kind.override_reasons:
        card["overrideReasons"] = list(kind.override_reasons)
    if links:
        card["links"] = list(links)
    return card


def evidence_block(lines: list[str], kind: CardKind, room: int) -> str:
    """The Evidence block: as many lines as fit in `room` characters (the first always: the rules
    put the newest or most relevant first), then one line saying how many more are on file."""
    heading = "**Evidence**\n\n"
    shown: list[str] = []
    for index, line in enumerate(lines):
        rest = len(lines) - index - 1
        tail = len(fill(kind.more_evidence, {"count": rest})) + 1 if rest else 0
        too_long = len(heading) + sum(len(s) + 1 for s in shown) + len(line) + tail > room
        if shown and too_long:
            more = fill(kind.more_evidence, {"count": len(lines) - len(shown)})
            return heading + "\n".join([*shown, more])
        shown.append(line)
    return heading + "\n".join(shown)


# CommonMark 0.31 §2.4: a backslash makes any ASCII punctuation character literal. Escaped: the
# characters that start emphasis, code, links, images, raw HTML, entities, headings, tables and
# strikethrough anywhere in a line; a value in a template may also start a line, where
# `-`, `+`, `=` or "1." / "1)" would start a list, a thematic break or a setext heading.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&#!|~])")
BLOCK_START = re.compile(r"^([-+=]|\d{1,9}[.)])(?=\s|$|[-=])")
LINE_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")


def markdown_literal(text: str) -> str:
    """`text` (from the record) written so that a CommonMark renderer shows it as it is: on one
    line, no emphasis, link, image, HTML, heading or list."""
    text = MARKDOWN_SPECIAL.sub(r"\\\1", LINE_BREAKS.sub(" ", text).strip())
    return BLOCK_START.sub(lambda m: m[1][:-1] + "\\" + m[1][-1], text)


def evidence_line(line: str) -> str:
    """An evidence line from a rule (plain text after its `- ` bullet) as a Markdown bullet."""
    if line.startswith("- "):
        return "- " + markdown_literal(line[2:])
    return markdown_literal(line)


def choose_phrases(kind: CardKind, facts: dict[str, Any]) -> dict[str, Phrase]:
    """Each phrase of the card kind in the wording its facts choose (empty when none applies)."""
    return {
        name: next((p for p in options if not p.when or facts.get(p.when) is True), Phrase(""))
        for name, options in kind.phrases.items()
    }


def fill_phrases(chosen: dict[str, Phrase], values: dict[str, Any]) -> dict[str, str]:
    """The chosen wordings with their templates filled from `values`."""
    return {name: fill(phrase.text, values) for name, phrase in chosen.items()}


def untagged(text: str) -> str:
    """Text without SNOMED CT semantic tags."""
    return SEMANTIC_TAG.sub("", text)


def fit_summary(summaries: tuple[str, ...], facts: dict[str, Any]) -> str:
    """The first summary that fits the limit once filled; failing all, the shortest with its
    longest fact shortened at a word (so the action the summary ends with is kept)."""
    for template in summaries:
        summary = str(fill(template, facts))
        if len(summary) <= SUMMARY_LIMIT:
            return summary
    facts = dict(facts)
    while len(summary) > SUMMARY_LIMIT:
        longest = max(
            (k for k, v in facts.items() if isinstance(v, str) and "{" + k + "}" in template),
            key=lambda k: len(facts[k]),
            default=None,
        )
        if longest is None or len(facts[longest]) <= 12:
            return shorten(summary, SUMMARY_LIMIT)
        facts[longest] = shorten(
            facts[longest], len(facts[longest]) - (len(summary) - SUMMARY_LIMIT)
        )
        summary = str(fill(template, facts))
    return summary


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at the end of a word, with an ellipsis (inside
    the first word only when that word alone is longer than the limit)."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 1)]
    if " " in cut and not text[len(cut)].isspace():
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:(") + "…"


def _suggestions(
    shown: list[Suggestion], facts: dict[str, Any], values: dict[str, Any], clock: Clock
) -> list[dict[str, Any]]:
    suggestions = []
    for spec in shown:
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
            "label": fill(spec.label, values),
            "uuid": clock.new_id(),
            "actions": actions,
        }
        if spec.recommended:
            suggestion["isRecommended"] = True
        suggestions.append(suggestion)
    return suggestions
