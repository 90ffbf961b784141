"""Reading EEG reports: the corpus in fixtures/, NegEx windows at their limits, the lexicon's checks."""

from __future__ import annotations

import ast
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.clinical_text import (
    EegLexicon,
    EegLexiconError,
    affirmed,
    load_eeg_lexicon,
    mentions,
    read_eeg_report,
    read_eeg_text,
)

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "cards"
CORPUS = yaml.safe_load((ROOT / "fixtures" / "eeg-sentences.yaml").read_text(encoding="utf-8"))
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _source_keys(cards: Path = CARDS) -> set[str]:
    return set(yaml.safe_load((cards / "sources.yaml").read_text(encoding="utf-8"))["sources"])


@pytest.fixture(scope="module")
def lexicon() -> EegLexicon:
    return load_eeg_lexicon(CARDS, _source_keys())


def _report(entry: dict[str, Any]) -> dict[str, Any]:
    """The corpus entry as FHIR: a DiagnosticReport conclusion, or an interpreted Observation."""
    if "interpretation" in entry:
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "interpretation": [{"coding": [{"system": V3, "code": entry["interpretation"]}]}],
        }
        if entry["text"]:
            observation["valueString"] = entry["text"]
        return observation
    return {"resourceType": "DiagnosticReport", "status": "final", "conclusion": entry["text"]}


def test_the_corpus_is_large_and_covers_every_reading() -> None:
    entries = CORPUS["sentences"]
    assert len(entries) >= 80
    assert {e["expected"] for e in entries} == {
        "epileptiform",
        "normal",
        "no-epileptiform",
        "unclear",
    }
    assert all(e["why"].strip() for e in entries)
    texts = [(e["text"], e.get("interpretation")) for e in entries]
    assert len(texts) == len(set(texts)), "duplicate corpus entries"


@pytest.mark.parametrize(
    "entry", CORPUS["sentences"], ids=lambda e: f"{e.get('interpretation', '')}:{e['text'][:60]}"
)
def test_corpus_sentence_reads_as_expected(entry: dict[str, Any], lexicon: EegLexicon) -> None:
    reading = read_eeg_report(_report(entry), lexicon)
    assert reading.kind == entry["expected"], entry["why"]


def test_skipping_cues_whose_first_word_is_absent_changes_no_reading(lexicon: EegLexicon) -> None:
    # The anchor filter exists for speed only: scanning every cue must read the corpus the same.
    every_cue = dataclasses.replace(
        lexicon, cues=tuple(dataclasses.replace(c, anchor=None) for c in lexicon.cues)
    )
    assert any(c.anchor for c in lexicon.cues)
    for entry in CORPUS["sentences"]:
        report = _report(entry)
        assert read_eeg_report(report, every_cue) == read_eeg_report(report, lexicon)


def test_an_epileptiform_reading_names_the_sentence_it_rests_on(lexicon: EegLexicon) -> None:
    text = "Normal background. During sleep, right frontal sharp waves were recorded."
    reading = read_eeg_text(text, lexicon)
    assert reading.kind == "epileptiform"
    assert reading.evidence == ("During sleep, right frontal sharp waves were recorded.",)


# --- NegEx windows: the number of words between a cue and its finding ----------------------------


def _between(words: int) -> str:
    return " ".join(["filler"] * words)


@pytest.mark.parametrize(
    ("words", "expected"),
    [(4, "no-epileptiform"), (5, "no-epileptiform"), (6, "unclear")],
)
def test_post_negation_reaches_back_five_words(
    words: int, expected: str, lexicon: EegLexicon
) -> None:
    # NegEx: "$2 = five words or medical phrases"; a finding further back is not affirmed either.
    assert lexicon.post_window == 5
    text = f"Sharp waves {_between(words)} were not seen."
    assert read_eeg_text(text, lexicon).kind == expected


@pytest.mark.parametrize(
    ("words", "certainty"), [(4, "uncertain"), (5, "uncertain"), (6, "out-of-window")]
)
def test_a_dangling_negation_hedges_back_within_the_post_window(
    words: int, certainty: str, lexicon: EegLexicon
) -> None:
    text = f"Sharp waves {_between(words - 1)} were not clearly seen."
    assert [m.certainty for m in mentions(text, lexicon)] == [certainty]
    assert read_eeg_text(text, lexicon).kind == "unclear"


def test_a_finding_phrase_counts_as_one_word_in_the_window(lexicon: EegLexicon) -> None:
    # Five words between, one of them a finding phrase of three words ("focal slowing" etc.).
    text = "Sharp waves and left temporal polymorphic delta slowing were not seen."
    assert [m.certainty for m in mentions(text, lexicon)] == ["negated", "negated"]


def test_pre_negation_reaches_to_the_end_of_the_sentence(lexicon: EegLexicon) -> None:
    # NegEx: "$1 = any number of words" up to a termination cue or another trigger.
    assert lexicon.pre_window is None
    text = f"No {_between(40)} sharp waves."
    assert read_eeg_text(text, lexicon).kind == "no-epileptiform"


@pytest.mark.parametrize(
    ("words", "expected"),
    [(2, "no-epileptiform"), (3, "no-epileptiform"), (4, "unclear")],
)
def test_a_pre_window_when_set_is_held_at_its_limit(
    words: int, expected: str, lexicon: EegLexicon
) -> None:
    limited = dataclasses.replace(lexicon, pre_window=3)
    text = f"No {_between(words)} sharp waves."
    assert read_eeg_text(text, limited).kind == expected


def test_a_termination_cue_ends_a_backward_scope_too(lexicon: EegLexicon) -> None:
    text = "Sharp waves were frequent but spikes were not seen."
    found = {m.term.id: m.certainty for m in mentions(text, lexicon)}
    assert found == {"sharp-waves": "affirmed", "spikes": "negated"}


# --- The report-level safety rules qualify EEG findings only --------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A hedge or a benign word after a condition names its cause or course, not its existence.
        ("nocturnal leg cramps, likely due to spasticity", True),
        ("leg cramps, benign", True),
        ("leg cramps since 2019", True),
        ("leg cramps, persistent", True),
        ("leg cramps, previously treated with quinine", True),
        ("leg cramps in 2025", True),
        ("no leg cramps", False),
        ("leg cramps: resolved", False),
        ("history of leg cramps", False),
    ],
)
def test_condition_text_is_read_with_negex_context_alone(
    text: str, expected: bool, lexicon: EegLexicon
) -> None:
    assert affirmed(text, re.compile(r"\bleg cramps?\b"), lexicon) is expected


@pytest.mark.parametrize(
    ("text", "certainty"),
    [
        ("Left temporal spikes, likely epileptiform.", "uncertain"),
        ("Left temporal spikes, a benign variant.", "attributed"),
        ("Left temporal spikes, probably a benign variant.", "uncertain"),
        ("Left temporal spikes on the prior EEG persist.", "uncertain"),
        ("Left temporal spikes on the prior EEG have resolved.", "negated"),
    ],
)
def test_the_sentence_qualifies_an_eeg_finding(
    text: str, certainty: str, lexicon: EegLexicon
) -> None:
    assert [m.certainty for m in mentions(text, lexicon) if m.term.id == "spikes"] == [certainty]


def test_a_sweeping_negation_is_one_whose_every_other_word_is_listed(lexicon: EegLexicon) -> None:
    text = "No epileptiform discharges were seen. Left temporal spikes."
    assert read_eeg_text(text, lexicon).kind == "unclear"
    # The same report, had the lexicon not listed "seen", would hold a limited negation.
    narrower = dataclasses.replace(lexicon, sweeping_words=lexicon.sweeping_words - {"seen"})
    assert read_eeg_text(text, narrower).kind == "epileptiform"


# --- Reading limits ------------------------------------------------------------------------------


def test_text_past_the_limit_is_not_read_and_makes_a_negative_report_unclear(
    lexicon: EegLexicon,
) -> None:
    padding = "No sharp waves. " * (lexicon.max_characters // 16 + 1)
    assert read_eeg_text(padding[: lexicon.max_characters], lexicon).kind == "no-epileptiform"
    tail = padding + "Frequent left temporal spikes."
    # The positive sentence is past the limit: not called epileptiform, and not called negative.
    assert read_eeg_text(tail, lexicon).kind == "unclear"
    assert read_eeg_text("Left temporal spikes. " + padding, lexicon).kind == "epileptiform"


def test_junk_elements_are_no_text(lexicon: EegLexicon) -> None:
    report = {"resourceType": "DiagnosticReport", "conclusion": 7, "conclusionCode": "x"}
    assert read_eeg_report(report, lexicon).kind == "unclear"


def test_coded_conclusion_displays_are_read_as_text(lexicon: EegLexicon) -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "conclusionCode": [{"text": "Lateralized periodic discharges"}],
    }
    assert read_eeg_report(report, lexicon).kind == "epileptiform"


def test_an_epileptiform_code_decides_before_the_text(lexicon: EegLexicon) -> None:
    coded = dataclasses.replace(lexicon, coded={("http://example.org/eeg", "E1"): "epileptiform"})
    report = {
        "resourceType": "DiagnosticReport",
        "conclusion": "Normal EEG.",
        "conclusionCode": [{"coding": [{"system": "http://example.org/eeg", "code": "E1"}]}],
    }
    reading = read_eeg_report(report, coded)
    assert (reading.kind, reading.basis) == ("epileptiform", "coded")


def test_conflicting_interpretation_codes_are_unclear(lexicon: EegLexicon) -> None:
    observation = {
        "resourceType": "Observation",
        "interpretation": [{"coding": [{"system": V3, "code": "N"}, {"system": V3, "code": "A"}]}],
        "valueString": "No epileptiform discharges.",
    }
    assert read_eeg_report(observation, lexicon).kind == "unclear"


# --- The lexicon file ----------------------------------------------------------------------------


def _broken_copy(tmp_path: Path, edit: Any) -> Path:
    shutil.copy(CARDS / "eeg-reading.yaml", tmp_path / "eeg-reading.yaml")
    doc = yaml.safe_load((tmp_path / "eeg-reading.yaml").read_text(encoding="utf-8"))
    edit(doc)
    (tmp_path / "eeg-reading.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return tmp_path


def test_the_shipped_lexicon_cites_only_registered_sources() -> None:
    doc = yaml.safe_load((CARDS / "eeg-reading.yaml").read_text(encoding="utf-8"))
    cited = {row["source"] for row in doc["cues"] + doc["findings"] + doc["coded"]}
    assert cited <= _source_keys()
    assert {"NEGEX", "CONTEXT", "ACNS2021", "EEG_BENIGN_VARIANTS"} <= cited


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d["cues"][0].update(category="maybe"), "cues/0/category"),
        (lambda d: d["findings"][0].update(kind="seizure"), "findings/0/kind"),
        (lambda d: d["scope"].update(post_window=-1), "scope/post_window"),
        (lambda d: d["cues"][0].update(source="NOWHERE"), "source 'NOWHERE'"),
        (lambda d: d["findings"][0]["patterns"].append("spike(("), "does not compile"),
        (lambda d: d["coded"][0].update(reading="ictal"), "coded/0/reading"),
    ],
)
def test_a_broken_lexicon_is_refused_at_load(tmp_path: Path, edit: Any, problem: str) -> None:
    directory = _broken_copy(tmp_path, edit)
    with pytest.raises(EegLexiconError) as raised:
        load_eeg_lexicon(directory, _source_keys())
    assert any(problem in p for p in raised.value.problems), raised.value.problems


def test_a_phrase_yaml_reads_as_a_boolean_is_refused(tmp_path: Path) -> None:
    # YAML 1.1 reads an unquoted `no` as false: the schema catches it instead of a silent miss.
    (tmp_path / "eeg-reading.yaml").write_text(
        (CARDS / "eeg-reading.yaml")
        .read_text(encoding="utf-8")
        .replace('{phrase: "no", category', "{phrase: no, category"),
        encoding="utf-8",
    )
    with pytest.raises(EegLexiconError, match="is not of type 'string'"):
        load_eeg_lexicon(tmp_path, _source_keys())


def test_the_module_imports_no_web_or_http_library() -> None:
    source = (ROOT / "cds_service" / "clinical_text.py").read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not imported & {"flask", "httpx", "werkzeug", "requests"}
    assert {m for m in imported if m.startswith("cds_service")} == {"cds_service.fhir.data"}
