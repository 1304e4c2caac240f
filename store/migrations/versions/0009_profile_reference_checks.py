"""PostgreSQL: segment and campaign members' references to their profile are checked
once per statement too, under a lock on the profile table instead of a lock on every
profile row (issue 14; figures in BENCHMARKS.md).

Revision 0008 kept these two foreign keys: every member row names a different profile,
and a statement-level check that locks every named profile FOR KEY SHARE costs what the
foreign key costs. Measured since, the foreign key is the largest single cost of the bulk
writes that remain: 5.6 of the 12 seconds a million-id segment add spent inserting, and
as much of a million-profile build (its per-row lock dirties and WAL-logs every profile
row). This revision replaces the lock on each profile row by one lock on the table:

* a statement that writes members (INSERT, or an UPDATE that changes `profile_id`) takes
  the profile table's reference lock SHARED (an advisory lock, held to the end of its
  transaction), then reads that every profile it names exists: one anti-join over the
  statement's rows, reading only the profiles between their smallest and largest id.
  Under READ COMMITTED, the store's isolation, that read's snapshot is
  newer than the lock, so it sees every delete committed before. Under REPEATABLE READ
  or SERIALIZABLE the transaction's snapshot may be older than a delete committed
  meanwhile: there the check locks the named rows FOR KEY SHARE as the foreign key did
  (a row deleted meanwhile fails the lock);
* a statement that deletes or renumbers profiles takes that lock EXCLUSIVE first
  (`cc_lock_referenced`, before any row), so it waits for every transaction that wrote
  members to end and keeps new writers out until it ends; then 0008's row guard
  (`cc_refuse_referenced`) refuses a profile still referenced, reading with a fresh
  snapshot that sees every member committed. TRUNCATE would be safe without it: a
  writer holds its lock on the profile table (it read the table) until it ends, and
  TRUNCATE waits for it; its lock trigger is there for the isolation check below.

The same statement-level lock trigger now guards every parent of a reference that
PostgreSQL checks by trigger (0008's too): a delete, renumbering or truncate under
REPEATABLE READ or SERIALIZABLE is refused, because its snapshot may miss children
committed after it began (0008's guard read with that snapshot; a foreign key reads with
a newer one and fails with a serialization error). The store never deletes these rows.

Revision ID: 0009_profile_reference_checks
Revises: 0008_statement_reference_checks
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_profile_reference_checks"
down_revision: str | Sequence[str] | None = "0008_statement_reference_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (child table, column, parent table), checked under the parent table's lock; the lists
# are frozen as they were at this revision (store.migrate.STATEMENT_CHECKED is current).
LOCKED_REFERENCES = (
    ("segment_member", "profile_id", "profile"),
    ("campaign_member", "profile_id", "profile"),
)
# The parents of 0008's references, which its row locks guard, and of the ones above.
PARENTS = ("profile_database", "segment", "campaign", "audience_build", "profile")

# The advisory lock of a parent table: this constant in the high 32 bits ("ccre"), the
# table's oid in the low ones, so each schema's workspace has its own.
LOCK_KEY = "(1667461733::bigint << 32) + {oid}::oid::bigint"

CHECK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION cc_check_locked_references() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The planner's own choice, whatever the writer turned off: a delta build turns hash
-- joins off for its candidates (StepContext.prefer_index_joins), which left this
-- anti-join a nested loop over a materialised range of profiles (3.5 s, 10,000 members).
SET work_mem = '64MB' SET enable_hashjoin = on SET enable_mergejoin = on
SET enable_nestloop = on SET enable_indexscan = on SET enable_indexonlyscan = on
SET enable_bitmapscan = on SET enable_seqscan = on AS $$
-- TG_ARGV: child column, parent table, constraint name. Statement level after INSERT
-- (new_rows: the statement's rows); row level after an UPDATE that changed the column.
DECLARE
    col text := TG_ARGV[0];
    parent regclass := format('%I.%I', TG_TABLE_SCHEMA, TG_ARGV[1])::regclass;
    value bigint;
    low bigint;
    high bigint;
    wanted bigint;
    found bigint;
    missing bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({LOCK_KEY.format(oid="parent")});
    -- Under READ COMMITTED each query below takes a snapshot newer than the lock, which
    -- sees every delete committed before it. Under REPEATABLE READ or SERIALIZABLE the
    -- transaction's snapshot may predate one: lock the rows as a foreign key does, which
    -- fails for a row deleted since.
    IF TG_LEVEL = 'ROW' THEN
        EXECUTE format('SELECT ($1).%I', col) INTO value USING NEW;
        IF current_setting('transaction_isolation') = 'read committed' THEN
            EXECUTE format('SELECT FROM %s WHERE id = $1', parent) USING value;
        ELSE
            EXECUTE format('SELECT FROM %s WHERE id = $1 FOR KEY SHARE', parent) USING value;
        END IF;
        GET DIAGNOSTICS found = ROW_COUNT;
        missing := 1 - found;
    ELSIF current_setting('transaction_isolation') = 'read committed' THEN
        -- The ids' range bounds the parent rows read: a build's chunk names 50,000
        -- profiles of a narrow range, which the anti-join reads by index instead of
        -- hashing every profile (a quarter of a second per chunk at 1M profiles).
        EXECUTE format('SELECT min(%1$I), max(%1$I) FROM new_rows', col) INTO low, high;
        IF low IS NULL THEN
            RETURN NULL;  -- no row names a parent (an INSERT … SELECT of no rows)
        END IF;
        EXECUTE format('SELECT count(*) FROM new_rows n WHERE n.%1$I IS NOT NULL '
                       'AND NOT EXISTS (SELECT FROM %2$s p WHERE p.id = n.%1$I '
                       'AND p.id BETWEEN %3$s AND %4$s)',
                       col, parent, low, high) INTO missing;
    ELSE
        EXECUTE format('SELECT count(DISTINCT %I) FROM new_rows', col) INTO wanted;
        EXECUTE format('SELECT FROM %s WHERE id IN (SELECT %I FROM new_rows) FOR KEY SHARE',
                       parent, col);
        GET DIAGNOSTICS found = ROW_COUNT;
        missing := wanted - found;
    END IF;
    IF missing > 0 THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('insert or update on table "%s" violates foreign key '
                             'constraint "%s"', TG_TABLE_NAME, TG_ARGV[2]),
            DETAIL = format('A value of %s is not present in table "%s".', col, TG_ARGV[1]),
            CONSTRAINT = TG_ARGV[2], TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    RETURN NULL;
END $$"""

LOCK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION cc_lock_referenced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Statement level, before a DELETE, an UPDATE OF id or a TRUNCATE of a parent whose
-- children are checked by trigger: waits for the writers of children checked under this
-- table's lock, and refuses a snapshot older than the statement (see revision 0009).
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE invalid_transaction_state USING
            MESSAGE = format('%s on table "%s" needs READ COMMITTED isolation',
                             lower(TG_OP), TG_TABLE_NAME),
            DETAIL = 'Other tables reference its rows, checked per statement: only a '
                     'snapshot taken by the statement sees every row that references them.';
    END IF;
    PERFORM pg_advisory_xact_lock({LOCK_KEY.format(oid="TG_RELID")});
    RETURN NULL;
END $$"""


def _name(child: str, column: str) -> str:
    return f"{child}_{column}_fkey"


def _check_triggers(child: str, column: str, parent: str) -> list[str]:
    args = f"'{column}', '{parent}', '{_name(child, column)}'"
    prefix = f"{child}_{parent}_references"
    return [
        f"CREATE TRIGGER {prefix}_ins AFTER INSERT ON {child} "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION cc_check_locked_references({args})",
        # Row level (a statement trigger with a column list cannot read its rows): only
        # an UPDATE that changes the column pays for it, and the store makes none.
        f"CREATE TRIGGER {prefix}_upd AFTER UPDATE OF {column} ON {child} FOR EACH ROW "
        f"WHEN (OLD.{column} IS DISTINCT FROM NEW.{column}) "
        f"EXECUTE FUNCTION cc_check_locked_references({args})",
    ]


def _guard_triggers(child: str, column: str, parent: str) -> list[str]:
    """0008's row guard, as it made it for its own references."""
    name = _name(child, column)
    guard = f"cc_refuse_referenced('{child}', '{column}', '{name}')"
    return [
        f"CREATE TRIGGER {name}_del BEFORE DELETE ON {parent} FOR EACH ROW "
        f"EXECUTE FUNCTION {guard}",
        f"CREATE TRIGGER {name}_key BEFORE UPDATE OF id ON {parent} FOR EACH ROW "
        f"WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION {guard}",
        f"CREATE TRIGGER {name}_trunc BEFORE TRUNCATE ON {parent} FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {guard}",
    ]


def _lock_triggers(parent: str) -> list[str]:
    return [
        f"CREATE TRIGGER {parent}_references_lock_{suffix} BEFORE {event} ON {parent} "
        "FOR EACH STATEMENT EXECUTE FUNCTION cc_lock_referenced()"
        for suffix, event in (("del", "DELETE"), ("key", "UPDATE OF id"), ("trunc", "TRUNCATE"))
    ]


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite keeps its foreign keys
    op.execute(CHECK_FUNCTION)
    op.execute(LOCK_FUNCTION)
    for parent in PARENTS:
        for statement in _lock_triggers(parent):
            op.execute(statement)
    for child, column, parent in LOCKED_REFERENCES:
        op.drop_constraint(_name(child, column), child, type_="foreignkey")
        for statement in [
            *_guard_triggers(child, column, parent),
            *_check_triggers(child, column, parent),
        ]:
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for child, column, parent in LOCKED_REFERENCES:
        name = _name(child, column)
        for event in ("ins", "upd"):
            op.execute(f"DROP TRIGGER {child}_{parent}_references_{event} ON {child}")
        for suffix in ("del", "key", "trunc"):
            op.execute(f"DROP TRIGGER {name}_{suffix} ON {parent}")
        op.create_foreign_key(name, child, parent, [column], ["id"])
    for parent in PARENTS:
        for suffix in ("del", "key", "trunc"):
            op.execute(f"DROP TRIGGER {parent}_references_lock_{suffix} ON {parent}")
    op.execute("DROP FUNCTION cc_lock_referenced()")
    op.execute("DROP FUNCTION cc_check_locked_references()")
