"""Loads cards/ (YAML), validates every file against its JSON Schema and cross-checks references."""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from cds_service.knowledge.valuesets import (
    MedicineCatalog,
    SystemNames,
    ValueSet,
    normalize_code,
)
from cds_service.prefetch import PrefetchTemplate

# `${codes:a,b}` in a prefetch query: the codes of those value sets as a FHIR token OR-list.
CODES_TOKEN = re.compile(r"\$\{codes:([a-z0-9,\-]+)\}")
# Observation/report codes the prefetch filters on; medicine and ICD codes are never used in filters.
PREFETCH_SYSTEMS = {"http://loinc.org", "http://snomed.info/sct", "http://www.ama-assn.org/go/cpt"}


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KnowledgeError(Exception):
    """The knowledge base is invalid; `problems` lists each finding as 'file: path: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"{len(problems)} problem(s) in the knowledge base:\n" + "\n".join(problems)
        )
        self.problems = problems


@dataclass(frozen=True)
class Threshold:
    """A clinical threshold or window with its unit and source."""

    id: str
    value: float
    unit: str
    source: str
    note: str


@dataclass(frozen=True)
class ServiceSpec:
    """One discovery entry and the evaluator that answers it."""

    id: str
    hook: str
    title: str
    description: str
    evaluator: str
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
class Knowledge:
    """Everything in cards/, ready for the rules and the card renderer."""

    sources: dict[str, dict[str, str]]
    valuesets: dict[str, ValueSet]
    thresholds: dict[str, Threshold]
    cards: dict[str, dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    override_reasons: dict[str, Any]
    services: tuple[ServiceSpec, ...]
    directory: Path = field(default=Path("cards"))
    # Which value sets a medicine is in (built from `valuesets`; see MedicineCatalog).
    catalog: MedicineCatalog = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        systems = next(iter(self.valuesets.values())).systems if self.valuesets else SystemNames({})
        object.__setattr__(self, "catalog", MedicineCatalog(self.valuesets.values(), systems))

    def valueset(self, vs_id: str) -> ValueSet:
        """The value set with this id (a missing id is a programming error caught by the tests)."""
        return self.valuesets[vs_id]

    def threshold(self, threshold_id: str) -> float:
        """The numeric value of a threshold."""
        return self.thresholds[threshold_id].value


@cache
def _validator(name: str) -> Draft202012Validator:
    text = (
        resources.files("cds_service.knowledge").joinpath(f"schemas/{name}.schema.json").read_text()
    )
    return Draft202012Validator(json.loads(text))


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        # The C loader (libyaml) reads the knowledge base about ten times faster than the pure-Python one.
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"{path.name}: cannot be read: {exc}")
        return None


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

    files = {
        name: directory / f"{name}.yaml"
        for name in ("sources", "thresholds", "services", "cards", "orders")
    }
    docs: dict[str, Any] = {}
    for name, path in files.items():
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
    source_keys = set(sources_doc["sources"])
    systems = _system_names(sources_doc)

    def cite(where: str, key: str) -> None:
        if key not in source_keys:
            problems.append(f"{where}: source '{key}' is not in sources.yaml")

    valuesets = _build_valuesets(raw_sets, sources_doc["systems"], systems, cite, problems)

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

    cards_doc = docs["cards"]
    reasons = cards_doc["override_reasons"]
    cite("cards.yaml: override_reasons", reasons["source"])
    for kind, card in cards_doc["cards"].items():
        for key in card["sources"]:
            cite(f"cards.yaml: {kind}", key)
        for reason in card.get("override_reasons", []):
            if reason not in reasons["codes"]:
                problems.append(f"cards.yaml: {kind}: override reason '{reason}' is not defined")
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if action["type"] == "create" and action.get("resource") not in orders:
                    problems.append(
                        f"cards.yaml: {kind}: suggestion '{suggestion['id']}' creates an unknown order"
                    )
                if action["type"] == "delete" and not action.get("resource_id_fact"):
                    problems.append(f"cards.yaml: {kind}: a delete action needs resource_id_fact")

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
        ServiceSpec(
            id=s["id"],
            hook=s["hook"],
            title=s["title"],
            description=s["description"],
            evaluator=s["evaluator"],
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
    pairs = [(s.id, s.hook) for s in services]
    if len(set(pairs)) != len(pairs):
        problems.append("services.yaml: an (id, hook) pair is listed twice")

    if problems:
        raise KnowledgeError(problems)
    return Knowledge(
        sources=sources_doc["sources"],
        valuesets=valuesets,
        thresholds=thresholds,
        cards=cards_doc["cards"],
        orders=orders,
        override_reasons=reasons,
        services=services,
        directory=directory,
    )


def _system_names(sources_doc: dict[str, Any]) -> SystemNames:
    canonical: dict[str, str] = {}
    for short, uri in sources_doc["systems"].items():
        canonical[uri.rstrip("/")] = uri
        for alias in sources_doc.get("system_aliases", {}).get(short, []):
            canonical[alias.rstrip("/")] = uri
    return SystemNames(canonical)


def _build_valuesets(
    raw: dict[str, dict[str, Any]],
    system_uris: dict[str, str],
    systems: SystemNames,
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
    if problems:
        raise KnowledgeError(problems)

    def expand(vs_id: str, trail: tuple[str, ...]) -> tuple[set[tuple[str, str]], set[str]]:
        if vs_id in trail:
            raise KnowledgeError([f"valuesets/{vs_id}.yaml: include cycle {' -> '.join(trail)}"])
        doc = raw[vs_id]
        codes = set()
        for row in rows(doc):
            uri = system_uris[row["system"]]
            codes.add((uri, normalize_code(uri, row["code"])))
        names = set(doc.get("text", []))
        for member in doc.get("include", []):
            more_codes, more_names = expand(member, (*trail, vs_id))
            codes |= more_codes
            names |= more_names
        return codes, names

    built = {}
    for vs_id, doc in raw.items():
        codes, names = expand(vs_id, ())
        built[vs_id] = ValueSet(
            id=vs_id,
            title=doc["title"],
            kind=doc["kind"],
            codes=frozenset(codes),
            names=tuple(sorted(names)),
            systems=systems,
            members=tuple(doc.get("include", [])),
        )
    return built


def fill_template(value: Any, facts: dict[str, str]) -> Any:
    """A copy of a resource template with every `${name}` in its strings replaced from `facts`."""
    if isinstance(value, str):
        # Most strings of a resource template name no fact: returned as they are (str is immutable).
        return _fill_string(value, facts) if "$" in value else value
    if isinstance(value, list):
        return [fill_template(v, facts) for v in value]
    if isinstance(value, dict):
        return {k: fill_template(v, facts) for k, v in value.items()}
    return value


def _fill_string(template: str, facts: dict[str, str]) -> str:
    """`string.Template(template).safe_substitute(facts)`, from the template's pieces read once."""
    return "".join(
        piece if isinstance(piece, str) else str(facts.get(piece[0], piece[1]))
        for piece in _template_pieces(template)
    )


@lru_cache(maxsize=1024)
def _template_pieces(template: str) -> tuple[str | tuple[str, str], ...]:
    """Literal text, and (name, text as written) for each `$name` or `${name}` placeholder.

    Templates come from the knowledge base only, so the cache holds a bounded set of strings.
    """
    pieces: list[str | tuple[str, str]] = []
    at = 0
    for match in string.Template.pattern.finditer(template):
        pieces.append(template[at : match.start()])
        name = match.group("named") or match.group("braced")
        if name is not None:
            pieces.append((name, match.group()))
        elif match.group("escaped") is not None:
            pieces.append("$")  # "$$"
        else:
            pieces.append(match.group())  # an invalid placeholder stays as written
        at = match.end()
    pieces.append(template[at:])
    return tuple(p for p in pieces if p != "")
