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
    """Per card kind: cards shown since `since`, and one outcome per card from its feedback.

    A card with any `accepted` item counts as accepted, in whatever order its items came (taking a
    suggestion is done; dismissing the card afterwards only clears it from view). Otherwise it
    counts as overridden, with the reason of its latest override. See README, "Feedback".
    """
    shown_query = select(issued_cards.c.card_kind, func.count()).group_by(issued_cards.c.card_kind)
    items_query = (
        select(
            issued_cards.c.card_uuid,
            issued_cards.c.card_kind,
            feedback.c.outcome,
            feedback.c.override_code,
            feedback.c.override_display,
        )
        # Only feedback posted to the service that issued the card (its own feedback URL).
        .join(
            feedback,
            (feedback.c.card_uuid == issued_cards.c.card_uuid)
            & (feedback.c.service_id == issued_cards.c.service_id),
        )
        .order_by(feedback.c.outcome_at, feedback.c.id)
    )
    if since is not None:
        shown_query = shown_query.where(issued_cards.c.issued_at >= since)
        items_query = items_query.where(issued_cards.c.issued_at >= since)
    try:
        with engine_for(url).begin() as connection:
            shown = unbounded(connection).execute(shown_query).all()
            items = connection.execute(items_query).all()
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    kinds: dict[str, KindReport] = {kind: KindReport(kind, shown=count) for kind, count in shown}
    accepted: set[str] = set()
    override_reason: dict[
        str, str
    ] = {}  # card -> reason (code, else display) of its latest override
    card_kind: dict[str, str] = {}
    # A reason is counted by its code, named by the display any item gave it: some clients (the
    # CDS Hooks sandbox) send the code alone, and the same reason must not count as two.
    display_of: dict[str, str] = {}
    for card, kind, outcome, code, display in items:
        card_kind[card] = kind
        if outcome == "accepted":
            accepted.add(card)
            continue
        override_reason[card] = code or display or "(no reason given)"
        if code and display:
            display_of.setdefault(code, display)
    for card, kind in card_kind.items():
        entry = kinds.setdefault(kind, KindReport(kind))
        if card in accepted:
            entry.accepted += 1
        else:
            entry.overridden += 1
            reason = override_reason[card]
            entry.reasons[display_of.get(reason, reason)] += 1
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
