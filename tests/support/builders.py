"""Small FHIR builders shared by tests."""

from __future__ import annotations

from typing import Any


def searchset(*resources: Any) -> dict[str, Any]:
    """A searchset Bundle holding `resources`, as a FHIR server or a prefetch would send it."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
