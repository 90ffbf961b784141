"""Feedback analysis per card kind, and retention (pruning old records)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, literal_column, select

from cds_service.store import aware, session
from cds_service.store.schema import feedback, issued_cards, jwt_replay


@dataclass
class KindReport:
    """Outcomes of one card kind (of one content version, and one week, when split by them)."""

    kind: str
    version: str | None = None  # cards/version.yaml of the cards counted; None: not split by it
    content: str | None = None  # their content hash (sha256, hex) when split by version; "": none
    week: date | None = None  # the Monday (UTC) of the week the cards were issued; None: all weeks
    shown: int = 0  # returned to the EHR
    silent: int = 0  # would have been shown: recorded while the kind was silent
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / (accepted + overridden): the share of acted-on cards that were accepted."""
        acted = self.accepted + self.overridden
        return self.accepted / acted if acted else None


# Characters a sender could use to forge a line of the report or drive a terminal: C0 and C1
# controls (ESC sequences, CR/LF), DEL, and the Unicode bidirectional formatting characters that
# reorder what is shown (Unicode Standard Annex #9: embeddings, overrides, isolates, marks).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with each unprintable character replaced by U+FFFD (stored before they were refused)."""
    return UNPRINTABLE.sub("\ufffd", text)


# Cards recorded before issued cards carried their content version (migration 0004).
UNVERSIONED = "(unversioned)"


def _day(dialect: str) -> Any:
    """The UTC calendar day a card was issued on (SQLite stores the UTC time as text)."""
    if dialect == "postgresql":
        # A literal, not a bound parameter: GROUP BY must repeat the very same expression.
        return func.date(func.timezone(literal_column("'UTC'"), issued_cards.c.issued_at))
    return func.date(issued_cards.c.issued_at)


def report(
    url: str, since: datetime | None, *, by_version: bool = False, by_week: bool = False
) -> list[KindReport]:
    """Per card kind (and content version, and issue week, if asked): cards shown and silent
    since `since`, and one outcome per shown card from its feedback.

    A card with any `accepted` item counts as accepted, in whatever order its items came (taking a
    suggestion is done; dismissing the card afterwards only clears it from view). Otherwise it
    counts as overridden, with the reason of its latest override. Outcomes count in the week the
    card was issued. Feedback on a silent card (no EHR was shown it) counts nothing. See README,
    "Feedback".
    """
    version, content_hash = issued_cards.c.knowledge_version, issued_cards.c.content_hash
    with session(url, maintenance=True) as connection:
        day = _day(connection.dialect.name)
        shown_query = select(
            issued_cards.c.card_kind,
            version,
            content_hash,
            day,
            issued_cards.c.silent,
            func.count(),
        ).group_by(issued_cards.c.card_kind, version, content_hash, day, issued_cards.c.silent)
        items_query = (
            select(
                issued_cards.c.card_uuid,
                issued_cards.c.card_kind,
                version,
                content_hash,
                day,
                feedback.c.outcome,
                feedback.c.override_system,
                feedback.c.override_code,
                feedback.c.override_display,
            )
            # Only feedback posted to the service that issued the card (its own feedback URL).
            .join(
                feedback,
                (feedback.c.card_uuid == issued_cards.c.card_uuid)
                & (feedback.c.service_id == issued_cards.c.service_id),
            )
            .where(issued_cards.c.silent.is_(False))
            .order_by(feedback.c.outcome_at, feedback.c.id)
        )
        if since is not None:
            shown_query = shown_query.where(issued_cards.c.issued_at >= since)
            items_query = items_query.where(issued_cards.c.issued_at >= since)
        shown = connection.execute(shown_query).all()
        items = connection.execute(items_query).all()

    kinds: dict[tuple[str, str | None, str | None, date | None], KindReport] = {}

    def entry(kind: str, release: str | None, content: str | None, issued: Any) -> KindReport:
        split = (release or UNVERSIONED, content or "") if by_version else (None, None)
        key = (kind, *split, _monday(issued) if by_week else None)
        if key not in kinds:
            kinds[key] = KindReport(kind, split[0], split[1], key[3])
        return kinds[key]

    for kind, release, content, issued, silent, count in shown:
        row = entry(kind, release, content, issued)
        if silent:
            row.silent += count
        else:
            row.shown += count
    accepted: set[str] = set()
    # card -> reason of its latest override: (system, code), else its display alone
    override_reason: dict[str, tuple[str, str]] = {}
    card_row: dict[str, KindReport] = {}
    # A reason is counted by its system and code (the same code may mean other things in another
    # system), named by the display items gave it most often: some clients (the CDS Hooks sandbox)
    # send the code alone, and the same reason must not count as two.
    displays: dict[tuple[str, str], Counter[str]] = {}
    for card, kind, release, content, issued, outcome, system, code, display in items:
        card_row[card] = entry(kind, release, content, issued)
        if outcome == "accepted":
            accepted.add(card)
            continue
        reason = (system or "", code) if code else ("", display or "(no reason given)")
        override_reason[card] = reason
        if code and display:
            displays.setdefault(reason, Counter())[display] += 1
    for card, row in card_row.items():
        if card in accepted:
            row.accepted += 1
        else:
            row.overridden += 1
            reason = override_reason[card]
            named = displays[reason].most_common(1)[0][0] if reason in displays else reason[1]
            row.reasons[printable(named)] += 1
    return sorted(
        kinds.values(), key=lambda k: (k.kind, k.version or "", k.content or "", k.week or date.min)
    )


def _monday(day: Any) -> date:
    """The Monday of the week of a day as the database returns it (a date, or ISO text)."""
    value = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
    return value - timedelta(days=value.weekday())


def versions(url: str, since: datetime | None) -> list[tuple[str, str, datetime, datetime, int]]:
    """Every content (version, hash) cards were issued with since `since`: first and last issue
    time, and how many cards (shown and silent)."""
    version, content = issued_cards.c.knowledge_version, issued_cards.c.content_hash
    query = (
        select(
            version,
            content,
            func.min(issued_cards.c.issued_at),
            func.max(issued_cards.c.issued_at),
            func.count(),
        )
        .group_by(version, content)
        .order_by(func.min(issued_cards.c.issued_at))
    )
    if since is not None:
        query = query.where(issued_cards.c.issued_at >= since)
    with session(url, maintenance=True) as connection:
        rows = connection.execute(query).all()
    return [
        (v or UNVERSIONED, h or "", aware(first), aware(last), n) for v, h, first, last, n in rows
    ]


def unbumped(seen: list[tuple[str, str, datetime, datetime, int]]) -> dict[str, list[str]]:
    """Each version (of `versions()`) that cards were issued with under more than one content
    hash: its content changed without a version bump. Version -> its hashes, oldest first."""
    hashes: dict[str, list[str]] = {}
    for version, content, *_ in seen:
        hashes.setdefault(version, []).append(content)
    return {v: h for v, h in hashes.items() if len(h) > 1 and v != UNVERSIONED}


def prune(url: str, before: datetime, now: datetime) -> dict[str, int]:
    """Delete issued cards and feedback recorded before `before`, and expired JWT ids."""
    # A year of records may take longer than a call's deadline and timeouts.
    with session(url, write=True, maintenance=True) as connection:
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
    return {
        "issued_cards": removed_cards or 0,
        "feedback": removed_feedback or 0,
        "jwt_replay": removed_jti or 0,
    }
