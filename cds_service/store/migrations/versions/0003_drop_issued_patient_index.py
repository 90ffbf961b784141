"""Drop the issued-card index by patient and kind: snoozing reads feedback since 0002, and nothing
else looks issued cards up by patient, while every recorded card paid for the index.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_issued_cards_patient_kind", table_name="issued_cards")


def downgrade() -> None:
    op.create_index("ix_issued_cards_patient_kind", "issued_cards", ["patient_hash", "card_kind"])
