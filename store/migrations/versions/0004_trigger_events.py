"""Trigger mailings fire on events (R11b; issue 13 §4), and a segment refresh's duration.

* `event_inbox`: every event received (`event send`, `events import`), unprocessed until
  the drain records its effects and marks it processed in the same transaction;
* `mailing.trigger_event`: the event a trigger mailing fires on (release 1's trigger
  mailings named none: they keep NULL and never fire);
* `delivery` of a trigger mailing belongs to its event instead of a run: `run_id` becomes
  nullable, `event_id` is added, unique per (event, mailing) so an event never sends twice;
* `mailing_outcome`: counters of a trigger mailing's deliveries and suppressions by reason;
* `suppression`: a trigger mailing that sent nothing, with the reason (CHECK of
  store.states.SuppressionReason, frozen here);
* `segment.last_refresh_seconds`: how long the last refresh took (issue 13 §6).

Revision ID: 0004_trigger_events
Revises: 0003_gcg_selection
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_trigger_events"
down_revision: str | Sequence[str] | None = "0003_gcg_selection"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUPPRESSION_REASONS = (
    "control",
    "gcg",
    "not_member",
    "not_in_mailing_segment",
    "campaign_not_active",
    "mailing_paused",
)
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = "processed_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "event_inbox",
        sa.Column("id", EVENT_ID, primary_key=True),
        sa.Column("database_id", sa.Integer(), nullable=False),  # no FKs: see the model
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("received_by", sa.String(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "ix_event_inbox_pending",
        "event_inbox",
        ["id"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )

    with op.batch_alter_table("mailing") as batch:
        batch.add_column(sa.Column("trigger_event", sa.String(200), nullable=True))

    with op.batch_alter_table("delivery") as batch:  # SQLite: the table is copied
        batch.alter_column("run_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(
            sa.Column(
                "event_id",
                EVENT_ID,
                sa.ForeignKey("event_inbox.id", name="fk_delivery_event_id_event_inbox"),
                nullable=True,
            )
        )
    op.create_index("ix_delivery_mailing", "delivery", ["mailing_id"])
    op.create_index("ux_delivery_event", "delivery", ["event_id", "mailing_id"], unique=True)

    reasons = ", ".join(f"'{r}'" for r in SUPPRESSION_REASONS)
    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", EVENT_ID, sa.ForeignKey("event_inbox.id"), nullable=False),
        sa.Column("mailing_id", sa.Integer(), sa.ForeignKey("mailing.id"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("profile_id", sa.Integer(), sa.ForeignKey("profile.id"), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(f'"reason" IN ({reasons})', name="ck_suppression_reason"),
    )
    op.create_index("ux_suppression_event", "suppression", ["event_id", "mailing_id"], unique=True)
    op.create_index("ix_suppression_profile", "suppression", ["profile_id"])
    op.create_index("ix_suppression_mailing", "suppression", ["mailing_id", "reason"])

    op.create_table(
        "mailing_outcome",
        sa.Column("mailing_id", sa.Integer(), sa.ForeignKey("mailing.id"), primary_key=True),
        sa.Column("outcome", sa.String(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )

    with op.batch_alter_table("segment") as batch:
        batch.add_column(sa.Column("last_refresh_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segment") as batch:
        batch.drop_column("last_refresh_seconds")
    op.drop_table("mailing_outcome")
    op.drop_table("suppression")
    op.drop_index("ux_delivery_event", "delivery")
    op.drop_index("ix_delivery_mailing", "delivery")
    op.execute("DELETE FROM delivery WHERE run_id IS NULL")  # trigger deliveries
    with op.batch_alter_table("delivery") as batch:
        batch.drop_constraint("fk_delivery_event_id_event_inbox", type_="foreignkey")
        batch.drop_column("event_id")
        batch.alter_column("run_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("mailing") as batch:
        batch.drop_column("trigger_event")
    op.drop_table("event_inbox")
