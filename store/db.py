"""Engine, connection settings, and opening a database at the current schema revision.

One URL setting picks the database (store/settings.py): `--db URL`, else the
`CAMPAIGN_CONSOLE_DB` environment variable, else `db` in the config file, else an SQLite
file in the user's data directory.
SQLite runs in WAL mode with a busy timeout and foreign keys on (see STACK.md: without
WAL the console's poller starves while a build writes).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from store import hashing
from store.errors import StoreError
from store.settings import DB_ENV as ENV_VAR  # noqa: F401  (kept for callers)
from store.settings import default_db_url, load_settings, normalize_db_url  # noqa: F401

SQLITE_BUSY_TIMEOUT_MS = 30_000


def resolve_db_url(cli_value: str | None = None) -> str:
    """`--db` beats the environment variable, which beats the config file and the default
    file (store/settings.py); a bare path means an SQLite file."""
    return normalize_db_url(cli_value) if cli_value else load_settings().db


def describe_url(url: str) -> str:
    """The URL without a password, for headers and logs."""
    return make_url(url).render_as_string(hide_password=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001
    dbapi_connection.create_function(
        hashing.SQL_FUNCTION, 2, hashing.assignment_hash, deterministic=True
    )
    dbapi_connection.create_function(
        hashing.PROFILE_KEY_FUNCTION, 1, hashing.profile_key, deterministic=True
    )
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine with the pragmas and functions the store relies on. Creates no tables."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise StoreError(
        f"unsupported database URL {describe_url(url)!r}: use sqlite:///PATH "
        "or postgresql+psycopg://USER@HOST/DB"
    )


def init_schema(engine: Engine) -> None:
    """Bring the schema to head, or refuse: see store/migrate.py.

    An empty database gets every revision; an SQLite workspace of an older revision is
    backed up beside itself and upgraded; a PostgreSQL database of an older revision is
    refused with the command that upgrades it; a newer one is always refused.
    """
    if _at_head(engine):  # the usual case, answered without importing Alembic
        return
    from store import migrate  # Alembic is imported only when there is work to do

    migrate.ensure_current(engine)


REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(.*)$", re.MULTILINE)


@functools.cache
def head_revision() -> str | None:
    """The head of store/migrations/versions, read from the revision files' own
    `revision = "…"` / `down_revision = "…"` lines: importing Alembic to learn it costs
    more than a CLI command's whole work (issue 14, start-up). None when the files are
    not plain single-parent revisions: then Alembic decides (store.migrate.head())."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        found = dict(REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(found["revision"])
            parent = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str) or not isinstance(parent, str | None):
            return None  # a merge revision (tuple of parents): leave it to Alembic
        revisions.add(revision)
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(engine: Engine) -> bool:
    """True when alembic_version names this code's head; anything else (no table, an
    older or newer revision, an error) is left to store.migrate.ensure_current."""
    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except sa.exc.DBAPIError:
        return False
    return versions == [(head,)]


def open_store(url: str | None = None) -> Engine:
    """Resolve the URL, make the engine and make sure the schema is at head."""
    engine = make_engine(resolve_db_url(url))
    init_schema(engine)
    return engine


ANALYZE_MIN_CHANGED_ROWS = 500


def keep_statistics_fresh(
    connection: Session | sa.Connection, table: str, changed_rows: int
) -> None:
    """PostgreSQL: ANALYZE `table` after a bulk change that is large next to what the
    planner believes the table holds (pg_class.reltuples).

    Right after a bulk load, before autovacuum catches up, the planner takes a freshly
    filled table for empty and picks nested loops that are quadratic in the real row
    count (a 2,400-member activation took 8 s instead of 20 ms; a 500k-row segment replace
    took minutes). ANALYZE samples a fixed number of rows and, inside the transaction,
    sees the transaction's own rows, so the very next statement plans on real figures.
    `table` must be a name from the schema, never user input.
    """
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    if bind.dialect.name != "postgresql" or changed_rows < ANALYZE_MIN_CHANGED_ROWS:
        return
    believed = connection.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)"),
        {"table": table},
    ).scalar()
    if believed is None or changed_rows > 0.1 * max(believed, 0):
        connection.execute(sa.text(f"ANALYZE {table}"))


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back everything on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
