"""The content editor's safety net: each problem the loader reports, from one broken file in a copy
of cards/, and the knowledge base as shipped loading clean."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge import KnowledgeError, load_knowledge
from tests.conftest import ROOT

# (file in cards/, text in it, what it becomes, the one problem the loader must report)
BREAKAGES = [
    (
        "cards.yaml",
        'advises avoiding below {limit}"',
        'advises avoiding below {limits}"',
        "cards.yaml: baclofen-renal: variant 'older-adult': summary names '{limits}', which is not"
        " among its facts",
    ),
    (
        "cards.yaml",
        "sources: [BEERS2023, BACLOFEN_LABEL]",
        "sources: [BEERS2023, NOWHERE]",
        "cards.yaml: baclofen-renal: variant 'older-adult': source 'NOWHERE' is not in sources.yaml",
    ),
    (
        "thresholds.yaml",
        "    value: 90\n",
        "    value: ninety\n",
        "thresholds.yaml: thresholds/calcium-lookback-days/value: 'ninety' is not of type 'number'",
    ),
    (
        "valuesets/eeg.yaml",
        "id: eeg\n",
        "id: eeg2\n",
        "eeg.yaml: id 'eeg2' does not match the file name",
    ),
    (
        "thresholds.yaml",
        "    source: LOCAL\n    note: A calcium, magnesium",
        "    source: NOWHERE\n    note: A calcium, magnesium",
        "thresholds.yaml: calcium-lookback-days: source 'NOWHERE' is not in sources.yaml",
    ),
    (
        "cards.yaml",
        "[cds-not-applicable, recipient-disagrees-evidence, recipient-concerns-outcomes,",
        "[made-up, recipient-disagrees-evidence, recipient-concerns-outcomes,",
        "cards.yaml: calcium-low: override reason 'made-up' is not defined",
    ),
    (
        "cards.yaml",
        'summary: "Low {calcium_kind} ',
        'summary: "Low {calcium_kind!r} ',
        "cards.yaml: calcium-low: summary: '{calcium_kind!r}' is not a plain {name} placeholder",
    ),
    (
        "cards.yaml",
        'summary: "Low {calcium_kind} {calcium} {unit} ({date})',
        'summary: "Low {calcium_kind} {calcium} {unit} ({day})',
        "cards.yaml: calcium-low: summary names '{day}', which is not among its facts",
    ),
    (
        "cards.yaml",
        "when: dxa_due",
        "when: dxa_overdue",
        "cards.yaml: calcium-low: suggestion 'order-dxa': when 'dxa_overdue' is not among its facts",
    ),
    (  # a wording cites its sources, which must exist
        "cards.yaml",
        "sources: [PAYNE]}",
        "sources: [NOWHERE]}",
        "cards.yaml: calcium-low: phrase 'calcium_kind': source 'NOWHERE' is not in sources.yaml",
    ),
    (
        "cards.yaml",
        "        sources: [USPSTF_OSTEO]\n",
        "        sources: [NOWHERE]\n",
        "cards.yaml: calcium-low: suggestion 'order-dxa': source 'NOWHERE' is not in sources.yaml",
    ),
    (
        "cards.yaml",
        '  dxa_due: "- age {age};',
        '  dxa_due: "- born {birth_date};',
        "cards.yaml: evidence_lines: dxa_due names '{birth_date}'",
    ),
    (
        "cards.yaml",
        "resource: magnesium-level",
        "resource: no-such-order",
        "cards.yaml: calcium-low: suggestion 'check-magnesium' creates an unknown order",
    ),
    (
        "cards.yaml",
        "            resource_id_fact: order\n",
        "",
        "cards.yaml: beers-muscle-relaxant: a delete action needs resource_id_fact",
    ),
    (
        "cards.yaml",
        "resource_id_fact: order",
        "resource_id_fact: target",
        "cards.yaml: beers-muscle-relaxant: suggestion 'deprescribe-muscle-relaxant': "
        "resource_id_fact 'target' is not among its facts",
    ),
    (
        "orders.yaml",
        'authoredOn: "{today}"',
        'authoredOn: "{tomorrow}"',
        "cards.yaml: calcium-low-severe: suggestion 'repeat-calcium-panel': its order names "
        "'{tomorrow}', which is not among its facts",
    ),
    (  # issue 18 item 8: the calcium + vitamin D proposal may not carry the unverified 904458
        "orders.yaml",
        '        text: "Calcium carbonate + vitamin D3',
        "        coding: [{system: http://www.nlm.nih.gov/research/umls/rxnorm, code: '904458'}]\n"
        '        text: "Calcium carbonate + vitamin D3',
        "orders.yaml: calcium-vitamin-d-chewable: http://www.nlm.nih.gov/research/umls/rxnorm|904458 "
        "is in no value set, so its status cannot be checked",
    ),
    (
        "valuesets/order-dxa.yaml",
        '"77080", display: "DXA bone density study, 1 or more sites; axial skeleton", '
        "status: SECONDARY",
        '"77080", display: "DXA bone density study, 1 or more sites; axial skeleton", '
        "status: UNVERIFIED",
        "orders.yaml: dxa-scan: http://www.ama-assn.org/go/cpt|77080 is UNVERIFIED in "
        "valuesets/order-dxa.yaml: an order may not carry it",
    ),
    (
        "services.yaml",
        "{codes:eeg,dxa-report}",
        "{codes:eeg,dxa-reports}",
        "services.yaml: leg-cramps-after-stroke: prefetch names unknown value set 'dxa-reports'",
    ),
    (
        "services.yaml",
        "  - id: leg-cramps-order-sign",
        "  - id: leg-cramps-order-select",
        "services.yaml: service id 'leg-cramps-order-select' is listed more than once",
    ),
    (
        "valuesets/eeg.yaml",
        "{system: loinc,",
        "{system: loinc2,",
        "valuesets/eeg.yaml: 11523-8: unknown system 'loinc2'",
    ),
    (
        "valuesets/calcium-any.yaml",
        "include: [calcium-total,",
        "include: [calcium-totals,",
        "valuesets/calcium-any.yaml: includes unknown value set 'calcium-totals'",
    ),
    (
        "valuesets/calcium-total.yaml",
        "\nkind:",
        "\ninclude: [calcium-any]\nkind:",
        "valuesets/calcium-any.yaml: include cycle calcium-any -> calcium-total",
    ),
]


# Issue 18 item 7: what a card shows is checked at load.
BREAKAGES += [
    (
        "cards.yaml",
        '      - "Post-stroke spasticity: review antispasticity treatment"\n',
        '      - "Post-stroke spasticity ({diagnosis}), a long diagnosis: review antispasticity'
        ' treatment"\n',
        "cards.yaml: spasticity-review: summary is 165 characters with the longest realistic facts"
        " (limit 139): declare a shorter form",
    ),
    (
        "cards.yaml",
        '    summary: "An EEG report ({date}) is on file: review it for seizure activity"',
        '    summary: "An EEG report ({date}, {site}) is on file: review it"',
        "cards.yaml: eeg-report-review: summary names '{site}', which is not among its facts",
    ),
    (
        "cards.yaml",
        "        - {when: treated, text:",
        "        - {when: on_levetiracetam, text:",
        "cards.yaml: eeg-recommended: phrase 'timing': when 'on_levetiracetam' is not a fact",
    ),
    (
        "cards.yaml",
        '  date: "2026-11-24"\n',
        "",
        "cards.yaml: calcium-low: summary names '{date}', which has no fact_examples entry",
    ),
    (
        "sources.yaml",
        '    short: "ESO guideline on post-stroke seizures 2017"\n',
        "",
        "cards.yaml: eeg-recommended: source 'ESO2017' has no short citation in sources.yaml",
    ),
    (
        "eeg-reading.yaml",
        "  - {phrase: free of, category: negated, direction: forward, source: NEGEX}",
        "  - {phrase: free of, category: negated, direction: forward, source: NOWHERE}",
        "eeg-reading.yaml: cues/",
    ),
]


@pytest.fixture
def cards(tmp_path: Path) -> Path:
    """A copy of cards/ to break."""
    copy = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", copy)
    return copy


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(KnowledgeError) as raised:
        load_knowledge(directory)
    return raised.value.problems


def break_file(cards: Path, name: str, old: str, new: str) -> None:
    path = cards / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{name} no longer holds {old!r}: update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_shipped_knowledge_base_loads(cards: Path) -> None:
    assert load_knowledge(cards).cards


def test_a_variant_replaces_text_sources_and_indicator_and_keeps_the_rest(cards: Path) -> None:
    kind = load_knowledge(cards).cards["tizanidine-cyp1a2-interaction"]
    warning = kind.variant("label-warning")
    assert (kind.indicator, warning.indicator) == ("critical", "warning")
    assert warning.text.summaries != kind.text.summaries
    assert warning.text.detail != kind.text.detail
    assert warning.sources == ("TIZANIDINE_LABEL_CYP1A2",)
    assert "(CYP1A2 inhibitors)" in warning.citations
    assert "(CYP1A2 inhibitors)" not in kind.citations
    assert (warning.source, warning.suggestions, warning.facts) == (
        kind.source,
        kind.suggestions,
        kind.facts,
    )
    assert kind.variant(None) is kind


@pytest.mark.parametrize(("name", "old", "new", "problem"), BREAKAGES, ids=lambda v: None)
def test_each_broken_file_is_reported(
    cards: Path, name: str, old: str, new: str, problem: str
) -> None:
    break_file(cards, name, old, new)
    assert problems_of(cards)[0].startswith(problem)


def test_a_file_that_is_not_yaml_cannot_be_read(cards: Path) -> None:
    break_file(
        cards, "thresholds.yaml", "  calcium-lookback-days:\n", "  calcium-lookback-days: [\n"
    )
    [problem] = problems_of(cards)
    assert problem.startswith("thresholds.yaml: cannot be read: while parsing a flow sequence")


def test_a_missing_file_cannot_be_read(cards: Path) -> None:
    (cards / "orders.yaml").unlink()
    [problem] = problems_of(cards)
    assert problem.startswith("orders.yaml: cannot be read: [Errno 2] No such file or directory")


@pytest.mark.parametrize("name", ["orders.yaml", "cards.yaml", "valuesets/eeg.yaml"])
def test_an_empty_file_is_a_problem_not_a_crash(cards: Path, name: str) -> None:
    (cards / name).write_text("# emptied by mistake\n", encoding="utf-8")
    assert problems_of(cards) == [f"{Path(name).name}: is empty"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\x00", "'utf-8' codec can't decode byte 0xff"),
        ("thresholds: x\n".encode("utf-16"), "'utf-8' codec can't decode byte 0xff"),
        (b"x: " + b"9" * 5000 + b"\n", "Exceeds the limit (4300 digits)"),
    ],
)
def test_a_file_that_is_not_utf8_yaml_cannot_be_read(
    cards: Path, content: bytes, reason: str
) -> None:
    (cards / "thresholds.yaml").write_bytes(content)
    [problem] = problems_of(cards)
    assert problem.startswith("thresholds.yaml: cannot be read: ") and reason in problem


def test_a_fifo_in_place_of_a_file_is_a_problem_not_a_hang(cards: Path) -> None:
    (cards / "valuesets" / "eeg.yaml").unlink()
    os.mkfifo(cards / "valuesets" / "eeg.yaml")
    assert problems_of(cards) == ["eeg.yaml: cannot be read: not a regular file"]


def test_a_missing_directory_says_which_setting_names_it(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nowhere") == [
        f"{tmp_path / 'nowhere'}: knowledge directory not found (set CDS_KNOWLEDGE_DIR)"
    ]


def test_every_problem_is_listed_not_just_the_first(cards: Path) -> None:
    break_file(cards, "thresholds.yaml", "    source: LOCAL\n", "    source: NOWHERE\n")
    break_file(cards, "cards.yaml", "when: dxa_due", "when: dxa_overdue")
    assert len(problems_of(cards)) == 2


def test_the_version_is_declared_and_the_hash_covers_every_file_read(cards: Path) -> None:
    loaded = load_knowledge(cards)
    declared = yaml.safe_load((cards / "version.yaml").read_text(encoding="utf-8"))["version"]
    assert loaded.version == declared
    assert len(loaded.content_hash) == 64
    assert load_knowledge(cards).content_hash == loaded.content_hash  # stable across loads
    # Any file the loader reads changes the hash; one it does not read (the README) does not.
    (cards / "README.md").write_text("edited", encoding="utf-8")
    assert load_knowledge(cards).content_hash == loaded.content_hash
    for name in ("version.yaml", "cards.yaml", "valuesets/leg-cramps.yaml", "eeg-reading.yaml"):
        path = cards / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        assert load_knowledge(cards).content_hash != loaded.content_hash, name
        path.write_bytes(original)
    assert load_knowledge(cards).content_hash == loaded.content_hash


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0-rc1", ""])
def test_a_version_that_is_not_major_minor_patch_is_refused(cards: Path, version: str) -> None:
    (cards / "version.yaml").write_text(f'version: "{version}"\n', encoding="utf-8")
    [problem] = problems_of(cards)
    assert problem.startswith("version.yaml: version: ")


def test_a_missing_version_file_cannot_be_read(cards: Path) -> None:
    (cards / "version.yaml").unlink()
    [problem] = problems_of(cards)
    assert problem.startswith("version.yaml: cannot be read")


def test_a_card_kind_may_be_silent_and_a_deployment_may_change_its_mode(cards: Path) -> None:
    break_file(
        cards, "cards.yaml", "    snooze_days: 30\n", "    snooze_days: 30\n    mode: silent\n"
    )
    loaded = load_knowledge(cards)
    [silent] = loaded.silent_kinds()
    assert loaded.cards[silent].mode == "silent"
    assert loaded.with_modes({silent: "active"}).silent_kinds() == []
    assert loaded.silent_kinds() == [silent]  # the loaded knowledge itself is unchanged
    with pytest.raises(ValueError, match="unknown card kind"):
        loaded.with_modes({"no-such-kind": "silent"})


def test_a_mode_other_than_active_or_silent_is_refused(cards: Path) -> None:
    break_file(
        cards, "cards.yaml", "    snooze_days: 30\n", "    snooze_days: 30\n    mode: quiet\n"
    )
    [problem] = problems_of(cards)
    assert problem.startswith("cards.yaml: cards/") and "'quiet' is not one of" in problem
