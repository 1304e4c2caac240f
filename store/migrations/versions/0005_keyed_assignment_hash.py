"""R9 assignment hash version 2 (issue 14): a key per profile, a hash version per campaign.

profile gains hash_key, store.hashing.profile_key(external_id) (`cc_profile_key` in SQL:
a registered function on SQLite, an SQL function over md5() created here on PostgreSQL),
filled for every existing profile. campaign gains hash_version: campaigns that already
assigned groups (active or completed) keep version 1, release 1's MD5 of
"seed:external_id", so their recalculations and newcomers rank profiles exactly as their
first builds did; drafts, which assigned nobody yet, and every new campaign use version 2.
ix_campaign_member_group loses its hash column (random-order index upkeep dominated builds);
ix_campaign_member_open_control (open control members by cohort) keeps demotions cheap.

Revision ID: 0005_keyed_assignment_hash
Revises: 0004_trigger_events
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_keyed_assignment_hash"
down_revision: str | Sequence[str] | None = "0004_trigger_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# store/hashing.py POSTGRES_PROFILE_KEY_DDL, frozen here.
POSTGRES_PROFILE_KEY_FUNCTION = """
CREATE OR REPLACE FUNCTION cc_profile_key(external_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT ('x' || substr(md5(external_id), 1, 16))::bit(64)::bigint $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_PROFILE_KEY_FUNCTION)
    with op.batch_alter_table("profile") as batch:
        batch.add_column(sa.Column("hash_key", sa.BigInteger(), nullable=True))
    op.execute("UPDATE profile SET hash_key = cc_profile_key(external_id)")
    with op.batch_alter_table("profile") as batch:
        batch.alter_column("hash_key", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(
            sa.Column("hash_version", sa.Integer(), nullable=False, server_default="2")
        )
    op.execute("UPDATE campaign SET hash_version = 1 WHERE status <> 'draft'")
    # Members indexed by (campaign, group, stratum) without the hash (store/models.py).
    op.drop_index("ix_campaign_member_group", table_name="campaign_member")
    op.create_index(
        "ix_campaign_member_group", "campaign_member", ["campaign_id", "group", "stratum_key"]
    )
    op.create_index(
        "ix_campaign_member_open_control",
        "campaign_member",
        ["campaign_id", "cohort"],
        sqlite_where=sa.text("\"group\" = 'control' AND left_at IS NULL"),
        postgresql_where=sa.text("\"group\" = 'control' AND left_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_campaign_member_open_control", table_name="campaign_member")
    op.drop_index("ix_campaign_member_group", table_name="campaign_member")
    op.create_index(
        "ix_campaign_member_group",
        "campaign_member",
        ["campaign_id", "group", "stratum_key", "assignment_hash"],
    )
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("hash_version")
    with op.batch_alter_table("profile") as batch:
        batch.drop_column("hash_key")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION cc_profile_key(text)")
