"""Feedback rows carry the card's kind, patient hash and evidence hash, so snoozing reads one small
indexed table instead of joining every card ever issued to the patient.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("card_kind", sa.String(100), nullable=True))
        batch.add_column(sa.Column("patient_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("evidence_hash", sa.String(64), nullable=True))
    op.create_index("ix_feedback_patient_outcome", "feedback", ["patient_hash", "outcome"])
    # Existing feedback: copy what the issued-card record says.
    op.execute(
        """
        UPDATE feedback SET
          card_kind = (SELECT card_kind FROM issued_cards c WHERE c.card_uuid = feedback.card_uuid),
          patient_hash = (SELECT patient_hash FROM issued_cards c WHERE c.card_uuid = feedback.card_uuid),
          evidence_hash = (SELECT evidence_hash FROM issued_cards c WHERE c.card_uuid = feedback.card_uuid)
        """
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_patient_outcome", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("evidence_hash")
        batch.drop_column("patient_hash")
        batch.drop_column("card_kind")
