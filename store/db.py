"""Engine, connection settings, and opening a database at the current schema revision.

One URL setting picks the database (store/settings.py): `--db URL`, else the
`CAMPAIGN_CONSOLE_DB` environment variable, else `db` in the config file, else an SQLite
file in the user's data directory.
SQLite runs in WAL mode with a busy timeout and foreign keys on (see STACK.md: without
WAL the console's poller starves while a build writes).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import re
import shlex
import sqlite3
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from store import hashing
from store.errors import (
    ConnectionProblem,
    StorageFull,
    StoreError,
    WorkspaceBusy,
    WorkspaceMissingError,
)
from store.locations import (  # noqa: F401  (re-exported: callers import them from here)
    _OPTIONS,
    DEFAULT_CONNECT_TIMEOUT,
    EngineOptions,
    describe_url,
    engine_options,
    is_postgres,
    is_sqlite,
    missing_workspace,
    sqlite_path,
    where,
)
from store.settings import DB_ENV as ENV_VAR  # noqa: F401  (kept for callers)
from store.settings import default_db_url, load_settings, normalize_db_url  # noqa: F401

SQLITE_BUSY_TIMEOUT_MS = 30_000


def resolve_db_url(cli_value: str | None = None) -> str:
    """`--db` beats the environment variable, which beats the config file and the default
    file (store/settings.py); a bare path means an SQLite file."""
    return normalize_db_url(cli_value) if cli_value else load_settings().db


def _sqlite_on_connect(dbapi_connection, _record, *, read_only: bool = False) -> None:  # noqa: ANN001
    dbapi_connection.create_function(
        hashing.SQL_FUNCTION, 2, hashing.assignment_hash, deterministic=True
    )
    dbapi_connection.create_function(
        hashing.PROFILE_KEY_FUNCTION, 1, hashing.profile_key, deterministic=True
    )
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    if not read_only:  # a read-only connection cannot switch the journal; the file is WAL
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(
    url: str,
    *,
    read_only: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float | None = None,
) -> Engine:
    """An engine with the pragmas and functions the store relies on. Creates no tables
    and no directory; connecting to a missing SQLite file would create it, so callers that
    must not create a workspace check first (`open_store`)."""
    parsed = make_url(url)
    options = EngineOptions(read_only, connect_timeout, statement_timeout)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        kwargs: dict = {
            "connect_args": {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            }
        }
        if read_only and path is not None:
            # Issue 15.5: a read-only actor opens the file read-only, so no code path can
            # write it. WAL readers need the -shm file: SQLite creates it when the
            # directory is writable, else it must exist (docs/security.md).
            uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
            kwargs["connect_args"]["uri"] = True
            kwargs["creator"] = lambda: sqlite3.connect(
                uri, uri=True, check_same_thread=False, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
            )
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(
            engine, "connect", functools.partial(_sqlite_on_connect, read_only=read_only)
        )
        sa.event.listen(engine, "handle_error", _on_error)
        _OPTIONS[engine] = options
        return engine
    if parsed.get_backend_name() == "postgresql":
        # Issue 15.6: a server that accepts connections and never answers must not hang
        # a client: libpq's connect_timeout (whole seconds, at least 2) bounds the wait.
        seconds = max(2, math.ceil(connect_timeout))
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            connect_args={"connect_timeout": seconds},
        )
        sa.event.listen(engine, "handle_error", _on_error)
        _OPTIONS[engine] = options
        return engine
    raise StoreError(
        f"unsupported database URL {describe_url(url)!r}: use sqlite:///PATH "
        "or postgresql+psycopg://USER@HOST/DB"
    )


def statement_timeout_ms(engine: Engine) -> int | None:
    """PostgreSQL: the interactive-read statement timeout of this engine in ms, else None."""
    seconds = engine_options(engine).statement_timeout
    if not is_postgres(engine) or not seconds:
        return None
    return max(1, round(seconds * 1000))


def _postgres_host(engine: Engine) -> str:
    return f"{engine.url.host or 'localhost'}:{engine.url.port or 5432}"


def statement_timeout_problem(
    engine: Engine | None, original: BaseException
) -> ConnectionProblem | None:
    """A read cancelled by the statement timeout, said for a person: which server and which
    setting (issue 15.6); None for any other error. Statements run through SQLAlchemy get
    this from `_on_error`; a reader of a raw DBAPI cursor (the members export)
    asks for it itself."""
    if type(original).__name__ != "QueryCanceled" or "statement timeout" not in str(original):
        return None
    seconds = engine_options(engine).statement_timeout if engine is not None else None
    host = _postgres_host(engine) if engine is not None else "the server"
    return ConnectionProblem(
        f"the PostgreSQL server at {host} did not answer a read within {seconds:g} s: it "
        "may be overloaded or a lock holds the table; retry, or raise statement_timeout "
        "under [postgres] in the config file (0: no limit)"
    )


NOTHING_KEPT = "the change was rolled back and nothing of it was kept"  # a failed transaction


def storage_full_problem(engine: Engine, original: BaseException) -> StorageFull | None:
    """Out of disk space, said for a person: which file or server, that the transaction
    kept nothing, and what to do; None for any other error. SQLite reports SQLITE_FULL
    for its file, its journal and its temporary files alike (and when the file reaches
    `max_page_count`); PostgreSQL's SQLSTATE 53100 is disk_full."""
    if is_sqlite(engine):
        if getattr(original, "sqlite_errorname", None) != "SQLITE_FULL":
            return None
        place = where(engine.url.render_as_string(hide_password=False))
        return StorageFull(
            f"the disk is full: SQLite could not write {place}, its write-ahead log or its "
            f"temporary files (SQLITE_TMPDIR, else TMPDIR, else /var/tmp); {NOTHING_KEPT}. "
            "Free space and run it again"
        )
    if getattr(original, "sqlstate", None) != "53100":
        return None
    text = (str(original).strip().splitlines() or [""])[0]
    return StorageFull(
        f"the PostgreSQL server at {_postgres_host(engine)} is out of disk space ({text}); "
        f"{NOTHING_KEPT}. Free space on the server and run it again"
    )


def busy_problem(engine: Engine, original: BaseException) -> WorkspaceBusy | None:
    """SQLite's write lock held by another connection past the busy timeout, said for a
    person; None for any other error."""
    if not is_sqlite(engine) or getattr(original, "sqlite_errorname", None) != "SQLITE_BUSY":
        return None
    place = where(engine.url.render_as_string(hide_password=False))
    return WorkspaceBusy(
        f"the workspace {place} is busy: another process kept writing it for more than "
        f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s (a large import or segment file holds it until "
        f"it commits); {NOTHING_KEPT}. Run it again when that ends"
    )


def _on_error(context: sa.engine.ExceptionContext) -> None:
    """Errors a person can act on, said for a person: a cancelled interactive read says
    which server and which setting (issue 15.6), a full disk where it is full, a locked
    SQLite workspace that it is busy."""
    engine, original = context.engine, context.original_exception
    if engine is None:
        return
    problem = (
        storage_full_problem(engine, original)
        or busy_problem(engine, original)
        or (statement_timeout_problem(engine, original) if is_postgres(engine) else None)
    )
    if problem is not None:
        raise problem from None


# psycopg repeats the address of a connection it could not make: `connection failed:
# connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database system is
# shutting down`. Only what follows is the reason.
LIBPQ_ADDRESS = re.compile(
    r"^(?:connection failed: )?connection to server (?:at|on) .*? failed: (?:FATAL: +)?"
)


def connection_problem(engine: Engine, exc: BaseException) -> StoreError:
    """A failure to reach or open the database, said for a person: which file or server,
    and what to change. Never SQLAlchemy's text, SQL or links (issue 15.6, 15.10)."""
    url = engine.url.render_as_string(hide_password=False)
    original = getattr(exc, "orig", None) or exc
    text = (str(original).strip().splitlines() or [""])[0]
    if is_sqlite(engine):
        place = where(url)
        if "file is not a database" in text or "file is encrypted" in text:
            return ConnectionProblem(
                f"{place} is not an SQLite database, so not a campaign-console workspace: "
                "check --db (a typo, or another file?). `campaign-console init --db NEW.db` "
                "creates a new workspace"
            )
        path = sqlite_path(url)
        if (
            engine_options(engine).read_only
            and path is not None
            and ("unable to open" in text or "readonly database" in text)
        ):
            # A WAL reader needs the shared-memory index beside the file: SQLite creates
            # `-shm` when it may write the directory; otherwise it must already exist.
            return ConnectionProblem(
                f"cannot read {place} read-only: it is a WAL database and its index "
                f"{path.name}-shm is missing and cannot be created in {path.parent} by this "
                "user. Open it while an operator's console or the scheduler has it open "
                "(they keep the index), or let this user write that directory"
            )
        return ConnectionProblem(f"cannot open {place}: {text}")
    host = _postgres_host(engine)
    text = LIBPQ_ADDRESS.sub("", text)  # the message names the server once, below
    if "timeout" in text.lower():
        seconds = max(2, math.ceil(engine_options(engine).connect_timeout))
        return ConnectionProblem(
            f"the PostgreSQL server at {host} did not answer within {seconds} s: check that "
            "it is up and reachable, or raise connect_timeout under [postgres] in the "
            "config file (default 10 s)"
        )
    if "does not exist" in text and "database" in text:
        name = engine.url.database or ""
        return missing_workspace(
            url,
            f" (the database {name!r} does not exist)",
            # init makes a workspace in a database; it does not create the database
            remedy=f"create the database first (`createdb {shlex.quote(name)}`), then run "
            f"`campaign-console init --db {shlex.quote(where(url))}` once",
        )
    return ConnectionProblem(f"cannot connect to the PostgreSQL server at {host}: {text}")


# SQLite's primary result codes that mean the file itself cannot be used: cannot open it
# (gone, no permission), not a database, an I/O error (its device, or a file removed).
SQLITE_UNREACHABLE = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_IOERR)


def _lost_or_refused(exc: sa.exc.DBAPIError) -> bool:
    """Whether the error is the database's absence rather than a statement's failure."""
    if exc.connection_invalidated:  # the driver says the connection was lost
        return True
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in SQLITE_UNREACHABLE
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    # psycopg: a connection that could not be made, or broke, has no server result, so no
    # SQLSTATE; a server ending sessions says class 08 or 57P01-57P03.
    state = getattr(exc.orig, "sqlstate", None)
    return state is None or state[:2] == "08" or state in ("57P01", "57P02", "57P03")


def unreachable_problem(engine: Engine, exc: BaseException) -> StoreError | None:
    """`connection_problem` when `exc` says the database could not be reached: a
    connection refused or lost (the server stopped, restarted, or cut us off), or a file
    that cannot be opened. None for any other error (a statement or a COMMIT that
    failed). The console, the CLI and the scheduler say an outage this way."""
    if isinstance(exc, ConnectionProblem):
        return exc
    if isinstance(exc, sa.exc.DBAPIError) and _lost_or_refused(exc):
        return connection_problem(engine, exc)
    return None


def check_connection(engine: Engine) -> None:
    """Open one connection now, so an unreachable server or a file that is not a database
    is reported plainly before anything else happens."""
    try:
        with engine.connect() as conn:
            if is_sqlite(engine):
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
    except (sa.exc.DBAPIError, sqlite3.Error) as exc:
        raise connection_problem(engine, exc) from None


def init_schema(engine: Engine, *, create: bool = False) -> None:
    """Bring the schema to head, or refuse: see store/migrate.py.

    An empty database gets every revision only with `create` (`init`, `demo`: issue
    15.7); otherwise it is a missing workspace. An SQLite workspace of an older revision is
    backed up beside itself and upgraded; a PostgreSQL database of an older revision is
    refused with the command that upgrades it; a newer one is always refused.
    """
    if _at_head(engine):  # the usual case, answered without importing Alembic
        return
    from store import migrate  # Alembic is imported only when there is work to do

    migrate.ensure_current(engine, create=create)


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


def open_store(
    url: str | None = None,
    *,
    read_only: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float | None = None,
) -> Engine:
    """Resolve the URL and open an existing workspace at the schema head.

    A missing workspace (no SQLite file, or a database without our tables) is refused with
    `WorkspaceMissingError`: nothing is created (issue 15.7, `create_workspace` does that).
    """
    url = resolve_db_url(url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise missing_workspace(url, " (a directory)" if path.is_dir() else "")
    engine = make_engine(
        url,
        read_only=read_only,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
    )
    try:
        check_connection(engine)
        init_schema(engine)
        _detect_read_only_role(engine)
    except sa.exc.DBAPIError as exc:  # the database went away after the first connection
        engine.dispose()
        problem = unreachable_problem(engine, exc)
        if problem is None:
            raise
        raise problem from None
    except BaseException:
        engine.dispose()
        raise
    return engine


# ------------------------------------------------------------------ read-only connections
# Issue 15.5. On PostgreSQL the database role is the boundary: a role that may not write
# the workspace's tables (`database grant-read-only`, store/grants.py) makes every actor
# of that connection read-only, whatever its flags, so refusals are the store's usual
# exit 3 instead of permission errors. On SQLite a read-only actor opens the file with
# mode=ro. Either way refusals are still audited: see `write_audit_rows`.

_READ_ONLY_ROLE: weakref.WeakKeyDictionary[Engine, str | None] = weakref.WeakKeyDictionary()
_AUDIT_WRITERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
AUDIT_REFUSAL_FUNCTION = "cc_audit_refusal"  # store/grants.py defines it


def _detect_read_only_role(engine: Engine) -> None:
    role = None
    if is_postgres(engine):
        with engine.connect() as conn:
            user, may_write = conn.execute(
                sa.text(
                    "SELECT current_user, CASE WHEN to_regclass('campaign') IS NULL THEN true "
                    "ELSE has_table_privilege('campaign', 'INSERT, UPDATE, DELETE') END"
                )
            ).one()
        role = None if may_write else user
    _READ_ONLY_ROLE[engine] = role


def read_only_role(engine: Engine) -> str | None:
    """The PostgreSQL role this engine connects as, when it may not write the workspace
    (found at connect by `open_store`; other engines are asked on first use)."""
    if engine not in _READ_ONLY_ROLE:
        _detect_read_only_role(engine)
    return _READ_ONLY_ROLE[engine]


def as_connected(engine: Engine, actor):  # noqa: ANN001, ANN201  (store.actors.Actor)
    """`actor` as this connection allows it: read-only when the database role is (15.5)."""
    role = read_only_role(engine)
    if role is None:
        return actor
    return dataclasses.replace(actor, role="read_only", db_role=role)


def write_audit_rows(engine: Engine, table: sa.Table, rows: list[dict]) -> None:
    """Append audit rows for `engine`'s clients, also when that engine cannot write:

    * a PostgreSQL role that may only read appends refusals through the SECURITY DEFINER
      function `cc_audit_refusal` (store/grants.py): it can add refusal rows of its own
      role and nothing else;
    * an SQLite file opened read-only (mode=ro) gets its refusals through a separate
      read-write connection, which works when the OS user may write the file (the
      `--read-only` flag); a user who may not write the file cannot audit (the refusal is
      still refused, and logged to stderr).
    """
    if read_only_role(engine) is not None:
        with engine.begin() as conn:
            for row in rows:
                conn.execute(
                    sa.text(
                        f"SELECT {AUDIT_REFUSAL_FUNCTION}(:actor, :origin, :action, "
                        ":target_type, :target_id, :target_name, :details)"
                    ),
                    {
                        "actor": row["actor"],
                        "origin": row["origin"],
                        "action": row["action"],
                        "target_type": row["target_type"],
                        "target_id": row["target_id"],
                        "target_name": row["target_name"],
                        "details": json.dumps(row["details"], default=str),
                    },
                )
        return
    with audit_writer(engine).begin() as conn:
        conn.execute(sa.insert(table), rows)


def audit_writer(engine: Engine) -> Engine:
    """The engine audit rows of `engine`'s clients are written with: itself, or for an
    SQLite file opened read-only a read-write engine on the same file (kept with it)."""
    if not (engine_options(engine).read_only and is_sqlite(engine)):
        return engine
    writer = _AUDIT_WRITERS.get(engine)
    if writer is None:
        writer = make_engine(engine.url.render_as_string(hide_password=False))
        _AUDIT_WRITERS[engine] = writer
        sa.event.listen(engine, "engine_disposed", lambda _e, w=writer: w.dispose())
    return writer


def workspace_exists(url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> bool:
    """True when `url` names a workspace (tables of ours, at any revision). Creates nothing."""
    from store import migrate

    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return False
    engine = make_engine(url, read_only=path is not None, connect_timeout=connect_timeout)
    try:
        check_connection(engine)
        with engine.connect() as conn:
            return migrate.current_revision(conn) is not None
    except WorkspaceMissingError:
        return False
    finally:
        engine.dispose()


def create_workspace(
    url: str,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float | None = None,
) -> Engine:
    """Open the workspace at `url`, creating it empty at the schema head when missing (the
    SQLite file and its directory; on PostgreSQL the tables). Only `init` and `demo`
    (store/workspace.py) and test fixtures call this (issue 15.7)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url, connect_timeout=connect_timeout, statement_timeout=statement_timeout)
    try:
        check_connection(engine)
        init_schema(engine, create=True)
    except BaseException:
        engine.dispose()
        raise
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
    if not is_postgres(bind) or changed_rows < ANALYZE_MIN_CHANGED_ROWS:
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
