"""Value sets, and the one way to ask whether a coded concept or a medicine is in one."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir.data import codings

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

# A (canonical system URI, normalised code) pair: the form value sets store their codes in.
Key = tuple[str, str]


def normalize_code(system: str, code: str) -> str:
    """A code in the form value sets store it: ICD-10-CM upper-case and dotted (I639 -> I63.9)."""
    code = code.strip()
    if system == ICD10CM:
        code = code.upper()
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return code


def code_keys(concept: Any, systems: Mapping[str, str]) -> frozenset[Key]:
    """The keys of every coding of `concept` (a CodeableConcept or a list of them).

    `systems` maps each URI an EHR may use for a code system (trailing "/" removed) to its canonical
    URI; a system it does not know is kept as sent.
    """
    keys = set()
    for coding in codings(concept):
        system = systems.get(coding.system.strip().rstrip("/"), coding.system)
        keys.add((system, normalize_code(system, coding.code)))
    return frozenset(keys)


@dataclass(frozen=True)
class ValueSet:
    """A named set of codes and, for medicines, ingredient names matched as whole words in text."""

    id: str
    title: str
    kind: str
    codes: frozenset[Key]
    names: tuple[str, ...]
    # Regular expressions over lower-case text, for names a word list cannot hold ("calcium 500 mg
    # + d3"); each is checked to compile at load.
    patterns: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    name_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Longest names first, so "calcium carbonate" is found rather than "calcium".
        ordered = sorted(self.names, key=len, reverse=True)
        names = [rf"\b{re.escape(n.lower())}\b" for n in ordered] + list(self.patterns)
        pattern = re.compile("|".join(f"(?:{n})" for n in names)) if names else None
        object.__setattr__(self, "name_pattern", pattern)

    def has(self, keys: Set[Key], texts: Iterable[str] = ()) -> bool:
        """Whether something with these code keys (and, for a medicine, these names) is in this set:
        a code in common, else one of the set's names as a whole word of one of `texts`."""
        return not self.codes.isdisjoint(keys) or self.name_in(texts) is not None

    def name_in(self, texts: Iterable[str]) -> str | None:
        """The first of this set's names found as a whole word in `texts` (longest names first)."""
        if self.name_pattern is None:
            return None
        for text in texts:
            found = self.name_pattern.search(text.lower())
            if found:
                return found.group(0)
        return None
