"""Release 1 schema, exactly as release 1's create_all made it (commit 48dcb20).

A database created by release 1 has this schema and `store_meta.schema_version = 1`
but no alembic_version table; store/migrate.py recognises it and stamps it with this
revision instead of running it. Frozen: never edit, add a revision instead.

Revision ID: 0001_release1_baseline
Revises:
Create Date: 2026-11-29 16:00:14
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_release1_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Release 1's store/hashing.py POSTGRES_DDL, frozen here.
POSTGRES_HASH_FUNCTION = """
CREATE OR REPLACE FUNCTION cc_assignment_hash(seed bigint, external_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT ('x' || substr(md5(seed::text || ':' || external_id), 1, 16))::bit(64)::bigint $$
"""


def _cycle_fk_on_sqlite() -> list[sa.ForeignKeyConstraint]:
    """audience_build.mailing_id -> mailing.id closes a cycle (mailing.paused_by_build_id).

    SQLite takes the reference before mailing exists, inline as create_all wrote it;
    PostgreSQL gets it by ALTER TABLE once mailing exists (as create_all did too).
    """
    if op.get_bind().dialect.name == "sqlite":
        return [sa.ForeignKeyConstraint(["mailing_id"], ["mailing.id"])]
    return []


def upgrade() -> None:
    op.create_table(
        "profile_database",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("profile_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )

    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )

    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("origin", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target_type", sa.String(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("target_name", sa.String(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_audit_target", "audit_log", ["target_type", "target_id", "at"], unique=False
    )

    op.create_table(
        "profile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("database_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(), nullable=False),
        sa.Column("in_gcg", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("t0", sa.String(), nullable=True),
        sa.Column("t1", sa.String(), nullable=True),
        sa.Column("t2", sa.String(), nullable=True),
        sa.Column("t3", sa.String(), nullable=True),
        sa.Column("t4", sa.String(), nullable=True),
        sa.Column("t5", sa.String(), nullable=True),
        sa.Column("t6", sa.String(), nullable=True),
        sa.Column("t7", sa.String(), nullable=True),
        sa.Column("i0", sa.BigInteger(), nullable=True),
        sa.Column("i1", sa.BigInteger(), nullable=True),
        sa.Column("i2", sa.BigInteger(), nullable=True),
        sa.Column("i3", sa.BigInteger(), nullable=True),
        sa.Column("i4", sa.BigInteger(), nullable=True),
        sa.Column("i5", sa.BigInteger(), nullable=True),
        sa.Column("i6", sa.BigInteger(), nullable=True),
        sa.Column("i7", sa.BigInteger(), nullable=True),
        sa.Column("f0", sa.Float(), nullable=True),
        sa.Column("f1", sa.Float(), nullable=True),
        sa.Column("f2", sa.Float(), nullable=True),
        sa.Column("f3", sa.Float(), nullable=True),
        sa.Column("d0", sa.Date(), nullable=True),
        sa.Column("d1", sa.Date(), nullable=True),
        sa.Column("d2", sa.Date(), nullable=True),
        sa.Column("d3", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("database_id", "external_id"),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["profile_database.id"],
        ),
    )

    op.create_table(
        "profile_field",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("database_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("slot", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("database_id", "name"),
        sa.UniqueConstraint("database_id", "slot"),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["profile_database.id"],
        ),
    )
    op.create_index(
        op.f("ix_profile_field_database_id"), "profile_field", ["database_id"], unique=False
    )

    op.create_table(
        "segment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("database_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(), nullable=True),
        sa.Column("refresh_every_seconds", sa.Integer(), nullable=True),
        sa.Column("refresh_cron", sa.String(), nullable=True),
        sa.Column("last_refreshed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["profile_database.id"],
        ),
    )

    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("database_id", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("lcg_enabled", sa.Boolean(), nullable=False),
        sa.Column("lcg_percent_bp", sa.Integer(), nullable=False),
        sa.Column("lcg_limit", sa.Integer(), nullable=True),
        sa.Column("lcg_strata", sa.JSON(), nullable=False),
        sa.Column("lcg_cohort", sa.Integer(), nullable=False),
        sa.Column("segment_watermark", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("test_count", sa.Integer(), nullable=False),
        sa.Column("control_count", sa.Integer(), nullable=False),
        sa.Column("cohort_size", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["profile_database.id"],
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segment.id"],
        ),
    )
    op.create_index(op.f("ix_campaign_status"), "campaign", ["status"], unique=False)

    op.create_table(
        "audience_build",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("worker", sa.String(), nullable=True),
        sa.Column("mailing_id", sa.Integer(), nullable=True),
        sa.Column("pauses_mailings", sa.Boolean(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        *_cycle_fk_on_sqlite(),
    )
    op.create_index(
        op.f("ix_audience_build_campaign_id"), "audience_build", ["campaign_id"], unique=False
    )
    op.create_index(
        "ix_audience_build_status", "audience_build", ["status", "campaign_id"], unique=False
    )
    op.create_index(
        "ux_audience_build_running",
        "audience_build",
        ["campaign_id"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )

    op.create_table(
        "mailing",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("send_at", sa.DateTime(), nullable=True),
        sa.Column("cron", sa.String(), nullable=True),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.Column("expand_audience", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("manual_paused", sa.Boolean(), nullable=False),
        sa.Column("manual_paused_by", sa.String(), nullable=True),
        sa.Column("paused_by_build_id", sa.Integer(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.Column("next_run_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["paused_by_build_id"],
            ["audience_build.id"],
        ),
    )
    op.create_index(op.f("ix_mailing_campaign_id"), "mailing", ["campaign_id"], unique=False)

    if op.get_bind().dialect.name != "sqlite":  # the cycle: added once mailing exists
        op.create_foreign_key(None, "audience_build", "mailing", ["mailing_id"], ["id"])

    op.create_table(
        "mailing_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailing_id", sa.Integer(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailing_id", "scheduled_for"),
        sa.ForeignKeyConstraint(
            ["mailing_id"],
            ["mailing.id"],
        ),
    )
    op.create_index(op.f("ix_mailing_run_mailing_id"), "mailing_run", ["mailing_id"], unique=False)

    op.create_table(
        "segment_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("entered_at", sa.DateTime(), nullable=False),
        sa.Column("entered_by", sa.String(), nullable=False),
        sa.Column("left_at", sa.DateTime(), nullable=True),
        sa.Column("left_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profile.id"],
        ),
    )
    op.create_index("ix_segment_member_profile", "segment_member", ["profile_id"], unique=False)
    op.create_index(
        "ix_segment_member_segment_entered",
        "segment_member",
        ["segment_id", "entered_at"],
        unique=False,
    )
    op.create_index(
        "ix_segment_member_segment_left", "segment_member", ["segment_id", "left_at"], unique=False
    )
    op.create_index(
        "ux_segment_member_open",
        "segment_member",
        ["segment_id", "profile_id"],
        unique=True,
        sqlite_where=sa.text("left_at IS NULL"),
        postgresql_where=sa.text("left_at IS NULL"),
    )

    op.create_table(
        "campaign_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("group", sa.String(), nullable=False),
        sa.Column("joined_group", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stratum_key", sa.String(), nullable=False),
        sa.Column("assignment_hash", sa.BigInteger(), nullable=False),
        sa.Column("cohort", sa.Integer(), nullable=True),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
        sa.Column("joined_build_id", sa.Integer(), nullable=True),
        sa.Column("joined_by", sa.String(), nullable=False),
        sa.Column("left_at", sa.DateTime(), nullable=True),
        sa.Column("left_build_id", sa.Integer(), nullable=True),
        sa.Column("left_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profile.id"],
        ),
        sa.ForeignKeyConstraint(
            ["joined_build_id"],
            ["audience_build.id"],
        ),
        sa.ForeignKeyConstraint(
            ["left_build_id"],
            ["audience_build.id"],
        ),
    )
    op.create_index(
        "ix_campaign_member_group",
        "campaign_member",
        ["campaign_id", "group", "stratum_key", "assignment_hash"],
        unique=False,
    )
    op.create_index("ix_campaign_member_profile", "campaign_member", ["profile_id"], unique=False)
    op.create_index(
        "ux_campaign_member_open",
        "campaign_member",
        ["campaign_id", "profile_id"],
        unique=True,
        sqlite_where=sa.text("left_at IS NULL"),
        postgresql_where=sa.text("left_at IS NULL"),
    )

    op.create_table(
        "campaign_stratum",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("stratum_key", sa.String(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("cohort", sa.Integer(), nullable=False),
        sa.Column("control", sa.Integer(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "stratum_key"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
    )

    op.create_table(
        "profile_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.Column("group", sa.String(), nullable=True),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profile.id"],
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["audience_build.id"],
        ),
    )
    op.create_index(
        "ix_profile_event_profile_at", "profile_event", ["profile_id", "at"], unique=False
    )
    op.create_index(
        "ux_profile_event_build",
        "profile_event",
        ["build_id", "profile_id", "kind", "campaign_id"],
        unique=True,
        sqlite_where=sa.text("build_id IS NOT NULL"),
        postgresql_where=sa.text("build_id IS NOT NULL"),
    )

    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mailing_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "profile_id"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["mailing_run.id"],
        ),
        sa.ForeignKeyConstraint(
            ["mailing_id"],
            ["mailing.id"],
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profile.id"],
        ),
    )
    op.create_index("ix_delivery_profile", "delivery", ["profile_id"], unique=False)

    op.create_table(
        "gcg_exception",
        sa.Column("database_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("database_id", "campaign_id"),
        sa.ForeignKeyConstraint(
            ["database_id"],
            ["profile_database.id"],
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_HASH_FUNCTION)
    op.execute("INSERT INTO store_meta (key, value) VALUES ('schema_version', '1')")


def downgrade() -> None:
    raise NotImplementedError("release 1 is the first schema: there is nothing to go back to")
