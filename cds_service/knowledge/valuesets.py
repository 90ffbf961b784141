"""Value sets and how a FHIR CodeableConcept (or a medicine's text) is matched against them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cds_service.fhir.data import Code, Resource, coded, codings, items, label, texts

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

_WORD = re.compile(r"\w+")

# A (system URI, code) pair, the form value sets store their codes in.
Key = tuple[str, str]

# Canonical keys are cached per distinct (system, code) seen; codes come from outside, so the cache
# stops growing here rather than holding whatever a hostile client sends.
MAX_CACHED_KEYS = 20_000


def normalize_code(system: str, code: str) -> str:
    """A code in the form value sets store it: ICD-10-CM upper-case and dotted (I639 -> I63.9)."""
    code = code.strip()
    if system == ICD10CM:
        code = code.upper()
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return code


@dataclass(frozen=True)
class SystemNames:
    """Maps every URI an EHR may use for a code system to its canonical URI."""

    canonical: Mapping[str, str]
    # The same few codes arrive in every call: their keys are worked out once.
    _keys: dict[Key, tuple[Key, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def resolve(self, system: str) -> str:
        """The canonical URI for `system` (unknown systems are returned unchanged)."""
        return self.canonical.get(system.strip().rstrip("/"), system)

    def coding_keys(self, system: str, code: str) -> tuple[Key, ...]:
        """The keys one coding may be listed under: as sent, and canonical (once if the same)."""
        found = self._keys.get((system, code))
        if found is None:
            canonical = self.resolve(system)
            key = (canonical, normalize_code(canonical, code))
            found = ((system, code),) if key == (system, code) else ((system, code), key)
            if len(self._keys) < MAX_CACHED_KEYS:
                self._keys[(system, code)] = found
        return found

    def key_list(self, concept: Any) -> list[Key]:
        """The keys of every coding of `concept` (a CodeableConcept or a list of them): each as sent
        and canonical, the two `ValueSet.matches` looks up (a key may repeat)."""
        found: list[Key] = []
        cache = self._keys
        for system, code, _ in coded(concept):
            found.extend(cache.get((system, code)) or self.coding_keys(system, code))
        return found


@dataclass(frozen=True)
class ValueSet:
    """A named set of codes (and, for medicines, ingredient codes and names for text matching)."""

    id: str
    title: str
    kind: str
    codes: frozenset[tuple[str, str]]
    names: tuple[str, ...]
    systems: SystemNames
    members: tuple[str, ...] = ()
    text_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    # The first word of each name, when every name starts with a word character (else None).
    first_words: frozenset[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One compiled alternation per value set, longest names first, matched on whole words.
        pattern = "|".join(re.escape(n.lower()) for n in sorted(self.names, key=len, reverse=True))
        compiled = re.compile(rf"\b(?:{pattern})\b") if pattern else None
        object.__setattr__(self, "text_pattern", compiled)
        # A name that starts with a word character can only be found as a whole word where its
        # first word is one of the text's words: a cheap test that rules most texts out.
        firsts = [_WORD.match(n.lower()) for n in self.names]
        words = frozenset(m.group(0) for m in firsts if m) if all(firsts) else None
        object.__setattr__(self, "first_words", words)

    def matching_code(self, concept: Any) -> Code | None:
        """The first coding of `concept` that is in this value set."""
        for coding in codings(concept):
            system = self.systems.resolve(coding.system)
            if (system, normalize_code(system, coding.code)) in self.codes:
                return coding
        return None

    def matches(self, concept: Any) -> bool:
        """Whether any coding of `concept` is in this value set (a CodeableConcept or a list of them)."""
        # Written for speed: the rules call it hundreds of times per request, and most codings
        # already arrive with the canonical system URI and the code as the value set writes it.
        for system, code, _ in coded(concept):
            if (system, code) in self.codes:
                return True
            canonical = self.systems.resolve(system)
            normalized = normalize_code(canonical, code)
            if (canonical != system or normalized != code) and (
                canonical,
                normalized,
            ) in self.codes:
                return True
        return False

    def matches_text(self, strings: Iterable[str]) -> bool:
        """Whether a medicine name of this set appears as a whole word in any of `strings`."""
        regex = self.text_pattern
        return regex is not None and any(regex.search(s.lower()) for s in strings)

    def name_in(self, strings: Iterable[str]) -> str | None:
        """The first medicine name of this set found as a whole word in `strings` (longest names first)."""
        regex = self.text_pattern
        if regex is None:
            return None
        for text in strings:
            found = regex.search(text.lower())
            if found:
                return found.group(0)
        return None

    def matches_medication(self, concepts: Iterable[Any]) -> bool:
        """A medicine matches by product or ingredient code, else by its name in text or displays."""
        concepts = list(concepts)
        if any(self.matches(c) for c in concepts):
            return True
        return self.matches_text(s for c in concepts for s in texts(c))

    def matches_medicine(self, medicine: Medicine) -> bool:
        """`matches_medication` for a medicine already reduced to its keys and lower-cased texts."""
        if not self.codes.isdisjoint(medicine.keys):
            return True
        regex = self.text_pattern
        if regex is None:
            return False
        if self.first_words is not None and self.first_words.isdisjoint(medicine.words):
            return False
        return any(regex.search(s) for s in medicine.lowered)


class Medicine:
    """A medicine's concepts reduced to what the rules read: its display name, its code keys and its
    texts (as sent, lower-cased, and as words), and, once a `MedicineCatalog` made it, every value
    set it is in.

    It depends on the concepts alone, so a catalog shares one per distinct medicine across calls.
    """

    __slots__ = ("_names", "in_sets", "keys", "lowered", "name", "texts", "words")

    def __init__(self, concepts: list[Any], systems: SystemNames) -> None:
        # Its display name: the first concept's text, else a coding's display, else its code.
        self.name = next((n for n in map(label, concepts) if n), "unnamed medicine")
        keys: list[Key] = []
        found: list[str] = []
        for concept in concepts:
            if isinstance(concept, dict):
                _read_concept(concept, systems, keys, found)
            else:
                keys.extend(systems.key_list(concept))
                found.extend(texts(concept))
        self.keys = frozenset(keys)
        self.texts = tuple(found)
        self.lowered = tuple([s.lower() for s in found])
        self.words = frozenset(_WORD.findall(" ".join(self.lowered)))
        self.in_sets: frozenset[str] = frozenset()
        self._names: dict[str, str | None] = {}

    def name_in(self, vs: ValueSet) -> str | None:
        """`vs.name_in` of this medicine's texts (memoised per value set)."""
        if vs.id not in self._names:
            self._names[vs.id] = vs.name_in(self.texts)
        return self._names[vs.id]


# Distinct medicines a catalog keeps (a few KB each); past that, new ones are worked out per call.
MAX_CACHED_MEDICINES = 2_000


class MedicineCatalog:
    """Every value set a medicine is in, found at once: the value sets' codes and the first words of
    their names are indexed, so a medicine is tested only against the sets it could be in.

    The same `ValueSet.matches_medicine` answers, for all value sets in one go. Medicines seen before
    are answered from a bounded cache keyed by their concepts' JSON: EHRs send the same products
    over and over, and a call asks about each of its medicines a few dozen times.
    """

    def __init__(
        self,
        valuesets: Iterable[ValueSet],
        systems: SystemNames,
        max_cached: int = MAX_CACHED_MEDICINES,
    ) -> None:
        self.systems = systems
        self.max_cached = max_cached
        by_key: dict[Key, set[str]] = {}
        by_word: dict[str, list[ValueSet]] = {}
        any_text: list[ValueSet] = []
        for vs in valuesets:
            for key in vs.codes:
                by_key.setdefault(key, set()).add(vs.id)
            if vs.text_pattern is None:
                continue
            if vs.first_words is None:
                any_text.append(vs)
            else:
                for word in vs.first_words:
                    by_word.setdefault(word, []).append(vs)
        self._by_key = {key: frozenset(ids) for key, ids in by_key.items()}
        self._by_word = by_word
        self._any_text = tuple(any_text)
        self._cache: dict[bytes, Medicine] = {}

    def medicine(self, concepts: list[Any]) -> Medicine:
        """The medicine these concepts describe, with the value sets it is in."""
        try:
            signature = orjson.dumps(concepts)
        except orjson.JSONEncodeError:  # not plain JSON (only possible for data built in code)
            return self._reduce(concepts)
        found = self._cache.get(signature)
        if found is None:
            found = self._reduce(concepts)
            if len(self._cache) < self.max_cached:
                self._cache[signature] = found
        return found

    def _reduce(self, concepts: list[Any]) -> Medicine:
        medicine = Medicine(concepts, self.systems)
        found: set[str] = set()
        for key in medicine.keys:
            ids = self._by_key.get(key)
            if ids:
                found |= ids
        candidates = list(self._any_text)
        for word in medicine.words:
            candidates.extend(self._by_word.get(word, ()))
        for vs in candidates:
            regex = vs.text_pattern
            if vs.id not in found and regex and any(regex.search(s) for s in medicine.lowered):
                found.add(vs.id)
        medicine.in_sets = frozenset(found)
        return medicine


def _read_concept(
    concept: Resource, systems: SystemNames, keys: list[Key], found: list[str]
) -> None:
    """Add a CodeableConcept's keys (as `SystemNames.key_list`) and texts (as `texts`), in one pass."""
    text = concept.get("text")
    if isinstance(text, str):
        found.append(text)
    for coding in items(concept.get("coding")):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                keys.extend(systems.coding_keys(system, code))
                display = coding.get("display")
                if isinstance(display, str) and display:
                    found.append(display)


class CodeIndex:
    """The resources of one list filed under their code keys, so a value set finds its members
    without testing every resource."""

    __slots__ = ("_keys", "_positions", "resources", "systems")

    def __init__(self, resources: list[Resource], systems: SystemNames) -> None:
        self.resources = resources
        self.systems = systems
        self._positions: dict[Key, list[int]] = {}
        where = self._positions
        known = systems._keys
        # `SystemNames.key_list` of each resource's code, written out: this loop runs once per
        # resource of every list a rule asks about, on every call.
        for position, resource in enumerate(resources):
            code = resource.get("code")
            if isinstance(code, dict):
                concepts: list[Any] = [code]
            elif isinstance(code, list):
                concepts = code
            else:
                continue
            for concept in concepts:
                raw = concept.get("coding") if isinstance(concept, dict) else None
                if not isinstance(raw, list):
                    continue
                for coding in raw:
                    if not isinstance(coding, dict):
                        continue
                    system, value = coding.get("system"), coding.get("code")
                    if not isinstance(system, str) or not isinstance(value, str):
                        continue
                    for key in known.get((system, value)) or systems.coding_keys(system, value):
                        positions = where.get(key)
                        if positions is None:
                            where[key] = [position]
                        elif positions[-1] != position:  # two codings of one resource, one key
                            positions.append(position)
        self._keys = frozenset(self._positions)

    def coded_in(self, vs: ValueSet) -> list[Resource]:
        """The resources whose `code` is in `vs`, in list order."""
        hits = vs.codes & self._keys  # walks the smaller of the two sets
        if not hits:
            return []
        if len(hits) == 1:
            positions = self._positions[next(iter(hits))]
        else:
            positions = sorted({p for key in hits for p in self._positions[key]})
        return [self.resources[p] for p in positions]
