"""Layers hold at import time: the clinical and FHIR-reading modules load no web framework or HTTP client."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

PURE_MODULES = [
    "cds_service",
    "cds_service.rules",
    "cds_service.clinical_text",
    "cds_service.fatigue",
    "cds_service.knowledge",
    "cds_service.fhir.record",
    "cds_service.fhir.data",
    "cds_service.render",
]


def loaded_by(module: str) -> set[str]:
    """Top-level packages in sys.modules after importing `module` in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("module", PURE_MODULES)
def test_no_web_framework_is_loaded(module: str) -> None:
    assert not {"flask", "flask_cors", "werkzeug"} & loaded_by(module)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_no_http_client_is_loaded(module: str) -> None:
    assert "httpx" not in loaded_by(module)
