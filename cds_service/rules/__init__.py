"""Clinical rules: pure functions from a patient's record and the knowledge base to findings.

EVALUATORS is the explicit registry that cards/services.yaml names in each service's `evaluator`.
"""

from __future__ import annotations

from collections.abc import Callable

from cds_service.rules.base import Finding, HookInput

Evaluator = Callable[[HookInput], list[Finding]]


def _registry() -> dict[str, Evaluator]:
    from cds_service.rules import orders, patient_view

    return {
        "post-stroke-cramps-patient-view": patient_view.evaluate,
        "cramp-medicines-order-review": orders.evaluate,
    }


EVALUATORS: dict[str, Evaluator] = _registry()

__all__ = ["EVALUATORS", "Evaluator", "Finding", "HookInput"]
