"""The card gallery: its HTML read as a parser sees it, then opened in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.gallery import (
    SCENARIO_NOW,
    Example,
    GalleryError,
    examples,
    render_page,
    write_gallery,
)
from cds_service.knowledge import Knowledge
from tests.conftest import FIXTURES, NOW, ROOT

SCENARIOS = FIXTURES / "scenarios"
# Where the browser test leaves its screenshots (gitignored); CDS_TEST_ARTIFACTS moves them.
ARTIFACTS = Path(os.environ.get("CDS_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
# One xdist worker runs the module: the gallery is built once.
pytestmark = pytest.mark.xdist_group("gallery")
CHROMIUM = (
    "/usr/bin/chromium"  # Debian's package: .ci/run installs it, Playwright downloads nothing
)


class Page(HTMLParser):
    """The parts of the gallery a test checks: each element's tag, classes and attributes, with
    the kind and example it sits in, and the text of each element's subtree."""

    VOID: ClassVar = frozenset({"meta", "input", "br", "img", "link", "hr"})

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        element = {
            "tag": tag,
            "classes": set(values.get("class", "").split()),
            "attrs": values,
            "text": "",
            "parents": list(self._open),
        }
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.elements if e["tag"] == tag and (cls is None or cls in e["classes"])
        ]

    def inside(
        self, outer: dict[str, Any], tag: str, cls: str | None = None
    ) -> list[dict[str, Any]]:
        return [e for e in self.find(tag, cls) if any(p is outer for p in e["parents"])]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gallery written by the command, as a committee member would make it, for a deployment
    that runs calcium-low silent."""
    out = tmp_path_factory.mktemp("gallery")
    env = {"CDS_KNOWLEDGE_DIR": None, "CDS_CARD_MODES": "calcium-low=silent"}
    result = CliRunner().invoke(main, ["gallery", str(out)], env=env)
    assert result.exit_code == 0, result.output
    return out / "index.html"


@pytest.fixture(scope="module")
def shown(knowledge: Knowledge) -> list[Example]:
    return examples(knowledge, SCENARIOS)


def test_scenarios_are_evaluated_at_the_scenario_tests_clock() -> None:
    assert SCENARIO_NOW == NOW


def test_every_card_kind_and_variant_is_shown_once_with_a_sign_off(
    gallery: Path, knowledge: Knowledge
) -> None:
    page = Page(gallery.read_text(encoding="utf-8"))
    kinds = [e["attrs"]["data-kind"] for e in page.find("section", "kind")]
    assert sorted(kinds) == sorted(knowledge.cards)  # each kind once
    for section in page.find("section", "kind"):
        key = section["attrs"]["data-kind"]
        variants = {e["attrs"]["data-variant"] for e in page.inside(section, "article", "example")}
        assert variants == {"", *knowledge.cards[key].variants}, key
        assert len(page.inside(section, "fieldset", "signoff")) == 1, key
        # Grouped by cause: a kind sits in the section of its cause in cards.yaml.
        cause = next(p for p in section["parents"] if "cause" in p["classes"])
        assert cause["attrs"]["data-cause"] == knowledge.cards[key].cause
    assert knowledge.version and knowledge.version in page.find("p", "content-version")[0]["text"]
    assert page.find("code", "content-hash")[0]["text"] == knowledge.content_hash


def test_each_card_shows_what_the_service_sends(
    gallery: Path, shown: list[Example], knowledge: Knowledge
) -> None:
    """Every card of the page against the card the renderer made: indicator, summary, source,
    one button per suggestion with each action, links and override reasons."""
    page = Page(gallery.read_text(encoding="utf-8"))
    by_key = {(e.finding.kind, e.variant or "", e.card["indicator"]): e for e in shown}
    articles = page.find("article", "example")
    keys = [
        tuple(a["attrs"][f"data-{n}"] for n in ("kind", "variant", "indicator")) for a in articles
    ]
    assert sorted(keys) == sorted(by_key)
    for article, key in zip(articles, keys, strict=True):
        example = by_key[key]
        card = example.card
        (rendered,) = page.inside(article, "div", "cds-card")
        assert f"indicator-{card['indicator']}" in rendered["classes"]
        assert page.inside(rendered, "p", "summary")[0]["text"] == card["summary"]
        assert card["source"]["label"] in page.inside(rendered, "span", "card-source")[0]["text"]
        buttons = page.inside(rendered, "button", "suggestion-button")
        assert len(buttons) == len(card.get("suggestions", [])), card["summary"]
        for button, suggestion in zip(buttons, card.get("suggestions", []), strict=True):
            assert button["text"].startswith(suggestion["label"])
        actions = page.inside(rendered, "li", "action")
        assert len(actions) == sum(len(s["actions"]) for s in card.get("suggestions", []))
        for item, action in zip(
            actions, [a for s in card.get("suggestions", []) for a in s["actions"]], strict=True
        ):
            assert f"action-{action['type']}" in item["classes"]
            if action["type"] == "delete":
                assert action["resourceId"] in item["text"]
            else:
                assert action["resource"]["resourceType"] in item["text"]
        reasons = [
            e["attrs"]["data-code"]
            for ul in page.inside(rendered, "ul", "override-reasons")
            for e in page.inside(ul, "li")
        ]
        assert reasons == [r["code"] for r in card.get("overrideReasons", [])]
        links = [e["attrs"]["href"] for e in page.inside(rendered, "a", "link-button")]
        assert links == [link["url"] for link in card.get("links", [])]
        # Beside the card: the suggestions this example does not offer (every one is signed off),
        # the scenario that raised it, its facts and its citations.
        not_offered = [
            li for ul in page.inside(article, "ul", "not-offered") for li in page.inside(ul, "li")
        ]
        assert len(buttons) + len(not_offered) == len(example.kind.suggestions)
        assert example.scenario.name in article["text"]
        facts = page.inside(article, "table", "facts")[0]["text"]
        assert all(name in facts for name in example.finding.facts)
        citations = page.inside(article, "ul", "citations")[0]["text"]
        assert all(knowledge.sources[k]["citation"] in citations for k in example.kind.sources)


def test_the_example_shown_offers_the_most_suggestions(
    shown: list[Example], knowledge: Knowledge
) -> None:
    """Of the scenarios raising a kind, the gallery shows the one with the most buttons, so a
    suggestion no example offers is one no scenario offers."""
    offered: dict[tuple[str, str | None, str], int] = defaultdict(int)
    from cds_service.gallery import scenario_examples

    for example in scenario_examples(knowledge, SCENARIOS):
        key = (example.finding.kind, example.variant, example.card["indicator"])
        offered[key] = max(offered[key], len(example.card.get("suggestions", [])))
    assert {
        (e.finding.kind, e.variant, e.card["indicator"]): len(e.card.get("suggestions", []))
        for e in shown
    } == offered


def test_the_detail_is_markdown_and_record_text_stays_text(
    shown: list[Example], knowledge: Knowledge
) -> None:
    quoted = replace(
        shown[0],
        card={**shown[0].card, "detail": "**Low** calcium. <script>alert(1)</script>\n\n- one"},
    )
    html = render_page(knowledge, [quoted])
    assert "<strong>Low</strong> calcium. &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<li>one</li>" in html


def test_the_page_is_one_file_that_fetches_nothing(gallery: Path) -> None:
    html = gallery.read_text(encoding="utf-8")
    page = Page(html)
    assert [p.name for p in gallery.parent.iterdir()] == ["index.html"]
    assert not page.find("link") and not page.find("img") and not page.find("iframe")
    assert all("src" not in e["attrs"] for e in page.find("script"))
    assert "url(" not in html and "@import" not in html and "fetch(" not in html


def test_the_same_content_gives_the_same_page(gallery: Path, tmp_path: Path) -> None:
    from cds_service.knowledge import load_knowledge

    again = write_gallery(
        load_knowledge(ROOT / "cards"), SCENARIOS, tmp_path, {"calcium-low": "silent"}
    )
    assert again.read_bytes() == gallery.read_bytes()


def test_a_kind_no_scenario_raises_is_named(knowledge: Knowledge, tmp_path: Path) -> None:
    shutil.copy(SCENARIOS / "14-calcium-8-4-below-default.json", tmp_path)
    with pytest.raises(GalleryError, match="quinine-for-cramps") as raised:
        examples(knowledge, tmp_path)
    assert "calcium-low," not in str(raised.value)  # the scenario raised it
    result = CliRunner().invoke(
        main, ["gallery", str(tmp_path / "out"), "--scenarios", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "tizanidine-cyp1a2-interaction (variant label-warning)" in result.output
    assert not (tmp_path / "out").exists()


def modes_shown(page: Page) -> dict[str, str]:
    """Each kind's mode as the page states it, with where it comes from."""
    return {
        section["attrs"]["data-kind"]: " ".join(
            page.inside(section, "span", "mode")[0]["text"].split()
        )
        for section in page.find("section", "kind")
    }


def test_each_kind_shows_the_mode_the_deployment_runs(
    gallery: Path, shown: list[Example], knowledge: Knowledge
) -> None:
    page = Page(gallery.read_text(encoding="utf-8"))
    modes = modes_shown(page)
    assert modes.pop("calcium-low") == "Mode: silent (CDS_CARD_MODES)"
    assert set(modes.values()) == {"Mode: active (cards.yaml)"}
    [note] = page.find("p", "modes")
    assert "CDS_CARD_MODES was set when this page was built (calcium-low=silent)" in " ".join(
        note["text"].split()
    )
    # A kind cards.yaml makes silent, and no CDS_CARD_MODES: the page says the file decides.
    in_yaml = replace(
        knowledge,
        cards={
            **knowledge.cards,
            "quinine-for-cramps": replace(knowledge.cards["quinine-for-cramps"], mode="silent"),
        },
    )
    page = Page(render_page(in_yaml, shown))
    assert modes_shown(page)["quinine-for-cramps"] == "Mode: silent (cards.yaml)"
    assert "CDS_CARD_MODES was not set" in " ".join(page.find("p", "modes")[0]["text"].split())


# ---------------------------------------------------------------------------------------------
# In a real browser: Debian's chromium driven by Playwright.

# The boxes that must hold their content: the cards, what sits beside them, the sign-off forms.
CHECKED = ".cds-card, .review, fieldset.signoff"
OVERFLOW = """
(roots) => {
  const problems = [];
  for (const root of document.querySelectorAll(roots)) {
    const box = root.getBoundingClientRect();
    for (const el of [root, ...root.querySelectorAll("*")]) {
      const style = getComputedStyle(el);
      const name = el.tagName.toLowerCase() + "." + el.className + " in " +
        (root.dataset.kind || root.closest("[data-kind]")?.dataset.kind || root.className);
      if (style.display === "none" || style.display === "inline") continue;
      if (el.scrollWidth > el.clientWidth + 1)
        problems.push(`${name}: content ${el.scrollWidth}px wide in ${el.clientWidth}px`);
      if (style.overflowY !== "visible" && el.scrollHeight > el.clientHeight + 1)
        problems.push(`${name}: text clipped (${el.scrollHeight}px in ${el.clientHeight}px)`);
      const r = el.getBoundingClientRect();
      if (r.width && (r.left < box.left - 1 || r.right > box.right + 1))
        problems.push(`${name}: sticks out of its box (${r.left}-${r.right} in ${box.left}-${box.right})`);
    }
  }
  return problems;
}
"""


def chromium() -> str:
    """Debian's chromium; in CI its absence (or Playwright's) fails the test, elsewhere it skips."""
    missing = None
    if not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing:
        message = f"THE GALLERY WAS NOT CHECKED IN A BROWSER: {missing}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def test_the_gallery_in_a_real_browser(gallery: Path, knowledge: Knowledge, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(gallery.as_uri())
            assert requested == [gallery.as_uri()]  # nothing else loaded: no CDN, no network

            kinds = page.eval_on_selector_all("section.kind", "s => s.map(e => e.dataset.kind)")
            assert sorted(kinds) == sorted(knowledge.cards)
            for card in page.locator(".cds-card").all():
                assert card.is_visible()
                width = card.bounding_box()["width"]  # type: ignore[index]
                assert 400 <= width <= 600, width  # an EHR side panel's width
            assert page.evaluate(OVERFLOW, CHECKED) == []
            whole = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert whole[0] <= whole[1], whole  # no sideways scrolling
            buttons = page.locator(".cds-card button.suggestion-button")
            assert buttons.count() > 0
            assert all(b.is_visible() and b.inner_text().strip() for b in buttons.all())
            reasons = page.locator(".cds-card .override-reasons li")
            assert reasons.count() > 0 and all(r.is_visible() for r in reasons.all())
            page.screenshot(path=ARTIFACTS / "gallery.png", full_page=True)

            # Sign-off entries saved as a file made in the page.
            first = page.locator("fieldset.signoff").first
            first.locator("[name=reviewer]").fill("Dr A. Reviewer")
            first.locator("[name=role]").fill("pharmacist")
            first.locator("[name=date]").fill("2026-12-01")
            first.locator("input[value=changes]").check()
            first.locator("[name=comments]").fill("Say which calcium.")
            with page.expect_download() as download:
                page.click("#save-signoff")
            saved = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
            assert saved["knowledgeVersion"] == knowledge.version
            assert saved["knowledgeHash"] == knowledge.content_hash
            assert len(saved["signoffs"]) == len(knowledge.cards)
            assert saved["signoffs"][0] == {
                "kind": first.get_attribute("data-kind"),
                "reviewer": "Dr A. Reviewer",
                "role": "pharmacist",
                "date": "2026-12-01",
                "decision": "changes",
                "comments": "Say which calcium.",
            }
            assert saved["signoffs"][1]["decision"] == ""

            # Printed on A4 (about 720 CSS px between the margins): still nothing overflows.
            page.set_viewport_size({"width": 720, "height": 1000})
            page.emulate_media(media="print")
            assert page.evaluate(OVERFLOW, CHECKED) == []
            assert not page.locator("#save-signoff").is_visible()
            page.screenshot(path=ARTIFACTS / "gallery-print.png", full_page=True)

            # A phone (375 CSS px): the panel narrows, the hash wraps, nothing scrolls sideways.
            page.emulate_media(media="screen")
            page.set_viewport_size({"width": 375, "height": 800})
            assert page.evaluate(OVERFLOW, f"{CHECKED}, .page-header, .ehr-panel") == []
            whole = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert whole[0] <= whole[1], whole
            page.screenshot(path=ARTIFACTS / "gallery-375.png", full_page=True)
        finally:
            browser.close()
