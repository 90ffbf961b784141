"""Tables. Patient identifiers are never stored in clear: only a keyed hash (HMAC-SHA256)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

# JWT ids already accepted, kept until the token expires, so a replayed client JWT is refused by
# every worker and replica sharing the database. Only a hash of issuer + jti is stored.
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Every card the service returned: makes feedback attributable and drives snoozing.
issued_cards = Table(
    "issued_cards",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("card_kind", String(100), nullable=False),
    Column("indicator", String(10), nullable=False),
    Column("patient_hash", String(64), nullable=False),
    Column("evidence_hash", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False, index=True),
    # The content that produced it (cards/version.yaml and the hash of the files; null for cards
    # recorded before 0004), and whether it was silent: recorded, not returned to the EHR.
    Column("knowledge_version", String(20), nullable=True),
    Column("content_hash", String(64), nullable=True),
    Column("silent", Boolean, nullable=False, server_default=false()),
)

# Feedback items as the CDS client sent them; item_hash makes a re-sent item a no-op.
feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_hash", String(64), nullable=False, unique=True),
    Column("card_uuid", String(36), nullable=False, index=True),
    Column("service_id", String(100), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),
    Column("override_system", String(200), nullable=True),
    Column("override_code", String(100), nullable=True),
    Column("override_display", String(300), nullable=True),
    Column("user_comment", Text, nullable=True),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    # Copied from the issued card when the feedback arrives (null if the card is unknown), so
    # snoozing reads feedback alone.
    Column("card_kind", String(100), nullable=True),
    Column("patient_hash", String(64), nullable=True),
    Column("evidence_hash", String(64), nullable=True),
    Index("ix_feedback_patient_outcome", "patient_hash", "outcome"),
)
