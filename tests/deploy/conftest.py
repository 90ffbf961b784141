"""The deploy tests' opt-in markers and their tool checks.

`deploy`: real nginx and gunicorn, about two minutes; CI runs them (CI=true), or CDS_DEPLOY_TESTS=1.
`image`: builds and runs the container image (`make image-test`); only with CDS_IMAGE_TESTS=1.
"""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deploy: starts real servers (nginx, gunicorn); runs in CI or with CDS_DEPLOY_TESTS=1",
    )
    config.addinivalue_line(
        "markers", "image: builds and runs the container image; only with CDS_IMAGE_TESTS=1"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    run_deploy = bool(os.environ.get("CI") or os.environ.get("CDS_DEPLOY_TESTS"))
    run_image = bool(os.environ.get("CDS_IMAGE_TESTS"))
    for item in items:
        if item.get_closest_marker("deploy") and not run_deploy:
            item.add_marker(pytest.mark.skip(reason="opt-in: CDS_DEPLOY_TESTS=1 (CI runs it)"))
        if item.get_closest_marker("image") and not run_image:
            item.add_marker(pytest.mark.skip(reason="opt-in: make image-test (CDS_IMAGE_TESTS=1)"))


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
