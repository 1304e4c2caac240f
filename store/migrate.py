"""Schema revisions with Alembic: where a database stands, and bringing it to head.

The revisions live in store/migrations/versions/ (shipped with the package). Each
schema change is one revision plus an upgrade test from a previous release's workspace
(tests/test_migrations.py). A database is in one of these states:

* empty: no table of ours. Upgraded to head on first use, on every backend.
* release 1: made by release 1 (tables and `store_meta.schema_version = 1`, no
  alembic_version). Its schema is exactly the baseline revision, so it is stamped with
  it, never rebuilt, and then upgraded like any other.
* at a revision: alembic_version names it.

`open_store` (store/db.py) calls `ensure_current`: an SQLite workspace behind head is
copied to a timestamped backup beside it and upgraded; a PostgreSQL database behind
head is refused with the command to run (a shared database is upgraded on purpose, by
`campaign-console database upgrade`, not by whichever console happens to open first).
"""

from __future__ import annotations

import functools
import io
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

from store import models  # noqa: F401  (the tables SQLModel.metadata knows)
from store.errors import StoreError
from store.locations import is_postgres, is_sqlite

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001_release1_baseline"
RELEASE1 = "release 1 (unstamped)"  # the state of a database release 1 made
UPGRADE_COMMAND = "campaign-console database upgrade"
# Any constant will do: it only has to be the same in every process.
_PG_LOCK_KEY = 0x6363_6D69_6772  # "ccmigr"
# (table, column) of the references PostgreSQL checks once per statement, by trigger,
# instead of by foreign key (revisions 0008 and 0009). The models declare them as foreign
# keys, which SQLite keeps; the schema comparison must not ask PostgreSQL for them back.
STATEMENT_CHECKED = frozenset(
    {
        ("profile", "database_id"),
        ("segment_member", "segment_id"),
        ("segment_member", "profile_id"),  # under the profile table's lock (0009)
        ("campaign_member", "campaign_id"),
        ("campaign_member", "profile_id"),  # under the profile table's lock (0009)
        ("campaign_member", "joined_build_id"),
        ("campaign_member", "left_build_id"),
    }
)


def alembic_config(url: str | None = None, output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:  # offline mode renders SQL for this URL's dialect
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def compare_options(dialect: str) -> dict[str, Any]:
    """Options of Alembic's schema comparison (autogenerate, the schema tests): the
    models against a database of `dialect`."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if dialect == "postgresql" and type_ == "foreign_key_constraint":
            return not any((obj.table.name, col) in STATEMENT_CHECKED for col in obj.column_keys)
        return True

    return {"compare_type": True, "include_object": include}


@functools.cache
def head() -> str:
    """The revision this code expects. Exactly one head, or the revisions are broken."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise StoreError(f"schema revisions have {len(heads)} heads ({', '.join(heads)})")
    return heads[0]


@functools.cache
def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(r.revision for r in script.walk_revisions())


def current_revision(connection: sa.Connection) -> str | None:
    """None for an empty database, RELEASE1 for one release 1 made, else its revision."""
    tables = set(sa.inspect(connection).get_table_names())
    if "alembic_version" in tables:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        if len(versions) == 1:
            return versions[0][0]
        if versions:
            raise StoreError(f"database has {len(versions)} schema revisions; expected one")
    ours = tables & set(SQLModel.metadata.tables)
    if not ours:
        return None
    if "store_meta" in tables:
        marker = connection.exec_driver_sql(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).scalar()
        if marker == "1":
            return RELEASE1
        raise StoreError(
            f"database schema version {marker} is unknown to this campaign-console: "
            "upgrade campaign-console"
        )
    raise StoreError(
        f"database has tables of campaign-console ({', '.join(sorted(ours)[:3])}, …) "
        "but no schema version: it was not made by campaign-console, or is damaged"
    )


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did: from which revision to which, and the SQLite backup if any."""

    before: str | None
    after: str
    backup: Path | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "before": self.before,
            "after": self.after,
            "backup": str(self.backup) if self.backup else None,
        }


def foreign_tables(engine: Engine) -> list[str]:
    """Tables in an SQLite file that are not ours: the file belongs to something else."""
    ours = {*SQLModel.metadata.tables, "alembic_version"}
    return sorted(
        t
        for t in sa.inspect(engine).get_table_names()
        if t not in ours and not t.startswith("sqlite_")
    )


def ensure_current(engine: Engine, *, create: bool = False) -> None:
    """Make sure the database is at head (see the module docstring for each state). An
    empty database is a missing workspace unless `create` (`init`, `demo`: issue 15.7)."""
    from store.locations import engine_options, missing_workspace

    with engine.connect() as conn:
        current = current_revision(conn)
    if current == head():
        return
    _refuse_unknown(current)
    if current is None and not create:
        url = engine.url.render_as_string(hide_password=False)
        if is_sqlite(engine):
            other = foreign_tables(engine)
            if other:  # `init` would refuse this file too: do not send the user there
                tables = ", ".join(other[:4]) + (", …" if len(other) > 4 else "")
                detail = f" (an SQLite database of another application: tables {tables})"
                raise missing_workspace(url, detail, remedy="a new workspace needs a new file")
        raise missing_workspace(url)
    if engine_options(engine).read_only:
        raise StoreError(
            f"workspace {_describe(engine)} is at schema revision {current}; this "
            f"campaign-console needs {head()}, and a read-only user opens it read-only: an "
            f"operator runs `{UPGRADE_COMMAND}` (or opens it once), then open it again"
        )
    if is_postgres(engine) and current is not None:
        raise StoreError(
            f"database {_describe(engine)} is at schema revision {current}; this "
            f"campaign-console needs {head()}. Run `{UPGRADE_COMMAND} --db URL` once "
            "(`--sql` prints the SQL for a DBA instead), then open it again"
        )
    upgrade(engine)


def _refuse_unknown(current: str | None) -> None:
    if current not in (None, RELEASE1) and current not in known_revisions():
        raise StoreError(
            f"database is at schema revision {current}, newer than this campaign-console "
            f"(which knows up to {head()}): upgrade campaign-console"
        )


def upgrade(
    engine: Engine, *, backup: bool = True, create: bool = True, to: str | None = None
) -> Upgrade:
    """Bring the database to head: an SQLite file is first copied beside itself. Without
    `create`, an empty database is a missing workspace (`database upgrade`: issue 15.7).
    `to` stops at an older revision instead (tests make a previous release's workspace).

    Runs under an advisory lock on PostgreSQL, so two processes opening an empty or old
    database at once migrate it once; the second finds it at head.
    """
    with engine.connect() as conn:
        if is_postgres(engine):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        before = current_revision(conn)
        _refuse_unknown(before)
        target = to or head()
        if before == target:
            conn.rollback()
            return Upgrade(before, before)
        if before is None and not create:
            from store.locations import missing_workspace

            conn.rollback()
            raise missing_workspace(engine.url.render_as_string(hide_password=False))
        sqlite = is_sqlite(engine)
        saved = _backup_sqlite(engine) if sqlite and backup and before is not None else None
        if sqlite:
            # Batch mode copies tables; with foreign keys on, dropping a referenced
            # table would fail. Checked again below before anything is committed.
            conn.commit()
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            config = alembic_config()
            config.attributes["connection"] = conn
            if before == RELEASE1:
                command.stamp(config, BASELINE)  # release 1's schema is the baseline
            command.upgrade(config, target)
            if sqlite:
                problems = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if problems:
                    raise StoreError(f"upgrade left broken references: {problems[:5]}")
            conn.commit()
        finally:
            if sqlite:  # also after a refused upgrade: the connection goes back to the pool
                if conn.in_transaction():
                    conn.rollback()
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    return Upgrade(before, target, saved)


def upgrade_sql(engine: Engine) -> str:
    """The SQL that `upgrade` would run on this database, for a DBA to review and apply."""
    with engine.connect() as conn:
        before = current_revision(conn)
    _refuse_unknown(before)
    url = engine.url.render_as_string(hide_password=True)
    output = io.StringIO()
    config = alembic_config(url, output)
    if before == head():
        return f"-- already at schema revision {before}: nothing to do\n"
    if before is None:
        command.upgrade(config, "head", sql=True)
    else:
        if before == RELEASE1:
            command.stamp(config, BASELINE, sql=True)
            before = BASELINE
        command.upgrade(config, f"{before}:head", sql=True)
    return output.getvalue()


def _backup_sqlite(engine: Engine) -> Path | None:
    """Copy an SQLite workspace to `NAME.backup-<UTC time>.db` beside it (WAL included)."""
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        return None
    path = Path(database)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}.backup-{stamp}{path.suffix}")
    number = 1
    while target.exists():  # two upgrades within a second keep both copies
        number += 1
        target = path.with_name(f"{path.stem}.backup-{stamp}-{number}{path.suffix}")
    source, copy = sqlite3.connect(path), sqlite3.connect(target)
    try:
        source.backup(copy)  # a consistent copy even while another process writes (WAL)
    finally:
        copy.close()
        source.close()
    return target


def _describe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
