"""A resumed build's rate and ETA count its current run only.

A build claimed again after it had started (resumed after a crash, retried after a
failure, or claimed after its scheduler stopped it) kept `started_at`, and its rate was
`processed / (now - started_at)`: the time it spent failed or waiting counted as work, and
a retried million-profile build showed an ETA of hours. `audience_build` gains when the
current run began and how many profiles it had placed by then; the rate counts the
profiles placed since. Both are NULL for a build that was never resumed, which is every
build of an upgraded workspace: nothing else changes.

Revision ID: 0011_build_resumed_at
Revises: 0010_segment_member_add_indexes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_build_resumed_at"
down_revision: str | Sequence[str] | None = "0010_segment_member_add_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audience_build") as batch:  # SQLite: ADD COLUMN, no copy
        batch.add_column(sa.Column("resumed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("resumed_processed", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audience_build") as batch:
        batch.drop_column("resumed_processed")
        batch.drop_column("resumed_at")
