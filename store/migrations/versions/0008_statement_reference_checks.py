"""PostgreSQL: the references that bulk writes repeat on every row are checked once per
statement instead of once per row (issue 14; figures in BENCHMARKS.md).

A foreign key on PostgreSQL runs one query per inserted row (an SPI call with a row
lock on the parent). The loads and builds write a million rows that all name the same
one to three parent rows: the profile database of an import, the segment of a segment
file, the campaign and build of an audience build. Those per-row checks were half of
a profile load's server time and a third of a member insert's. These five foreign
keys become statement-level triggers with the same guarantees:

* after an INSERT or UPDATE of the child, one trigger per table reads the statement's
  rows (its transition table) once for the smallest and largest id of each reference.
  A bulk write names one parent per reference: that row is locked FOR KEY SHARE, as
  the foreign key did. A statement naming several reads their distinct ids and locks
  them all. Any missing parent fails the statement with SQLSTATE 23503
  (foreign_key_violation, with the foreign key's name), which undoes it;
* a parent row still referenced cannot be deleted, have its id changed, or be
  truncated (BEFORE triggers, the same SQLSTATE). Under READ COMMITTED, the store's
  isolation, a delete that waits for the lock sees the rows the other transaction
  committed, so neither order of two concurrent transactions leaves an orphan.

The functions are SECURITY DEFINER (the locks need UPDATE on the parent, which a
writing role may lack) with a fixed search_path, and name every table through the
trigger's own schema. References to `profile` keep their foreign keys: each row names
a different profile, so a statement-level check would lock as many rows as the
per-row one. SQLite keeps every foreign key: its checks are cheap index probes.

The list below is frozen as it was at this revision; store.migrate.STATEMENT_CHECKED
is the current one (what the schema comparison expects on PostgreSQL).

Revision ID: 0008_statement_reference_checks
Revises: 0007_profile_event_kinds
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_statement_reference_checks"
down_revision: str | Sequence[str] | None = "0007_profile_event_kinds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (child table, column, parent table); the constraint keeps PostgreSQL's default name.
REFERENCES = (
    ("profile", "database_id", "profile_database"),
    ("segment_member", "segment_id", "segment"),
    ("campaign_member", "campaign_id", "campaign"),
    ("campaign_member", "joined_build_id", "audience_build"),
    ("campaign_member", "left_build_id", "audience_build"),
)

CHECK_FUNCTION = """
CREATE OR REPLACE FUNCTION cc_check_references() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- TG_ARGV: (child column, parent table, constraint name) for each reference the table
-- makes; new_rows: the statement's rows. One pass reads each column's smallest and
-- largest id: a bulk write names one parent (one row to lock); any other reads the
-- distinct ids.
DECLARE
    refs int := TG_NARGS / 3;
    query text := '';
    bounds bigint[];
    col text;
    parent text;
    wanted bigint;
    found bigint;
BEGIN
    FOR i IN 0 .. refs - 1 LOOP
        query := query || CASE WHEN i > 0 THEN ', ' ELSE '' END
                 || format('min(%1$I), max(%1$I)', TG_ARGV[3 * i]);
    END LOOP;
    EXECUTE 'SELECT ARRAY[' || query || ']::bigint[] FROM new_rows' INTO bounds;
    FOR i IN 0 .. refs - 1 LOOP
        CONTINUE WHEN bounds[2 * i + 1] IS NULL;  -- no row names a parent
        col := TG_ARGV[3 * i];
        parent := TG_ARGV[3 * i + 1];
        IF bounds[2 * i + 1] = bounds[2 * i + 2] THEN
            wanted := 1;
            EXECUTE format('SELECT 1 FROM %I.%I WHERE id = $1 FOR KEY SHARE',
                           TG_TABLE_SCHEMA, parent) USING bounds[2 * i + 1];
        ELSE
            EXECUTE format('SELECT count(DISTINCT %I) FROM new_rows', col) INTO wanted;
            EXECUTE format('SELECT 1 FROM %I.%I WHERE id IN (SELECT %I FROM new_rows) '
                           'FOR KEY SHARE', TG_TABLE_SCHEMA, parent, col);
        END IF;
        GET DIAGNOSTICS found = ROW_COUNT;
        IF found < wanted THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('insert or update on table "%s" violates foreign key '
                                 'constraint "%s"', TG_TABLE_NAME, TG_ARGV[3 * i + 2]),
                DETAIL = format('A value of %s is not present in table "%s".', col, parent),
                CONSTRAINT = TG_ARGV[3 * i + 2], TABLE = TG_TABLE_NAME,
                SCHEMA = TG_TABLE_SCHEMA;
        END IF;
    END LOOP;
    RETURN NULL;
END $$"""

GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION cc_refuse_referenced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- TG_ARGV: child table, child column, constraint name. Row level: OLD is the parent row.
DECLARE
    referenced boolean;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE %I = $1)',
                       TG_TABLE_SCHEMA, TG_ARGV[0], TG_ARGV[1]) INTO referenced USING OLD.id;
    ELSE  -- TRUNCATE
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE %I IS NOT NULL)',
                       TG_TABLE_SCHEMA, TG_ARGV[0], TG_ARGV[1]) INTO referenced;
    END IF;
    IF referenced THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%s on table "%s" violates foreign key constraint "%s" on '
                             'table "%s"', lower(TG_OP), TG_TABLE_NAME, TG_ARGV[2],
                             TG_ARGV[0]),
            DETAIL = format('Rows of table "%s" still reference it.', TG_ARGV[0]),
            CONSTRAINT = TG_ARGV[2], TABLE = TG_ARGV[0], SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$"""


def _name(child: str, column: str) -> str:
    return f"{child}_{column}_fkey"


def _children() -> dict[str, list[tuple[str, str]]]:
    tables: dict[str, list[tuple[str, str]]] = {}
    for child, column, parent in REFERENCES:
        tables.setdefault(child, []).append((column, parent))
    return tables


def _check_triggers(child: str, references: list[tuple[str, str]]) -> list[str]:
    args = ", ".join(
        f"'{column}', '{parent}', '{_name(child, column)}'" for column, parent in references
    )
    return [
        f"CREATE TRIGGER {child}_references_{event[:3].lower()} AFTER {event} ON {child} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION cc_check_references({args})"
        for event in ("INSERT", "UPDATE")
    ]


def _guard_triggers(child: str, column: str, parent: str) -> list[str]:
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


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite keeps its foreign keys
    op.execute(CHECK_FUNCTION)
    op.execute(GUARD_FUNCTION)
    for child, column, parent in REFERENCES:
        op.drop_constraint(_name(child, column), child, type_="foreignkey")
        for statement in _guard_triggers(child, column, parent):
            op.execute(statement)
    for child, references in _children().items():
        for statement in _check_triggers(child, references):
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for child in _children():
        op.execute(f"DROP TRIGGER {child}_references_ins ON {child}")
        op.execute(f"DROP TRIGGER {child}_references_upd ON {child}")
    for child, column, parent in REFERENCES:
        name = _name(child, column)
        for suffix in ("del", "key", "trunc"):
            op.execute(f"DROP TRIGGER {name}_{suffix} ON {parent}")
        op.create_foreign_key(name, child, parent, [column], ["id"])
    op.execute("DROP FUNCTION cc_refuse_referenced()")
    op.execute("DROP FUNCTION cc_check_references()")
