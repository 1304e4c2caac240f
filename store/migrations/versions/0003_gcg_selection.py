"""GCG selection by percent (R11a; issue 13 §3).

profile_database gains the GCG percent (basis points, 0 = no percent selection) and
the GCG seed (chosen at the first `gcg set`); profile gains gcg_override, the operator's
choice from `gcg add|remove` files, which wins over the percent rule. Existing GCG
memberships (`in_gcg`, set by release 1's demo or data) are kept as they are and marked
as operator choices, so a later `gcg set` never drops them silently.

Revision ID: 0003_gcg_selection
Revises: 0002_state_checks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_gcg_selection"
down_revision: str | Sequence[str] | None = "0002_state_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("profile_database") as batch:
        batch.add_column(
            sa.Column("gcg_percent_bp", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("gcg_seed", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("profile") as batch:
        batch.add_column(sa.Column("gcg_override", sa.Boolean(), nullable=True))
    op.execute("UPDATE profile SET gcg_override = in_gcg WHERE in_gcg")


def downgrade() -> None:
    with op.batch_alter_table("profile") as batch:
        batch.drop_column("gcg_override")
    with op.batch_alter_table("profile_database") as batch:
        batch.drop_column("gcg_seed")
        batch.drop_column("gcg_percent_bp")
