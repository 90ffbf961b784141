"""Feedback on cards (CDS Hooks §Feedback): stored once per item, the whole batch in one transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from cds_service.store import session
from cds_service.store.schema import feedback, issued_cards


def item_hash(service_id: str, item: dict[str, Any]) -> str:
    """The identity of a feedback item: the same item sent again hashes the same."""
    return hashlib.sha256(json.dumps([service_id, item], sort_keys=True).encode()).hexdigest()


def _row(
    service_id: str, item: dict[str, Any], outcome_at: datetime, received_at: datetime
) -> dict[str, Any]:
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    accepted = item.get("acceptedSuggestions")
    return {
        "item_hash": item_hash(service_id, item),
        "card_uuid": item["card"],
        "service_id": service_id,
        "outcome": item["outcome"],
        "accepted_suggestions": json.dumps([s["id"] for s in accepted]) if accepted else None,
        "override_system": reason.get("system"),
        "override_code": reason.get("code"),
        "override_display": reason.get("display"),
        "user_comment": (item.get("overrideReason") or {}).get("userComment"),
        # In UTC: SQLite keeps no offset, and everything read back is taken as UTC.
        "outcome_at": outcome_at.astimezone(UTC),
        "received_at": received_at,
    }


def _attribute(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Copy each card's kind, patient hash and evidence hash from its issued-card record, when the
    service the feedback was posted to issued it and returned it (feedback on another service's
    card, on a card never issued, or on a silent card, which no EHR was shown, is kept as sent but
    snoozes and counts nothing)."""
    uuids = sorted({row["card_uuid"] for row in rows})
    found = connection.execute(
        select(
            issued_cards.c.card_uuid,
            issued_cards.c.service_id,
            issued_cards.c.card_kind,
            issued_cards.c.patient_hash,
            issued_cards.c.evidence_hash,
        ).where(issued_cards.c.card_uuid.in_(uuids), issued_cards.c.silent.is_(False))
    ).all()
    cards = {
        (uuid, service): (kind, patient, evidence)
        for uuid, service, kind, patient, evidence in found
    }
    for row in rows:
        row["card_kind"], row["patient_hash"], row["evidence_hash"] = cards.get(
            (row["card_uuid"], row["service_id"]), (None, None, None)
        )


def save_feedback(
    url: str,
    service_id: str,
    items: list[dict[str, Any]],
    outcome_times: list[datetime],
    received_at: datetime,
) -> int:
    """Store a validated batch, each item with its outcomeTimestamp as read (an aware datetime);
    returns how many items were new. Commits before returning."""
    rows = [
        _row(service_id, item, at, received_at)
        for item, at in zip(items, outcome_times, strict=True)
    ]
    new = 0
    with session(url, write=True) as connection:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        # RETURNING tells which rows were new: rowcount is not reliable for upserts on every driver.
        statement = (
            dialect.insert(feedback)
            .on_conflict_do_nothing(index_elements=["item_hash"])
            .returning(feedback.c.id)
        )
        _attribute(connection, rows)
        for row in rows:
            new += len(connection.execute(statement, row).all())
    return new
