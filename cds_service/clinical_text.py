"""Reads EEG reports with NegEx/ConText: coded interpretation first, then the text; else unclear."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from cds_service.fhir.data import codings, items, texts

# NegEx (Chapman et al. 2001) with ConText's uncertainty, hypothetical and historical cues (Harkema
# et al. 2009): a cue before a finding reaches forward to a termination cue, another cue or the end
# of the sentence; a cue after a finding reaches back a few words. Cues and EEG finding terms (ACNS
# 2021, benign variants) are data in cards/eeg-reading.yaml. A report is epileptiform only on an
# affirmed, unhedged epileptiform finding that nothing else in the report contradicts; what is not
# read with confidence is "unclear".
EegReadingKind = Literal["epileptiform", "normal", "no-epileptiform", "unclear"]
# attributed: the sentence calls the finding a benign variant, artifact or not epileptiform.
Certainty = Literal[
    "affirmed", "negated", "uncertain", "not-current", "out-of-window", "attributed"
]
# Kinds of EEG finding the report-level safety rules qualify (see _in_context).
_QUALIFIED = frozenset({"epileptiform", "concerning"})
# Cue categories that qualify every EEG finding of their sentence, and are words to NegEx scopes.
_SENTENCE_CUES = frozenset({"benign", "ongoing"})

LEXICON_FILE = "eeg-reading.yaml"
_SCHEMA = Path(__file__).parent / "knowledge" / "schemas" / "eeg-reading.schema.json"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A sentence ends at . ! ? ; or a line break (a decimal point has no space after it: "1.5 Hz").
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")
_HEADING = re.compile(r"^\s*([a-z][a-z /]{0,40}?)\s*:")
_WORD = re.compile(r"[a-z0-9]+(?:['/][a-z0-9]+)*")


class EegLexiconError(Exception):
    """cards/eeg-reading.yaml is invalid; `problems` lists each finding as 'file: path: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in {LEXICON_FILE}:\n" + "\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Cue:
    """A NegEx/ConText trigger: what it does to a finding, and on which side of it."""

    label: str
    category: str  # negated | uncertain | hypothetical | historical | pseudo | termination | benign | ongoing
    direction: str  # forward | backward | both
    pattern: re.Pattern[str]
    # The phrase's first word: a sentence without it is not scanned for the cue (None: always).
    anchor: str | None = None


@dataclass(frozen=True)
class Term:
    """An EEG finding (ACNS terminology or a benign variant) and the phrasings that name it."""

    id: str
    kind: str  # epileptiform | concerning | benign-variant | non-epileptiform | abnormal | normal
    pattern: re.Pattern[str]
    # Names the class of findings ("epileptiform discharges"), not one finding.
    generic: bool = False


@dataclass(frozen=True)
class EegLexicon:
    """Everything cards/eeg-reading.yaml says about reading an EEG report."""

    cues: tuple[Cue, ...]
    terms: tuple[Term, ...]
    pre_window: int | None
    post_window: int
    max_characters: int
    skipped_sections: frozenset[str]
    prefix_negation: re.Pattern[str]
    # Forward negations that, naming no finding after them, hedge the finding before them
    # ("sharp waves were not clearly seen").
    dangling_negations: frozenset[str] = frozenset()
    # Hedges that also reach back to an EEG finding before them (ConText: both directions).
    backward_hedges: frozenset[str] = frozenset()
    # Words that leave a negation of a whole class of findings unqualified (see Mention.sweeping).
    sweeping_words: frozenset[str] = frozenset()
    coded: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mention:
    """One finding in one sentence, with how the sentence qualifies it."""

    term: Term
    certainty: Certainty
    sentence: str
    # Where it is: the sentence's number in the text, and the clause's (a termination cue or a
    # new sentence starts the next clause).
    sentence_index: int = 0
    clause: int = 0
    # Every other word of the sentence is a cue, a finding or one of the lexicon's sweeping words:
    # nothing limits what the sentence says of the finding ("No epileptiform discharges.").
    sweeping: bool = False


@dataclass(frozen=True)
class EegReading:
    """What an EEG report says, and the sentences or codes it was read from."""

    kind: EegReadingKind
    basis: Literal["coded", "text", "coded+text", "nothing"]
    evidence: tuple[str, ...] = ()


def load_eeg_lexicon(directory: Path, source_keys: Collection[str]) -> EegLexicon:
    """The lexicon in `directory`/eeg-reading.yaml, or EegLexiconError listing every problem.

    Checked against its JSON Schema; every source must be one of `source_keys` (sources.yaml) and
    every pattern must compile.
    """
    path = Path(directory) / LEXICON_FILE
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise EegLexiconError([f"{LEXICON_FILE}: cannot be read: {exc}"]) from exc
    validator = Draft202012Validator(json.loads(_SCHEMA.read_text(encoding="utf-8")))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise EegLexiconError(
            [
                f"{LEXICON_FILE}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}"
                for e in errors
            ]
        )
    problems: list[str] = []

    def cite(where: str, key: str) -> None:
        if key not in source_keys:
            problems.append(f"{LEXICON_FILE}: {where}: source '{key}' is not in sources.yaml")

    def compiled(where: str, regex: str) -> re.Pattern[str]:
        try:
            return re.compile(regex)
        except re.error as exc:
            problems.append(f"{LEXICON_FILE}: {where}: pattern does not compile: {exc}")
            return re.compile(r"(?!)")

    for key in doc["sources"]:
        cite("sources", key)
    for part in ("scope", "limits", "skipped_sections", "prefix_negation"):
        cite(part, doc[part]["source"])
    cues = []
    for n, row in enumerate(doc["cues"]):
        cite(f"cues/{n}", row["source"])
        label = row.get("phrase") or row["pattern"]
        regex = _phrase_regex(row["phrase"]) if "phrase" in row else row["pattern"]
        anchor = _normalise(row["phrase"]).split(" ")[0] if "phrase" in row else None
        pattern = compiled(f"cues/{n}", regex)
        cues.append(Cue(label, row["category"], row["direction"], pattern, anchor))
    terms = []
    prefix = re.escape(doc["prefix_negation"]["prefix"])
    for row in doc["findings"]:
        cite(f"findings/{row['id']}", row["source"])
        alternatives = "|".join(f"(?:{p})" for p in row["patterns"])
        # A finding may start at a word boundary or straight after the prefix ("nonepileptiform").
        start = rf"(?:\b|(?<=\b{prefix}))"
        pattern = compiled(f"findings/{row['id']}", rf"{start}(?:{alternatives})\b")
        terms.append(Term(row["id"], row["kind"], pattern, row.get("generic", False)))
    coded = {}
    for row in doc["coded"]:
        cite(f"coded/{row['code']}", row["source"])
        coded[(row["system"], row["code"])] = row["reading"]
    if problems:
        raise EegLexiconError(problems)
    return EegLexicon(
        cues=tuple(cues),
        terms=tuple(terms),
        pre_window=doc["scope"]["pre_window"],
        post_window=doc["scope"]["post_window"],
        max_characters=doc["limits"]["max_characters"],
        skipped_sections=frozenset(doc["skipped_sections"]["headings"]),
        prefix_negation=re.compile(rf"\b{prefix} ?$"),
        dangling_negations=frozenset(doc["scope"]["dangling_negations"]),
        backward_hedges=frozenset(doc["scope"].get("backward_hedges", ())),
        sweeping_words=frozenset(doc["scope"].get("sweeping_words", ())),
        coded=coded,
    )


def read_eeg_report(report: Mapping[str, Any], lexicon: EegLexicon) -> EegReading:
    """How an EEG DiagnosticReport or Observation reads: coded interpretation first, then its text.

    The text is the report's conclusion (or an Observation's valueString) and the text of its
    coded conclusions. A coded reading and the text must agree; when they do not, or when nothing
    is read with confidence, the reading is "unclear".
    """
    coded = _coded_readings(report, lexicon)
    statements = texts(items(report.get("conclusionCode")))
    for key in ("conclusion", "valueString"):
        if isinstance(report.get(key), str):
            statements.append(report[key])
    statements.extend(texts(report.get("valueCodeableConcept")))
    text = "\n".join(s for s in statements if s.strip())
    reading = read_eeg_text(text, lexicon) if text else EegReading("unclear", "nothing")
    if not coded:
        return reading
    codes = tuple(f"coded interpretation: {c}" for c in sorted(coded))
    if "epileptiform" in coded:
        return EegReading("epileptiform", "coded", codes)
    if {"normal", "abnormal"} <= coded:
        return EegReading("unclear", "coded", codes)
    if reading.basis == "nothing":
        kind: EegReadingKind = "normal" if coded == {"normal"} else "unclear"
        return EegReading(kind, "coded", codes)
    if "abnormal" in coded:
        # A coded abnormal study is read from its text; a text that calls it normal contradicts it.
        if reading.kind == "normal":
            return EegReading("unclear", "coded+text", codes + reading.evidence)
        return EegReading(reading.kind, "coded+text", codes + reading.evidence)
    # Coded normal: the text may only confirm it (a text naming no finding does not contradict it).
    if reading.kind in {"normal", "no-epileptiform"}:
        return EegReading(reading.kind, "coded+text", codes + reading.evidence)
    return EegReading("unclear", "coded+text", codes + reading.evidence)


def read_eeg_text(text: str, lexicon: EegLexicon) -> EegReading:
    """How the text of an EEG report reads (see read_eeg_report).

    Local safety rules over NegEx/ConText: a report that states a normal study in one place and
    an epileptiform finding in another contradicts itself (unclear); a finding a sentence calls a
    benign variant, artifact or not epileptiform is unclear unless another sentence of the report
    states that there is no epileptiform finding, or that the study is normal.
    """
    truncated = len(text) > lexicon.max_characters
    found = mentions(text[: lexicon.max_characters], lexicon)

    def matching(*accept: tuple[str, Certainty]) -> list[Mention]:
        return [m for m in found if (m.term.kind, m.certainty) in accept]

    def where(*accept: tuple[str, Certainty]) -> tuple[str, ...]:
        return _sentences(matching(*accept))

    positive = matching(("epileptiform", "affirmed"))
    stated_normal = matching(("normal", "affirmed"), ("abnormal", "negated"))
    if positive:
        # "Normal EEG except for sharp waves" qualifies itself; "Normal EEG. Sharp waves." does not,
        # nor does "No epileptiform discharges." with sharp waves in another sentence.
        # A negated abnormality or class of findings speaks of the whole study only when nothing
        # limits it ("No abnormalities were seen.", not "without photic response abnormality").
        sweeping_negations = [
            m
            for m in found
            if m.certainty == "negated"
            and m.sweeping
            and (m.term.generic or m.term.kind == "abnormal")
        ]
        contradicting = [
            n
            for n in matching(("normal", "affirmed")) + sweeping_negations
            if not any(
                p.sentence_index == n.sentence_index and p.clause > n.clause for p in positive
            )
        ]
        if contradicting:
            return EegReading("unclear", "text", _sentences(contradicting + positive))
        return EegReading("epileptiform", "text", _sentences(positive))
    attributed = [m for m in found if m.certainty == "attributed"]
    attributing = {m.sentence_index for m in attributed}
    confirmed = any(
        m.sentence_index not in attributing
        for m in [*stated_normal, *matching(("epileptiform", "negated"))]
    )
    unclear = where(
        ("epileptiform", "uncertain"),
        ("epileptiform", "out-of-window"),
        ("concerning", "affirmed"),
        ("concerning", "uncertain"),
        ("concerning", "out-of-window"),
        ("abnormal", "uncertain"),
    )
    if attributed and not confirmed:
        unclear += _sentences(attributed)
    if unclear or truncated:
        return EegReading("unclear", "text", unclear)
    slowing = where(("non-epileptiform", "affirmed"))
    benign = where(("benign-variant", "affirmed")) + _sentences(attributed)
    unexplained = where(("abnormal", "affirmed"), ("normal", "negated"))
    if unexplained and not (slowing or benign):
        # "Abnormal EEG." with no finding that says why: a clinician has to read it.
        return EegReading("unclear", "text", unexplained)
    negated = where(("epileptiform", "negated"), ("concerning", "negated"))
    if stated_normal and not (slowing or unexplained):
        evidence = _sentences(stated_normal) + negated + benign
        return EegReading("normal", "text", tuple(dict.fromkeys(evidence)))
    evidence = negated + slowing + benign + _sentences(stated_normal) + unexplained
    if evidence:
        return EegReading("no-epileptiform", "text", tuple(dict.fromkeys(evidence)))
    return EegReading("unclear", "nothing")


def _sentences(found: list[Mention]) -> tuple[str, ...]:
    """The sentences the mentions are in, each once, in the order given."""
    return tuple(dict.fromkeys(m.sentence for m in found))


def affirmed(text: str, names: re.Pattern[str], lexicon: EegLexicon) -> bool:
    """Whether `text` names something `names` matches (lower-case, whole words) at least once
    without a negation, hedge or history cue over it, read with the lexicon's NegEx/ConText cues
    (e.g. "Nocturnal leg cramps" yes, "No leg cramps" and "Leg cramps: none" no)."""
    lexicon = replace(lexicon, terms=(Term("named", "named", names),))
    return any(m.certainty == "affirmed" for m in mentions(text, lexicon))


def mentions(text: str, lexicon: EegLexicon) -> list[Mention]:
    """Every EEG finding in `text`, each with its certainty (NegEx/ConText), sentence by sentence.

    Sentences in a skipped section (the indication or history of the study) are not read.
    """
    found: list[Mention] = []
    skipping = False
    for number, raw in enumerate(_SENTENCE_END.split(text)):
        sentence = _normalise(raw)
        if not sentence:
            continue
        heading = _HEADING.match(sentence)
        if heading:
            skipping = heading.group(1).strip() in lexicon.skipped_sections
        if skipping:
            continue
        if not any(term.pattern.search(sentence) for term in lexicon.terms):
            continue  # it names no finding: there is nothing for its cues to qualify
        found.extend(_sentence_mentions(sentence, raw.strip(), number, lexicon))
    return found


@dataclass(frozen=True)
class _Unit:
    """A word of a sentence, or a cue or a finding (a phrase counts as one word, as in NegEx)."""

    start: int
    item: Cue | Term | None = None


def _sentence_mentions(
    sentence: str, shown: str, number: int, lexicon: EegLexicon
) -> list[Mention]:
    units = _units(sentence, lexicon)
    words = [_WORD.match(sentence, u.start) for u in units if u.item is None]
    sweeping = all(w and w[0] in lexicon.sweeping_words for w in words)
    found = []
    clause = 0
    for index, unit in enumerate(units):
        if isinstance(unit.item, Cue) and unit.item.category == "termination":
            clause += 1
        if isinstance(unit.item, Term):
            before = sentence[: unit.start]
            if lexicon.prefix_negation.search(before):
                certainty: Certainty = "negated"
            else:
                certainty = _certainty(units, index, lexicon)
            found.append(Mention(unit.item, certainty, shown, number, clause, sweeping))
    categories = {u.item.category for u in units if isinstance(u.item, Cue)}
    return _in_context(found, categories)


def _in_context(found: list[Mention], categories: set[str]) -> list[Mention]:
    """EEG findings as the rest of their sentence qualifies them (local safety rules).

    A sentence that calls something a benign variant, artifact or physiological, names a benign
    variant, or negates epileptiform findings as a class ("sharp waves, not felt to be
    epileptiform") attributes the findings it affirms: "attributed", or "uncertain" when it also
    hedges. A finding of an earlier study that the sentence says persists is "uncertain".
    """
    attributing = "benign" in categories or any(
        (m.term.kind == "benign-variant" and m.certainty != "negated")
        or (m.term.generic and m.certainty == "negated")
        for m in found
    )

    def qualified(m: Mention) -> Mention:
        if m.term.kind not in _QUALIFIED:
            return m
        if m.certainty == "not-current" and "ongoing" in categories:
            return replace(m, certainty="uncertain")
        if m.certainty == "affirmed" and attributing:
            hedged = "uncertain" in categories
            return replace(m, certainty="uncertain" if hedged else "attributed")
        return m

    return [qualified(m) for m in found]


def _units(sentence: str, lexicon: EegLexicon) -> list[_Unit]:
    """The sentence as words, cues and findings; overlaps go to the leftmost, then the longest,
    then the first listed (cues before findings, in the lexicon's order)."""
    candidates: list[tuple[int, int, Cue | Term]] = []
    words = set(_WORD.findall(sentence))
    spans = [c for c in lexicon.cues if c.anchor is None or c.anchor in words]
    scanned: list[Cue | Term] = [*spans, *lexicon.terms]
    for item in scanned:
        for match in item.pattern.finditer(sentence):
            if match.end() > match.start():
                candidates.append((match.start(), match.end(), item))
    candidates.sort(key=lambda c: (c[0], c[0] - c[1]))
    units: list[_Unit] = []
    position = 0
    for start, end, item in candidates:
        if start < position:
            continue
        units.extend(_Unit(position + w.start()) for w in _WORD.finditer(sentence[position:start]))
        units.append(_Unit(start, item))
        position = end
    units.extend(_Unit(position + w.start()) for w in _WORD.finditer(sentence[position:]))
    return units


def _certainty(units: list[_Unit], index: int, lexicon: EegLexicon) -> Certainty:
    """How the cues around the finding at `index` qualify it (NegEx/ConText scope rules).

    A hedge wins over a negation, and a negation over history: "the previously reported sharp
    waves have resolved" is a finding absent now.
    """
    effects = _governing(units, index, -1, lexicon.pre_window, lexicon)
    effects |= _governing(units, index, 1, lexicon.post_window, lexicon)
    order: tuple[Certainty, ...] = ("uncertain", "negated", "not-current", "out-of-window")
    return next((effect for effect in order if effect in effects), "affirmed")


def _governing(
    units: list[_Unit], index: int, step: int, window: int | None, lexicon: EegLexicon
) -> set[Certainty]:
    """The effects of the cues on one side of a finding whose scope reaches the finding.

    A scope ends at a termination cue or at any other cue (NegEx), except a historical one: the
    search goes on past it, so a finding can be both earlier and negated now (ConText). A cue
    facing away from the finding ends the search too; for an EEG finding, one of the lexicon's
    backward hedges after it within the window still qualifies it (ConText reads them both ways). Findings in
    between do not end it (lists: "no spikes, sharp waves or seizures"). A cue beyond `window`
    words reads as "out-of-window". A dangling negation after an EEG finding (one whose forward
    scope holds no finding) hedges it; after a condition ("leg cramps - no DVT on ultrasound") a
    forward negation speaks of what follows it, as in NegEx.
    """
    toward = "forward" if step < 0 else "backward"
    finding = units[index].item
    eeg = isinstance(finding, Term) and finding.kind in _QUALIFIED
    effects: set[Certainty] = set()
    words_between = 0
    position = index + step
    while 0 <= position < len(units):
        item = units[position].item
        if isinstance(item, Cue) and item.category not in _SENTENCE_CUES:
            beyond = window is not None and words_between > window
            if item.category == "termination":
                return effects
            if item.direction not in {toward, "both"}:
                if step > 0 and eeg and _dangles(units, position, lexicon):
                    effects.add("out-of-window" if words_between > (window or 0) else "uncertain")
                elif step > 0 and eeg and item.label in lexicon.backward_hedges and not beyond:
                    effects.add("uncertain")
                return effects
            if item.category == "pseudo" or (
                item.category == "historical" and step > 0 and not eeg
            ):
                # A condition's course after its name ("leg cramps, previously treated with
                # quinine") does not make it historical; an EEG finding's earlier study does.
                return effects
            if beyond:
                effects.add("out-of-window")
                return effects
            if item.category == "historical":
                effects.add("not-current")
            elif item.category == "hypothetical":
                effects.add("not-current")
                return effects
            else:
                effects.add("negated" if item.category == "negated" else "uncertain")
                return effects
        words_between += 1
        position += step
    return effects


def _dangles(units: list[_Unit], position: int, lexicon: EegLexicon) -> bool:
    """Whether the cue at `position` is a dangling negation: nothing it could negate follows it."""
    cue = units[position].item
    if not isinstance(cue, Cue) or cue.label not in lexicon.dangling_negations:
        return False
    for unit in units[position + 1 :]:
        if isinstance(unit.item, Term):
            return False
        if isinstance(unit.item, Cue):
            return True
    return True


def _coded_readings(report: Mapping[str, Any], lexicon: EegLexicon) -> set[str]:
    concepts = [
        *items(report.get("interpretation")),
        *items(report.get("conclusionCode")),
        report.get("valueCodeableConcept"),
    ]
    found = set()
    for concept in concepts:
        for code in codings(concept):
            reading = lexicon.coded.get((code.system, code.code))
            if reading:
                found.add(reading)
    return found


def _normalise(text: str) -> str:
    """Lower case, hyphens and dashes as spaces (but "(-)"), '&' as 'and', runs of spaces as one."""
    text = text.lower().replace("&", " and ")
    # A minus sign alone in brackets is a list form's "negative" ("Spikes (-)"): kept as "(-)".
    text = re.sub(r"\(\s*[-‐‑‒–—−]\s*\)", "(-)", text)
    text = re.sub(r"(?<!\()[-‐‑‒–—]|[-‐‑‒–—](?!\))", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _phrase_regex(phrase: str) -> str:
    """A cue phrase as a regular expression: its words in order, at word boundaries."""
    words = [re.escape(w) for w in _normalise(phrase).split(" ")]
    regex = r"\s+".join(words)
    if re.match(r"\w", phrase):
        regex = r"\b" + regex
    if re.search(r"\w$", phrase):
        regex += r"\b"
    return regex
