"""Copied third-party data in fixtures/ is byte for byte what its provenance record names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

SYNTHEA = FIXTURES / "synthea"
# SOURCES.md: "## <file name>" then, in its section, "sha256 `<hex>`".
SECTION = re.compile(r"^## (\S+\.json)$.*?sha256 `([0-9a-f]{64})`", re.MULTILINE | re.DOTALL)


def recorded_hashes() -> dict[str, str]:
    text = (SYNTHEA / "SOURCES.md").read_text(encoding="utf-8")
    return dict(SECTION.findall(text))


def test_every_synthea_file_has_a_source() -> None:
    files = {p.name for p in SYNTHEA.glob("*.json")}
    assert files and files == set(recorded_hashes())


@pytest.mark.parametrize("name", sorted(recorded_hashes()), ids=lambda n: n.split("_")[0])
def test_synthea_file_is_unmodified(name: str) -> None:
    digest = hashlib.sha256((SYNTHEA / name).read_bytes()).hexdigest()
    assert digest == recorded_hashes()[name]


@pytest.mark.parametrize("path", [SYNTHEA / "README.md", FIXTURES / "spec" / "README.md"])
def test_copied_data_says_its_licence(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "Apache License 2.0" in text
    assert (
        (FIXTURES / "LICENSE-Apache-2.0.txt")
        .read_text(encoding="utf-8")
        .lstrip()
        .startswith("Apache License")
    )
