"""The card gallery: every card kind, rendered from a scenario fixture, on one static page for sign-off."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from cds_service.clock import fixed_clock
from cds_service.fhir.record import record_from_prefetch
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import CardKind, fill
from cds_service.render import INDICATOR_ORDER, render_cards
from cds_service.rules import RULES, Evaluation, Finding

# The instant a scenario without its own `now` is evaluated at: the scenario tests' clock
# (tests/conftest.py NOW; a test checks the two agree).
SCENARIO_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PAGE = "index.html"
# Card details are Markdown (CommonMark and GFM tables). Raw HTML is not rendered: facts quote
# patient records (an EEG report's sentence), which must show as text.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


class GalleryError(Exception):
    """The gallery cannot show every card kind (a kind or variant no scenario raises)."""


@dataclass(frozen=True)
class Scenario:
    """A scenario fixture: where it is, what it says it tests, and when it is evaluated."""

    name: str  # the file's stem
    title: str
    why: str
    now: datetime
    service: str
    hook: str


@dataclass(frozen=True)
class Example:
    """One card as a scenario's record makes the rules raise it and the service render it."""

    kind: CardKind  # the kind's wording this card used (its variant, if the rule named one)
    variant: str | None
    card: dict[str, Any]
    finding: Finding
    scenario: Scenario


def examples(knowledge: Knowledge, scenario_dir: Path) -> list[Example]:
    """One example per card kind, variant and indicator (each renders differently), in cards.yaml
    order; of the scenarios raising one, the card offering the most suggestions, then the first
    file by name. Raises GalleryError naming every kind or variant no scenario raises."""
    best: dict[tuple[str, str | None, str], Example] = {}
    for example in scenario_examples(knowledge, scenario_dir):
        key = (example.finding.kind, example.variant, example.card["indicator"])
        shown = best.get(key)
        if shown is None or _offered(example) > _offered(shown):
            best[key] = example
    raised = {(kind, variant) for kind, variant, _ in best}
    wanted = [
        (key, variant)
        for key, kind in knowledge.cards.items()
        for variant in (None, *kind.variants)
    ]
    missing = [f"{k}" + (f" (variant {v})" if v else "") for k, v in wanted if (k, v) not in raised]
    if missing:
        raise GalleryError(
            f"no scenario in {scenario_dir} raises: {', '.join(missing)} (add one to "
            "fixtures/scenarios)"
        )
    order = {kv: i for i, kv in enumerate(wanted)}
    return sorted(
        best.values(),
        key=lambda e: (order[(e.finding.kind, e.variant)], INDICATOR_ORDER[e.card["indicator"]]),
    )


def _offered(example: Example) -> int:
    return len(example.card.get("suggestions", []))


def scenario_examples(knowledge: Knowledge, scenario_dir: Path) -> Iterable[Example]:
    """Every card of every scenario answered with cards, evaluated as tests/rules/test_facts.py
    does: the scenario's prefetch as the record, the rules at its `now`, the service's renderer."""
    for path in sorted(scenario_dir.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        request = document["request"]
        if document["expect"].get("status", 200) != 200 or "prefetch" not in request:
            continue
        service_id = document.get("service")
        service = next(
            s
            for s in knowledge.services
            if s.hook == request["hook"] and service_id in (None, s.id)
        )
        now = datetime.fromisoformat(document["now"]) if "now" in document else SCENARIO_NOW
        scenario = Scenario(
            path.stem, document["title"], document["why"], now, service.id, service.hook
        )
        context = request["context"]
        record = record_from_prefetch(context["patientId"], request["prefetch"])
        findings = RULES[service.rules](
            Evaluation(request["hook"], context, record, knowledge, now)
        )
        rendered = render_cards(findings, knowledge, fixed_clock(now), context["patientId"])
        for card, finding in rendered:
            kind = knowledge.cards[finding.kind].variant(finding.variant)
            yield Example(kind, finding.variant, card, finding, scenario)


def write_gallery(
    knowledge: Knowledge,
    scenario_dir: Path,
    out_dir: Path,
    modes: dict[str, str] | None = None,
) -> Path:
    """Write the gallery page into `out_dir` (created if needed); returns the page's path.
    `modes`: the deployment's CDS_CARD_MODES, if set (ValueError naming an unknown kind)."""
    page = render_page(knowledge, examples(knowledge, scenario_dir), modes)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / PAGE
    target.write_text(page, encoding="utf-8")
    return target


def render_page(
    knowledge: Knowledge, shown: list[Example], modes: dict[str, str] | None = None
) -> str:
    """The gallery's HTML: one file, its style and script inline, nothing fetched. Each kind's
    mode is the one the deployment runs: cards.yaml's, unless `modes` (CDS_CARD_MODES) names it."""
    modes = modes or {}
    deployed = knowledge.with_modes(modes)
    groups: dict[str, list[dict[str, Any]]] = {}
    for key, kind in knowledge.cards.items():  # causes in the order cards.yaml first names them
        kind_examples = [_view(knowledge, e) for e in shown if e.finding.kind == key]
        groups.setdefault(kind.cause, []).append(
            {
                "key": key,
                "title": kind.source["topic"]["display"],
                "indicator": kind.indicator,
                "snooze_days": kind.snooze_days,
                "mode": deployed.cards[key].mode,
                "mode_from": "CDS_CARD_MODES" if key in modes else "cards.yaml",
                "variants": list(kind.variants),
                "examples": kind_examples,
            }
        )
    assets = resources.files(__name__)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__name__, "."),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("page.html.j2").render(
        groups=[
            {"cause": cause, "title": cause.replace("-", " ").capitalize(), "kinds": kinds}
            for cause, kinds in groups.items()
        ],
        version=knowledge.version,
        content_hash=knowledge.content_hash,
        card_modes=", ".join(f"{k}={v}" for k, v in modes.items()),
        kind_count=len(knowledge.cards),
        example_count=len(shown),
        css=assets.joinpath("gallery.css").read_text(encoding="utf-8"),
        js=assets.joinpath("gallery.js").read_text(encoding="utf-8"),
    )


def _view(knowledge: Knowledge, example: Example) -> dict[str, Any]:
    """What the template shows of one example: the card as an EHR would, and why it fired."""
    card = example.card
    facts = example.finding.facts
    return {
        "variant": example.variant,
        "card": card,
        "detail_html": Markup(_MARKDOWN.render(card["detail"])),
        "suggestions": [
            {**s, "actions": [_action(a) for a in s["actions"]]}
            for s in card.get("suggestions", [])
        ],
        # Offered when their `when` fact is true: the committee signs off on them too.
        "not_offered": [
            {"label": fill(s.label, facts), "when": s.when}
            for s in example.kind.suggestions
            if s.when and facts.get(s.when) is not True
        ],
        "scenario": example.scenario,
        "facts": facts,
        # The loader has checked that every source a kind cites is in sources.yaml.
        "citations": [{"key": k, **knowledge.sources[k]} for k in example.kind.sources],
    }


def _action(action: dict[str, Any]) -> dict[str, Any]:
    """A suggestion's action as a reader needs it: create or delete, and what exactly."""
    view: dict[str, Any] = {"type": action["type"], "description": action["description"]}
    if "resourceId" in action:
        view["target"] = action["resourceId"]
        return view
    resource = action["resource"]
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    view["resource_type"] = resource["resourceType"]
    view["status"] = f"{resource.get('status', '')} {resource.get('intent', '')}".strip()
    view["codings"] = concept.get("coding", [])
    view["text"] = concept.get("text")
    view["dosage"] = [_dosage(d) for d in resource.get("dosageInstruction", [])]
    return view


def _dosage(dosage: dict[str, Any]) -> dict[str, str]:
    """A dosage's text and, beside it, what its structured fields say (they should agree)."""
    parts = []
    for dose in dosage.get("doseAndRate", []):
        quantity = dose.get("doseQuantity") or {}
        if quantity:
            parts.append(f"{quantity.get('value', '')} {quantity.get('unit', '')}".strip())
    repeat = (dosage.get("timing") or {}).get("repeat") or {}
    if repeat.get("frequency"):
        parts.append(
            f"{repeat['frequency']} times per {repeat.get('period', 1)} {repeat.get('periodUnit', '')}"
        )
    parts += [c["display"] for c in (dosage.get("route") or {}).get("coding", []) if "display" in c]
    return {"text": dosage.get("text", ""), "structured": ", ".join(parts)}
