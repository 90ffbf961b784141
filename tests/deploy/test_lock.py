"""The lock files: every dependency pyproject.toml declares is pinned there, to a version it allows,
with hashes (a stale lock after a pyproject change fails here, not in a build)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")


def pins(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of a pip-compile --generate-hashes file."""
    found: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match.group(1))
            found[name] = (Version(match.group(2)), 0)
        elif "--hash=sha256:" in line and name:
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements.lock", pyproject()["project"]["dependencies"]),
        ("deploy/requirements-build.lock", pyproject()["build-system"]["requires"]),
    ],
)
def test_every_declared_dependency_is_pinned_with_hashes(
    lock: str, requirements: list[str]
) -> None:
    pinned = pins(ROOT / lock)
    assert pinned, lock
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in {lock}: run `make lock`"
        version, _ = pinned[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name} {version}, pyproject.toml asks {requirement.specifier}: `make lock`"
        )
    for name, (_, hashes) in pinned.items():
        assert hashes >= 1, f"{name} has no hash in {lock}"
