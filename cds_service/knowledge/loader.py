"""Loads cards/ (YAML), validates every file against its JSON Schema and cross-checks references."""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from cds_service.clinical_text import (
    LEXICON_FILE,
    EegLexicon,
    EegLexiconError,
    load_eeg_lexicon,
)
from cds_service.knowledge.valuesets import Key, ValueSet, code_keys, normalize_code

# `{codes:a,b}` in a prefetch query: the codes of those value sets as a FHIR token OR-list.
CODES_TOKEN = re.compile(r"(?<!\{)\{codes:([a-z0-9,\-]+)\}(?!\})")
# Observation/report codes the prefetch filters on; medicine and ICD codes are never used in filters.
PREFETCH_SYSTEMS = {"http://loinc.org", "http://snomed.info/sct", "http://www.ama-assn.org/go/cpt"}
# The code system of a card's topic, whose codes are the card kinds.
CARD_KIND_SYSTEM = "urn:leg-cramps-cds:card-kind"
# What an order template may name besides a finding's facts: filled in for each call.
CALL_VALUES = ("patient_id", "today")
# The files of cards/ read by name (each checked against schemas/<name>.schema.json); beside them
# valuesets/*.yaml and eeg-reading.yaml.
DOCUMENTS = ("version", "sources", "thresholds", "services", "cards", "orders")
# The CDS Hooks 2.0 extension member (cards, discovery) naming the knowledge that produced a card.
KNOWLEDGE_EXTENSION = "leg-cramps-cds.knowledge"
# CDS Hooks 2.0 Card.summary: "<140-character summary message".
SUMMARY_LIMIT = 139
# Issue 18 item 7: a card's detail (evidence and reasoning) is read in five seconds.
DETAIL_LIMIT = 999


class KnowledgeError(Exception):
    """The knowledge base is invalid; `problems` lists each finding as 'file: path: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"{len(problems)} problem(s) in the knowledge base:\n" + "\n".join(problems)
        )
        self.problems = problems


# The evidence lines of cards.yaml the rules add, with the values each may name.
EVIDENCE_LINES = {"dxa_due": {"age"}}


@dataclass(frozen=True)
class Threshold:
    """A clinical threshold or window with its unit and source."""

    id: str
    value: float
    unit: str
    source: str
    note: str


@dataclass(frozen=True)
class PrefetchTemplate:
    """One entry of a service's `prefetch` map (CDS Hooks §Prefetch Template)."""

    key: str
    query: str
    required: bool = True


@dataclass(frozen=True)
class Service:
    """One discovery entry, and the rule set (cds_service.rules.RULES) that answers it."""

    id: str
    hook: str
    title: str
    description: str
    rules: str
    prefetch: tuple[PrefetchTemplate, ...]
    usage_requirements: str | None = None

    def discovery(self) -> dict[str, Any]:
        """The service as listed by GET /cds-services."""
        entry: dict[str, Any] = {
            "id": self.id,
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "prefetch": {t.key: t.query for t in self.prefetch},
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


@dataclass(frozen=True)
class Action:
    """A suggestion's action: create a resource from an order template, or delete the resource a
    fact names."""

    type: str
    description: str  # a template
    resource: dict[str, Any] | None = None  # the order template, for a create
    resource_id_fact: str | None = None  # the fact holding `Type/id`, for a delete


@dataclass(frozen=True)
class Suggestion:
    """A suggestion a card kind may carry; shown only when its `when` fact is True."""

    label: str  # a template
    actions: tuple[Action, ...]
    when: str | None = None
    recommended: bool = False
    sources: tuple[str, ...] = ()  # keys of sources.yaml cited when it is shown


@dataclass(frozen=True)
class Text:
    """What a card says: summary templates (longest first; the first that fits is shown) and the
    detail template."""

    summaries: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class Phrase:
    """One wording of a sentence a card's text names: used when its `when` fact is true (or always)."""

    text: str  # a template
    when: str | None = None
    sources: tuple[str, ...] = ()  # keys of sources.yaml cited when this wording is shown


@dataclass(frozen=True)
class CardKind:
    """Everything fixed about one kind of card, worked out once at load."""

    key: str
    cause: str
    indicator: str
    text: Text
    phrases: dict[str, tuple[Phrase, ...]]  # sentences named in the text, chosen by facts
    facts: tuple[str, ...]  # the facts its templates and suggestions may name
    sources: tuple[str, ...]  # keys of sources.yaml
    citations: str  # the Markdown block closing the detail: its sources' citations, the advisory
    more_evidence: str  # the evidence line standing for lines left out, naming {count}
    source: dict[str, Any]  # the card's `source`, its topic coded with the kind's key
    suggestions: tuple[Suggestion, ...]
    selection_behavior: str
    override_reasons: tuple[dict[str, str], ...]
    links: tuple[dict[str, str], ...]
    snooze_days: int
    # The short citation and address of each source its phrases may add (sources.yaml keys).
    references: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # Named alternatives a rule may choose (Finding.variant): the same kind with other wording,
    # and possibly another indicator and sources (e.g. the label's text below the Beers age).
    variants: dict[str, CardKind] = field(default_factory=dict)
    # silent: recorded as issued but not returned (a committee's trial run); README, "Silent mode".
    mode: str = "active"

    def variant(self, name: str | None) -> CardKind:
        """This kind, or its named variant (an unknown name is a programming error the tests catch)."""
        return self if name is None else self.variants[name]

    def cited(self, added: tuple[str, ...]) -> tuple[str, tuple[dict[str, str], ...]]:
        """The closing citations and the links, with the sources of the phrases shown (`added`)
        after the kind's own: a source is cited only on a card that shows what it supports."""
        extra = [k for k in dict.fromkeys(added) if k not in self.sources and k in self.references]
        if not extra:
            return self.citations, self.links
        shorts = [self.references[k][0] for k in extra]
        head, advisory = self.citations.split(".\n\n", 1)
        citations = f"{'; '.join([head, *shorts])}.\n\n{advisory}"
        known = {link["url"] for link in self.links}
        links = [*self.links]
        for k in extra:
            short, url = self.references[k]
            if url and url not in known:
                known.add(url)
                links.append({"label": short, "url": url, "type": "absolute"})
        return citations, tuple(links)


@dataclass(frozen=True)
class Knowledge:
    """Everything in cards/, ready for the rules and the card renderer."""

    sources: dict[str, dict[str, str]]
    systems: dict[str, str]  # every URI a code system may arrive with -> its canonical URI
    valuesets: dict[str, ValueSet]
    thresholds: dict[str, Threshold]
    cards: dict[str, CardKind]
    orders: dict[str, dict[str, Any]]
    services: tuple[Service, ...]
    eeg_reading: EegLexicon  # how EEG report text is read (cards/eeg-reading.yaml)
    directory: Path = field(default=Path("cards"))
    version: str = ""  # cards/version.yaml: what an editor declares
    content_hash: str = ""  # sha256 of the files read (content_hash()): what was actually loaded

    def extension(self) -> dict[str, Any]:
        """The `extension` member of every card and discovery entry: this content's version and hash
        (a new dict each time: the caller owns it)."""
        return {KNOWLEDGE_EXTENSION: {"version": self.version, "contentHash": self.content_hash}}

    def with_modes(self, modes: dict[str, str]) -> Knowledge:
        """This knowledge with the mode of some card kinds replaced (a deployment's CDS_CARD_MODES);
        ValueError naming any kind that does not exist."""
        unknown = sorted(set(modes) - self.cards.keys())
        if unknown:
            raise ValueError(
                f"unknown card kind(s) {', '.join(unknown)}; the kinds are: {', '.join(self.cards)}"
            )
        cards = {k: replace(c, mode=modes.get(k, c.mode)) for k, c in self.cards.items()}
        return replace(self, cards=cards)

    def silent_kinds(self) -> list[str]:
        """The card kinds recorded but not shown."""
        return sorted(k for k, c in self.cards.items() if c.mode == "silent")

    # Evidence lines that state what is missing from the record (cards.yaml evidence_lines).
    evidence_lines: dict[str, str] = field(default_factory=dict)

    def valueset(self, vs_id: str) -> ValueSet:
        """The value set with this id (a missing id is a programming error caught by the tests)."""
        return self.valuesets[vs_id]

    def threshold(self, threshold_id: str) -> float:
        """The numeric value of a threshold."""
        return self.thresholds[threshold_id].value

    def code_keys(self, concept: Any) -> frozenset[Key]:
        """The (canonical system, normalised code) keys of a CodeableConcept or a list of them."""
        return code_keys(concept, self.systems)


def fill(template: Any, values: dict[str, Any]) -> Any:
    """A copy of a template (a string, or a resource template) with each `{name}` filled from
    `values`; a name without a value shows as `[name?]` rather than failing the call."""
    if isinstance(template, str):
        return template.format_map(_Values(values))
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    return template


class _Values(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return f"[{key}?]"


def placeholders(template: Any) -> set[str]:
    """The names a template's `{name}` placeholders use (ValueError if it is not a valid template)."""
    if isinstance(template, list):
        return set().union(*map(placeholders, template))
    if isinstance(template, dict):
        return set().union(*map(placeholders, template.values()))
    if not isinstance(template, str):
        return set()
    names = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"'{{{written}}}' is not a plain {{name}} placeholder")
        names.add(name)
    return names


@cache
def _validator(name: str) -> Draft202012Validator:
    text = (
        resources.files("cds_service.knowledge").joinpath(f"schemas/{name}.schema.json").read_text()
    )
    return Draft202012Validator(json.loads(text))


def _read_yaml(path: Path, problems: list[str]) -> Any:
    if path.exists() and not path.is_file():  # a FIFO would block the read for ever
        problems.append(f"{path.name}: cannot be read: not a regular file")
        return None
    try:
        # libyaml's loader when installed: it reads cards/ about ten times faster (start-up, tests).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    # ValueError: not UTF-8 (UnicodeDecodeError), or an integer past Python's digit limit.
    except (OSError, ValueError, yaml.YAMLError) as exc:
        problems.append(f"{path.name}: cannot be read: {exc}")
        return None
    if document is None:  # an empty file (or a bare null) would otherwise pass unnoticed
        problems.append(f"{path.name}: is empty")
    return document


def _check(path: Path, document: Any, schema: str, problems: list[str]) -> bool:
    errors = sorted(_validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"{path.name}: {where}: {error.message[:200]}")
    return not errors


def load_knowledge(directory: Path) -> Knowledge:
    """The knowledge base in `directory`, or KnowledgeError listing every problem found."""
    problems: list[str] = []
    directory = Path(directory)
    if not directory.is_dir():
        raise KnowledgeError(
            [f"{directory}: knowledge directory not found (set CDS_KNOWLEDGE_DIR)"]
        )

    docs: dict[str, Any] = {}
    for name in DOCUMENTS:
        path = directory / f"{name}.yaml"
        doc = _read_yaml(path, problems)
        if doc is not None and _check(path, doc, name, problems):
            docs[name] = doc
    raw_sets: dict[str, dict[str, Any]] = {}
    for path in sorted((directory / "valuesets").glob("*.yaml")):
        doc = _read_yaml(path, problems)
        if doc is None or not _check(path, doc, "valueset", problems):
            continue
        if doc["id"] != path.stem:
            problems.append(f"{path.name}: id '{doc['id']}' does not match the file name")
        raw_sets[doc["id"]] = doc
    if problems:
        raise KnowledgeError(problems)

    sources_doc = docs["sources"]
    sources = sources_doc["sources"]

    def cite(where: str, key: str) -> None:
        if key not in sources:
            problems.append(f"{where}: source '{key}' is not in sources.yaml")

    valuesets = _build_valuesets(raw_sets, sources_doc["systems"], cite, problems)

    thresholds = {}
    for tid, row in docs["thresholds"]["thresholds"].items():
        cite(f"thresholds.yaml: {tid}", row["source"])
        thresholds[tid] = Threshold(
            tid, float(row["value"]), row["unit"], row["source"], row["note"]
        )

    orders = docs["orders"]["orders"]
    for oid, order in orders.items():
        for key in order["sources"]:
            cite(f"orders.yaml: {oid}", key)
    _check_order_codes(orders, raw_sets, sources_doc, problems)

    cards_doc = docs["cards"]
    try:
        extra = placeholders(cards_doc["more_evidence"]) - {"count"}
    except ValueError as exc:
        extra = set()
        problems.append(f"cards.yaml: more_evidence: {exc}")
    for name in sorted(extra):
        problems.append(f"cards.yaml: more_evidence names '{{{name}}}'; it may name only {{count}}")
    lines = cards_doc.get("evidence_lines", {})
    for name, allowed in EVIDENCE_LINES.items():
        if name not in lines:
            problems.append(f"cards.yaml: evidence_lines: '{name}' is missing (a rule adds it)")
            continue
        try:
            named = placeholders(lines[name])
        except ValueError as exc:
            problems.append(f"cards.yaml: evidence_lines: {name}: {exc}")
            continue
        for extra_name in sorted(named - allowed):
            problems.append(f"cards.yaml: evidence_lines: {name} names '{{{extra_name}}}'")
    cite("cards.yaml: override_reasons", cards_doc["override_reasons"]["source"])
    cards = {
        key: _card_kind(key, card, cards_doc, sources, orders, cite, problems)
        for key, card in cards_doc["cards"].items()
    }

    def expand_codes(query: str, where: str) -> str:
        def codes(match: re.Match[str]) -> str:
            listed: list[str] = []
            for vs_id in match.group(1).split(","):
                vs = valuesets.get(vs_id.strip())
                if vs is None:
                    problems.append(f"{where}: prefetch names unknown value set '{vs_id}'")
                    continue
                listed.extend(
                    f"{system}|{code}"
                    for system, code in sorted(vs.codes)
                    if system in PREFETCH_SYSTEMS
                )
            return ",".join(dict.fromkeys(listed))

        return CODES_TOKEN.sub(codes, query)

    services = tuple(
        Service(
            id=s["id"],
            hook=s["hook"],
            title=s["title"],
            description=s["description"],
            rules=s["rules"],
            usage_requirements=s.get("usageRequirements"),
            prefetch=tuple(
                PrefetchTemplate(
                    key, expand_codes(p["query"], f"services.yaml: {s['id']}"), p["required"]
                )
                for key, p in s["prefetch"].items()
            ),
        )
        for s in docs["services"]["services"]
    )
    # A service id is the {id} of its URL: one id for two hooks makes that URL ambiguous, and
    # clients that keep services by URL (the CDS Hooks sandbox) lose one of them.
    ids = [s.id for s in services]
    for twice in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"services.yaml: service id '{twice}' is listed more than once")

    try:
        eeg_reading = load_eeg_lexicon(directory, sources.keys())
    except EegLexiconError as exc:
        problems.extend(exc.problems)
    if problems:
        raise KnowledgeError(problems)
    return Knowledge(
        sources=sources,
        systems=_system_names(sources_doc),
        valuesets=valuesets,
        thresholds=thresholds,
        cards=cards,
        orders=orders,
        services=services,
        eeg_reading=eeg_reading,
        directory=directory,
        version=docs["version"]["version"],
        content_hash=content_hash(directory),
        evidence_lines=dict(cards_doc.get("evidence_lines", {})),
    )


def content_hash(directory: Path) -> str:
    """SHA-256 (hex) of every file the loader reads, in sorted order of their paths relative to
    `directory`, each as its path, its length and its bytes (so no two file sets hash alike).

    The version says what an editor declared; the hash says what was loaded, so two deployments
    with the same version and different files (an unbumped edit, a local change) tell apart."""
    paths = [
        *(f"{name}.yaml" for name in DOCUMENTS),
        LEXICON_FILE,
        *(f"valuesets/{p.name}" for p in (directory / "valuesets").glob("*.yaml")),
    ]
    digest = hashlib.sha256()
    for relative in sorted(paths):
        data = (directory / relative).read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _card_kind(
    key: str,
    card: dict[str, Any],
    cards_doc: dict[str, Any],
    sources: dict[str, dict[str, str]],
    orders: dict[str, dict[str, Any]],
    cite: Any,
    problems: list[str],
) -> CardKind:
    where = f"cards.yaml: {key}"
    for cited in card["sources"]:
        cite(where, cited)
    facts = tuple(card["facts"])
    reasons = cards_doc["override_reasons"]
    for reason in card.get("override_reasons", []):
        if reason not in reasons["codes"]:
            problems.append(f"{where}: override reason '{reason}' is not defined")

    phrases = {
        name: tuple(
            Phrase(p["text"], p.get("when"), tuple(p.get("sources", []))) for p in alternatives
        )
        for name, alternatives in card.get("phrases", {}).items()
    }
    references = {}

    def short_citation(cited_key: str) -> str:
        """What the card's detail shows for a source of sources.yaml (a problem if it has none)."""
        if "short" not in sources[cited_key]:
            problems.append(f"{where}: source '{cited_key}' has no short citation in sources.yaml")
        return sources[cited_key].get("short", "")

    def reference(what: str, cited_key: str) -> None:
        """A source a phrase or suggestion adds to the card when it is shown."""
        cite(f"{where}: {what}", cited_key)
        if cited_key in sources:
            references[cited_key] = (short_citation(cited_key), sources[cited_key].get("url"))

    def check_template(template: Any, what: str, also: tuple[str, ...] = ()) -> None:
        try:
            unknown = placeholders(template) - {*facts, *also}
        except ValueError as exc:
            problems.append(f"{where}: {what}: {exc}")
            return
        for name in sorted(unknown):
            problems.append(f"{where}: {what} names '{{{name}}}', which is not among its facts")

    for name, alternatives in phrases.items():
        if name in facts:
            problems.append(f"{where}: phrase '{name}' has the name of a fact")
        for phrase in alternatives:
            for cited_key in phrase.sources:
                reference(f"phrase '{name}'", cited_key)
            if phrase.when and phrase.when not in facts:
                problems.append(f"{where}: phrase '{name}': when '{phrase.when}' is not a fact")
            check_template(phrase.text, f"phrase '{name}'")

    def text(spec: dict[str, Any], what: str) -> Text:
        summaries = spec["summary"] if isinstance(spec["summary"], list) else [spec["summary"]]
        for summary in summaries:
            check_template(summary, f"{what}summary", tuple(phrases))
        check_template(spec["detail"], f"{what}detail", tuple(phrases))
        # A phrase a summary names is checked in its longest wording.
        examples = dict(cards_doc["fact_examples"])
        for name, alternatives in phrases.items():
            worded = [str(fill(p.text, examples)) for p in alternatives]
            examples[name] = max(worded, key=len)
        _check_summary_fits(summaries[-1], examples, f"{where}: {what}", problems)
        return Text(tuple(summaries), spec["detail"])

    main = text(card, "")
    suggestions = []
    for spec in card.get("suggestions", []):
        what = f"suggestion '{spec['id']}'"
        check_template(spec["label"], what, tuple(phrases))
        if spec.get("when") and spec["when"] not in facts:
            problems.append(f"{where}: {what}: when '{spec['when']}' is not among its facts")
        actions = []
        for action in spec["actions"]:
            check_template(action["description"], what, tuple(phrases))
            if action["type"] == "create":
                order = orders.get(action.get("resource", ""))
                if order is None:
                    problems.append(f"{where}: {what} creates an unknown order")
                    continue
                check_template(order["resource"], f"{what}: its order", CALL_VALUES)
                actions.append(Action("create", action["description"], order["resource"]))
            elif not action.get("resource_id_fact"):
                problems.append(f"{where}: a delete action needs resource_id_fact")
            else:
                fact = action["resource_id_fact"]
                if fact not in facts:
                    problems.append(
                        f"{where}: {what}: resource_id_fact '{fact}' is not among its facts"
                    )
                actions.append(Action("delete", action["description"], resource_id_fact=fact))
        for cited_key in spec.get("sources", []):
            reference(what, cited_key)
        suggestions.append(
            Suggestion(
                spec["label"],
                tuple(actions),
                spec.get("when"),
                spec.get("recommended", False),
                tuple(spec.get("sources", [])),
            )
        )

    spec = card["source"]  # its url is required (an https URL)
    source = {
        "label": spec["label"],
        "topic": {"system": CARD_KIND_SYSTEM, "code": key, "display": spec["topic"]["display"]},
        "url": spec["url"],
    }

    def cited_block(keys: list[str]) -> tuple[str, tuple[dict[str, str], ...]]:
        """The closing citations (short forms, then the advisory) and the links of these sources."""
        found = [sources[k] for k in keys if k in sources]
        short = "; ".join(short_citation(k) for k in keys if k in sources)
        # The full references: each cited source with a public address, after the kind's own links.
        listed = [*card.get("links", [])] + [
            {"label": c["short"], "url": c["url"]} for c in found if "short" in c and "url" in c
        ]
        links = tuple(
            {"label": link["label"], "url": link["url"], "type": "absolute"}
            for link in {link["url"]: link for link in listed}.values()
        )
        return f"**Sources:** {short}.\n\n{cards_doc['advisory']}", links

    citations, links = cited_block(card["sources"])
    kind = CardKind(
        key=key,
        cause=card["cause"],
        indicator=card["indicator"],
        text=main,
        phrases=phrases,
        facts=facts,
        sources=tuple(card["sources"]),
        citations=citations,
        more_evidence=cards_doc["more_evidence"],
        source=source,
        suggestions=tuple(suggestions),
        selection_behavior=card.get("selection_behavior", "any"),
        override_reasons=tuple(
            {"system": reasons["system"], "code": code, "display": reasons["codes"][code]}
            for code in card.get("override_reasons", [])
            if code in reasons["codes"]
        ),
        links=links,
        snooze_days=card["snooze_days"],
        mode=card.get("mode", "active"),
        references=references,
    )
    variants = {}
    for name, alt in card.get("variants", {}).items():
        what = f"variant '{name}': "
        for cited_key in alt.get("sources", []):
            cite(f"{where}: variant '{name}'", cited_key)
        sources_of = alt.get("sources", card["sources"])
        variant_citations, variant_links = cited_block(sources_of)
        variants[name] = replace(
            kind,
            indicator=alt.get("indicator", kind.indicator),
            text=text({"summary": card["summary"], "detail": card["detail"], **alt}, what),
            sources=tuple(sources_of),
            citations=variant_citations,
            links=variant_links,
        )
    return replace(kind, variants=variants)


def _check_order_codes(
    orders: dict[str, dict[str, Any]],
    raw_sets: dict[str, dict[str, Any]],
    sources_doc: dict[str, Any],
    problems: list[str],
) -> None:
    """Every coding a suggested resource carries must be listed in a value set, and not as
    UNVERIFIED: a code nobody has verified is not put into an order (issue 18, item 8)."""
    systems = _system_names(sources_doc)
    statuses: dict[Key, set[str]] = {}
    for vs_id, doc in raw_sets.items():
        for row in [*doc.get("codes", []), *doc.get("ingredients", [])]:
            coding = {"system": sources_doc["systems"][row["system"]], "code": row["code"]}
            for key in code_keys({"coding": [coding]}, systems):
                statuses.setdefault(key, set()).add(f"{row['status']} in valuesets/{vs_id}.yaml")
    for oid, order in orders.items():
        for coding in _codings_in(order["resource"]):
            where = f"orders.yaml: {oid}: {coding.get('system')}|{coding.get('code')}"
            keys = code_keys({"coding": [coding]}, systems)
            listed = set().union(*(statuses.get(key, set()) for key in keys))
            if not listed:
                problems.append(f"{where} is in no value set, so its status cannot be checked")
            for entry in sorted(e for e in listed if e.startswith("UNVERIFIED")):
                problems.append(f"{where} is {entry}: an order may not carry it")


def _codings_in(template: Any) -> list[dict[str, Any]]:
    """The Codings (members of a `coding` list) anywhere in a resource template."""
    if isinstance(template, list):
        return [c for item in template for c in _codings_in(item)]
    if not isinstance(template, dict):
        return []
    found = [c for c in template.get("coding", []) if isinstance(c, dict)]
    for key, value in template.items():
        if key != "coding":
            found.extend(_codings_in(value))
    return found


def _check_summary_fits(
    summary: str, examples: dict[str, Any], where: str, problems: list[str]
) -> None:
    """The shortest summary must fit the limit when its facts take their longest realistic values."""
    try:
        named = placeholders(summary)
    except ValueError:
        return  # reported by check_template
    missing = sorted(named - examples.keys())
    for name in missing:
        problems.append(f"{where}summary names '{{{name}}}', which has no fact_examples entry")
    if missing:
        return
    filled = fill(summary, examples)
    if len(filled) > SUMMARY_LIMIT:
        problems.append(
            f"{where}summary is {len(filled)} characters with the longest realistic facts "
            f"(limit {SUMMARY_LIMIT}): declare a shorter form"
        )


def _system_names(sources_doc: dict[str, Any]) -> dict[str, str]:
    """Every URI a code system may arrive with (without a trailing "/") -> its canonical URI."""
    canonical: dict[str, str] = {}
    for short, uri in sources_doc["systems"].items():
        canonical[uri.rstrip("/")] = uri
        for alias in sources_doc.get("system_aliases", {}).get(short, []):
            canonical[alias.rstrip("/")] = uri
    return canonical


def _build_valuesets(
    raw: dict[str, dict[str, Any]],
    system_uris: dict[str, str],
    cite: Any,
    problems: list[str],
) -> dict[str, ValueSet]:
    def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return list(doc.get("codes", [])) + list(doc.get("ingredients", []))

    for vs_id, doc in raw.items():
        for key in doc["sources"]:
            cite(f"valuesets/{vs_id}.yaml", key)
        for row in rows(doc):
            cite(f"valuesets/{vs_id}.yaml: {row['code']}", row["source"])
            if row["system"] not in system_uris:
                problems.append(
                    f"valuesets/{vs_id}.yaml: {row['code']}: unknown system '{row['system']}'"
                )
        for member in doc.get("include", []):
            if member not in raw:
                problems.append(f"valuesets/{vs_id}.yaml: includes unknown value set '{member}'")
        for pattern in doc.get("text_patterns", []):
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"valuesets/{vs_id}.yaml: text_patterns '{pattern}': {exc}")
    if problems:
        raise KnowledgeError(problems)

    def expand(vs_id: str, trail: tuple[str, ...]) -> tuple[set[Key], set[str], set[str]]:
        if vs_id in trail:
            raise KnowledgeError([f"valuesets/{vs_id}.yaml: include cycle {' -> '.join(trail)}"])
        doc = raw[vs_id]
        codes = set()
        for row in rows(doc):
            uri = system_uris[row["system"]]
            codes.add((uri, normalize_code(uri, row["code"])))
        names = set(doc.get("text", []))
        patterns = set(doc.get("text_patterns", []))
        for member in doc.get("include", []):
            more_codes, more_names, more_patterns = expand(member, (*trail, vs_id))
            codes |= more_codes
            names |= more_names
            patterns |= more_patterns
        return codes, names, patterns

    built = {}
    for vs_id, doc in raw.items():
        codes, names, patterns = expand(vs_id, ())
        built[vs_id] = ValueSet(
            id=vs_id,
            title=doc["title"],
            kind=doc["kind"],
            codes=frozenset(codes),
            names=tuple(sorted(names)),
            patterns=tuple(sorted(patterns)),
            members=tuple(doc.get("include", [])),
        )
    return built
