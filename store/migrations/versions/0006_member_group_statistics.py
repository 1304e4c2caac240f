"""PostgreSQL: extended statistics on campaign_member (campaign_id, group).

The planner multiplies the selectivities of `campaign_id = c` and `group = 'control'` as
if they were independent, so for a campaign whose LCG limit leaves 20 control members
next to a million-member campaign it expected ~25,000 control rows and chose to walk
every profile of the database in external-id order: the members screen's first page took
2.9 s at 1M members (issue 13 §1: 200 ms). A most-common-values list over the pair
gives the planner each campaign's real group sizes; the same page then reads the 20
members from ix_campaign_member_group and takes under a millisecond. Nothing on SQLite,
whose page query fixes its join order itself (store/members.py).

Revision ID: 0006_member_group_statistics
Revises: 0005_keyed_assignment_hash
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_member_group_statistics"
down_revision: str | Sequence[str] | None = "0005_keyed_assignment_hash"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATISTICS = "st_campaign_member_campaign_group"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f'CREATE STATISTICS {STATISTICS} (mcv) ON campaign_id, "group" FROM campaign_member')
    op.execute("ANALYZE campaign_member")  # an upgraded database plans on them at once


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS {STATISTICS}")
