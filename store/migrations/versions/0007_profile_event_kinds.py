"""CHECK constraint on profile_event.kind: only the kinds of store.states.ProfileEventKind
(frozen here as they were at this revision), like revision 0002 did for the states.

Every release wrote only these four kinds. A database holding any other kind was changed
by something else; its rows are history (R12), so the upgrade refuses with the kinds it
found and changes nothing, instead of rewriting or dropping them. The constraint itself
refuses too (PostgreSQL checks the existing rows, SQLite's batch copy inserts them), so
`database upgrade --sql` stays safe without the friendly message.

Revision ID: 0007_profile_event_kinds
Revises: 0006_member_group_statistics
"""

from collections.abc import Sequence

from alembic import context, op

from store.errors import StoreError

revision: str = "0007_profile_event_kinds"
down_revision: str | Sequence[str] | None = "0006_member_group_statistics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROFILE_EVENT_KINDS = ("left_campaign", "moved_to_test", "entered_gcg", "left_gcg")
CONSTRAINT = "ck_profile_event_kind"
ALLOWED = ", ".join(repr(kind) for kind in PROFILE_EVENT_KINDS)


def refuse_unknown_kinds() -> None:
    unknown = (
        op.get_bind()
        .exec_driver_sql(
            f"SELECT kind, count(*) FROM profile_event WHERE kind NOT IN ({ALLOWED}) "
            "GROUP BY kind ORDER BY kind"
        )
        .all()
    )
    if unknown:
        found = ", ".join(
            f"{kind!r} ({count:,} row{'' if count == 1 else 's'})" for kind, count in unknown[:10]
        )
        raise StoreError(
            f"cannot upgrade: profile_event holds kinds campaign-console never writes: "
            f"{found}{', …' if len(unknown) > 10 else ''}. Only {ALLOWED} are allowed. "
            "Nothing was changed: profile history is never rewritten (R12). Correct or "
            "remove those rows yourself, then upgrade again"
        )


def upgrade() -> None:
    if not context.is_offline_mode():
        refuse_unknown_kinds()
    with op.batch_alter_table("profile_event") as batch:  # SQLite: the table is copied
        batch.create_check_constraint(CONSTRAINT, f'"kind" IN ({ALLOWED})')


def downgrade() -> None:
    with op.batch_alter_table("profile_event") as batch:
        batch.drop_constraint(CONSTRAINT, type_="check")
