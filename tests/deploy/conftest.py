"""The deploy tests' `deploy` marker (opt-in: slow, real nginx) and their tool checks."""

from __future__ import annotations

import os
import shutil

import pytest

OPT_IN = "CDS_DEPLOY_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"deploy: starts real servers (nginx, gunicorn); runs in CI or with {OPT_IN}=1"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("CI") or os.environ.get(OPT_IN):
        return
    skip = pytest.mark.skip(reason=f"opt-in deploy test: set {OPT_IN}=1 (CI runs it)")
    for item in items:
        if item.get_closest_marker("deploy"):
            item.add_marker(skip)


def require_tool(name: str, install: str) -> str:
    """The path of command `name`; in CI its absence fails the test, elsewhere it skips."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
