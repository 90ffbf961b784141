"""Clinical rules: pure functions from one hook call's Evaluation to the findings it raises.

RULES is the explicit registry of rule sets that cards/services.yaml names in each service's `rules`.
"""

from __future__ import annotations

from collections.abc import Callable

from cds_service.rules import orders, patient_view
from cds_service.rules.evaluation import Evaluation, Finding

RuleSet = Callable[[Evaluation], list[Finding]]

RULES: dict[str, RuleSet] = {
    "post-stroke-cramps-patient-view": patient_view.evaluate,
    "cramp-medicines-order-review": orders.evaluate,
}

__all__ = ["RULES", "Evaluation", "Finding", "RuleSet"]
