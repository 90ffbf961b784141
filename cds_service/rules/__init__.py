"""Clinical rules: pure functions from one hook call's Evaluation to the findings it raises.

RULES is the explicit registry of rule sets that cards/services.yaml names in each service's `rules`.
"""

from __future__ import annotations

from collections.abc import Callable

from cds_service.rules import orders, patient_view
from cds_service.rules.evaluation import Evaluation, Finding

RuleSet = Callable[[Evaluation], list[Finding]]


def for_the_living(rule_set: RuleSet) -> RuleSet:
    """The rule set, giving no cards (and so no orders) for a deceased patient, whatever the hook."""

    def evaluate(ev: Evaluation) -> list[Finding]:
        return [] if ev.deceased else rule_set(ev)

    return evaluate


RULES: dict[str, RuleSet] = {
    "post-stroke-cramps-patient-view": for_the_living(patient_view.evaluate),
    "cramp-medicines-order-review": for_the_living(orders.evaluate),
}

__all__ = ["RULES", "Evaluation", "Finding", "RuleSet"]
