"""Feedback analysis per card kind, and retention (pruning old records)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select

from cds_service.store import STORE_ERRORS, StoreUnavailable, engine_for, unbounded
from cds_service.store.schema import feedback, issued_cards, jwt_replay


@dataclass
class KindReport:
    """Outcomes of one card kind."""

    kind: str
    shown: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / (accepted + overridden): the share of acted-on cards that were accepted."""
        acted = self.accepted + self.overridden
        return self.accepted / acted if acted else None


def report(url: str, since: datetime | None) -> list[KindReport]:
    """Per card kind: cards shown since `since`, and the feedback on those cards."""
    shown_query = select(issued_cards.c.card_kind, func.count()).group_by(issued_cards.c.card_kind)
    # One outcome per card: the latest feedback item wins (a clinician may change their mind).
    latest = (
        select(feedback.c.card_uuid, func.max(feedback.c.outcome_at).label("at"))
        .group_by(feedback.c.card_uuid)
        .subquery()
    )
    outcome_query = (
        select(
            issued_cards.c.card_kind,
            feedback.c.outcome,
            feedback.c.override_code,
            feedback.c.override_display,
        )
        .join(feedback, feedback.c.card_uuid == issued_cards.c.card_uuid)
        .join(
            latest,
            (latest.c.card_uuid == feedback.c.card_uuid) & (latest.c.at == feedback.c.outcome_at),
        )
    )
    if since is not None:
        shown_query = shown_query.where(issued_cards.c.issued_at >= since)
        outcome_query = outcome_query.where(issued_cards.c.issued_at >= since)
    try:
        with engine_for(url).begin() as connection:
            shown = unbounded(connection).execute(shown_query).all()
            outcomes = connection.execute(outcome_query).all()
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    kinds: dict[str, KindReport] = {kind: KindReport(kind, shown=count) for kind, count in shown}
    for kind, outcome, code, display in outcomes:
        entry = kinds.setdefault(kind, KindReport(kind))
        if outcome == "accepted":
            entry.accepted += 1
        else:
            entry.overridden += 1
            entry.reasons[display or code or "(no reason given)"] += 1
    return sorted(kinds.values(), key=lambda k: k.kind)


def prune(url: str, before: datetime, now: datetime) -> dict[str, int]:
    """Delete issued cards and feedback recorded before `before`, and expired JWT ids."""
    try:
        with engine_for(url).begin() as connection:
            unbounded(connection)  # a year of records may take longer than a call's timeout
            old_cards = select(issued_cards.c.card_uuid).where(issued_cards.c.issued_at < before)
            removed_feedback = connection.execute(
                delete(feedback).where(
                    (feedback.c.received_at < before) | feedback.c.card_uuid.in_(old_cards)
                )
            ).rowcount
            removed_cards = connection.execute(
                delete(issued_cards).where(issued_cards.c.issued_at < before)
            ).rowcount
            removed_jti = connection.execute(
                delete(jwt_replay).where(jwt_replay.c.expires_at < now)
            ).rowcount
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    return {
        "issued_cards": removed_cards or 0,
        "feedback": removed_feedback or 0,
        "jwt_replay": removed_jti or 0,
    }
