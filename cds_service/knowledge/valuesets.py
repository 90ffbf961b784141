"""Value sets and how a FHIR CodeableConcept (or a medicine's text) is matched against them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir.data import Code, codings, texts

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


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

    def resolve(self, system: str) -> str:
        """The canonical URI for `system` (unknown systems are returned unchanged)."""
        return self.canonical.get(system.strip().rstrip("/"), system)


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

    def __post_init__(self) -> None:
        # One compiled alternation per value set, longest names first, matched on whole words.
        pattern = "|".join(re.escape(n.lower()) for n in sorted(self.names, key=len, reverse=True))
        compiled = re.compile(rf"\b(?:{pattern})\b") if pattern else None
        object.__setattr__(self, "text_pattern", compiled)

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
        for item in concept if isinstance(concept, list) else [concept]:
            raw = item.get("coding") if isinstance(item, dict) else None
            if not isinstance(raw, list):
                continue
            for coding in raw:
                if not isinstance(coding, dict):
                    continue
                system, code = coding.get("system"), coding.get("code")
                if not isinstance(system, str) or not isinstance(code, str):
                    continue
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
