"""CHECK constraints: every stored state and kind admits only the values of its StrEnum
(store/states.py). Values are frozen here as they were at this revision.

Release 1 (schema_version 1 in store_meta) would open a database of this revision
without knowing the new constraints; the marker moves to 2 so it refuses instead.

Revision ID: 0002_state_checks
Revises: 0001_release1_baseline
Create Date: 2026-11-29 16:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_state_checks"
down_revision: str | Sequence[str] | None = "0001_release1_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAMPAIGN_STATUSES = ("draft", "active", "completed")
BUILD_STATUSES = ("queued", "running", "done", "failed", "cancelled")
BUILD_REASONS = ("activation", "recalculation", "incremental", "lcg_disable", "expansion")
MAILING_KINDS = ("broadcast", "regular", "trigger")
MAILING_STATUSES = ("active", "sent", "stopped")
RUN_STATUSES = ("running", "done", "skipped")
GROUPS = ("test", "control")
SOURCES = ("activation", "segment", "expansion")
SEGMENT_KINDS = ("static", "dynamic")

# table -> [(constraint name, column, allowed values)]
CHECKS = {
    "campaign": [("ck_campaign_status", "status", CAMPAIGN_STATUSES)],
    "audience_build": [
        ("ck_audience_build_status", "status", BUILD_STATUSES),
        ("ck_audience_build_reason", "reason", BUILD_REASONS),
    ],
    "mailing": [
        ("ck_mailing_kind", "kind", MAILING_KINDS),
        ("ck_mailing_status", "status", MAILING_STATUSES),
    ],
    "mailing_run": [("ck_mailing_run_status", "status", RUN_STATUSES)],
    "campaign_member": [
        ("ck_campaign_member_group", "group", GROUPS),
        ("ck_campaign_member_joined_group", "joined_group", GROUPS),
        ("ck_campaign_member_source", "source", SOURCES),
    ],
    "segment": [("ck_segment_kind", "kind", SEGMENT_KINDS)],
}


def condition(column: str, values: tuple[str, ...]) -> str:
    return f'"{column}" IN ({", ".join(repr(v) for v in values)})'


def upgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:  # SQLite: the table is copied
            for name, column, values in checks:
                batch.create_check_constraint(name, condition(column, values))
    op.execute("UPDATE store_meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, _column, _values in checks:
                batch.drop_constraint(name, type_="check")
    op.execute("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'")
