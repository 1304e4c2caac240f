"""Adding segment members writes two indexes fewer (issue 14 target 4; figures in
BENCHMARKS.md).

A segment add or a refresh writes one `segment_member` row per newcomer and an entry in
every index of the table. Two of its five indexes served only reads that never need an
open interval:

* `ix_segment_member_segment_left` (segment, left_at) is read by comparisons on left_at
  (R4's leavers closed at one time, R3's intervals closed since the draft was created,
  the count of a refresh's leavers). It becomes partial, `WHERE left_at IS NOT NULL`:
  both backends use such an index for any comparison on the column, and an add, whose
  rows are all open, writes nothing into it. A close (the row's update) does.
* `ix_segment_member_segment_entered` (segment, entered_at) only counted the newcomers
  of a segment's last refresh for the segments screen. The refresh now stores its two
  counts on the segment (`last_refresh_entered`, `last_refresh_left`), and the index is
  dropped. This revision fills both counts of every segment refreshed before, from the
  intervals stamped with its last refresh time (R12), while the index is still there:
  the segments screen shows the same figures after the upgrade.

Measured on PostgreSQL, a million open rows into the table: 4.5 s with the five
indexes, 3.1 s with these three written. No membership row changes.

Revision ID: 0010_segment_member_add_indexes
Revises: 0009_profile_reference_checks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_segment_member_add_indexes"
down_revision: str | Sequence[str] | None = "0009_profile_reference_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLOSED = "left_at IS NOT NULL"
COUNT_AT = (
    "(SELECT count(*) FROM segment_member sm "
    "WHERE sm.segment_id = segment.id AND sm.{column} = segment.last_refreshed_at)"
)


def upgrade() -> None:
    with op.batch_alter_table("segment") as batch:  # SQLite: ADD COLUMN, no copy
        batch.add_column(sa.Column("last_refresh_entered", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_refresh_left", sa.Integer(), nullable=True))
    op.execute(
        f"UPDATE segment SET last_refresh_entered = {COUNT_AT.format(column='entered_at')}, "
        f"last_refresh_left = {COUNT_AT.format(column='left_at')} "
        "WHERE last_refreshed_at IS NOT NULL"
    )
    op.drop_index("ix_segment_member_segment_entered", "segment_member")
    op.drop_index("ix_segment_member_segment_left", "segment_member")
    op.create_index(
        "ix_segment_member_segment_left",
        "segment_member",
        ["segment_id", "left_at"],
        sqlite_where=sa.text(CLOSED),
        postgresql_where=sa.text(CLOSED),
    )


def downgrade() -> None:
    op.drop_index("ix_segment_member_segment_left", "segment_member")
    op.create_index("ix_segment_member_segment_left", "segment_member", ["segment_id", "left_at"])
    op.create_index(
        "ix_segment_member_segment_entered", "segment_member", ["segment_id", "entered_at"]
    )
    with op.batch_alter_table("segment") as batch:
        batch.drop_column("last_refresh_left")
        batch.drop_column("last_refresh_entered")
