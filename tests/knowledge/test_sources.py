"""Cards cite their sources for clinicians; where the codes were copied from stays in the registry."""

from __future__ import annotations

import re

import pytest

from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.render import render_card
from cds_service.rules.evaluation import Finding

# What a reviewer needs and a clinician does not: a file path, a repository commit, a file name.
PROVENANCE_MARKS = re.compile(r"/work/|@[0-9a-f]{7,40}\b|\.(json|csv|tsv|xml|py)\b|local copy")


def test_every_source_a_card_cites_reads_as_a_citation(knowledge: Knowledge) -> None:
    cited = {key for kind in knowledge.cards.values() for key in kind.sources}
    assert cited  # the check below is not vacuous
    for key in sorted(cited):
        citation = knowledge.sources[key]["citation"]
        assert not PROVENANCE_MARKS.search(citation), f"{key}: {citation}"


@pytest.mark.parametrize("kind_id", ["beers-muscle-relaxant", "calcium-workup"])
def test_a_card_shows_short_citations_and_links_never_provenance(
    knowledge: Knowledge, kind_id: str
) -> None:
    clock = Clock()
    card = render_card(
        Finding(kind_id),
        knowledge.cards[kind_id],
        clock,
        {"patient_id": "p", "today": "2026-01-01"},
    )
    sources = card["detail"].split("**Sources:**", 1)[1]
    links = {link["url"]: link for link in card["links"]}
    for key in knowledge.cards[kind_id].sources:
        entry = knowledge.sources[key]
        assert entry["short"] in sources
        assert entry["citation"] not in card["detail"]  # the full reference is a link
        if "url" in entry:
            assert links[entry["url"]] == {
                "label": entry["short"],
                "url": entry["url"],
                "type": "absolute",
            }
        if "provenance" in entry:
            assert entry["provenance"] not in card["detail"]
    assert not PROVENANCE_MARKS.search(sources)


def test_every_source_a_card_cites_has_a_short_citation_without_provenance(
    knowledge: Knowledge,
) -> None:
    for kind in knowledge.cards.values():
        for key in kind.sources:
            short = knowledge.sources[key]["short"]
            assert not PROVENANCE_MARKS.search(short), (kind.key, key)


def test_the_value_set_copies_keep_their_provenance(knowledge: Knowledge) -> None:
    # Splitting citation from provenance must not lose where a VSAC expansion was read.
    vsac_copies = [
        entry
        for entry in knowledge.sources.values()
        if entry["citation"].startswith("VSAC ")
        and "github.com/cqframework" in entry.get("url", "")
    ]
    assert vsac_copies
    for entry in vsac_copies:
        assert "cqframework/" in entry.get("provenance", ""), entry["citation"]
