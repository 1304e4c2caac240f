"""Where a workspace is, as a person knows it, which backend holds it, and how a client
opened it: shared by store/db.py (engines) and store/migrate.py (schema), which must not
import each other both ways (tests/test_architecture.py)."""

from __future__ import annotations

import shlex
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, Engine, make_url

from store.errors import WorkspaceMissingError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds; `connect_timeout` under [postgres] (settings.py)


def describe_url(url: str) -> str:
    """The URL without a password, for headers and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _backend(bind: Engine | Connection | Session) -> str:
    get_bind = getattr(bind, "get_bind", None)  # a Session
    return (get_bind() if get_bind else bind).dialect.name


def is_postgres(bind: Engine | Connection | Session) -> bool:
    """Whether an engine, a connection or a session works on PostgreSQL: the one test of
    the backend outside the migrations (which keep theirs as they were written)."""
    return _backend(bind) == "postgresql"


def is_sqlite(bind: Engine | Connection | Session) -> bool:
    return _backend(bind) == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def where(url: str) -> str:
    """The workspace as a person knows it: the SQLite file, or the URL without password."""
    path = sqlite_path(url)
    return str(path) if path is not None else describe_url(url)


def missing_workspace(
    url: str, detail: str = "", *, remedy: str | None = None
) -> WorkspaceMissingError:
    """Issue 15.7: a typo in --db must never create a workspace. Only `init` and `demo` do;
    `remedy` replaces that advice where they would fail too (another application's file,
    a PostgreSQL database that does not exist)."""
    place = where(url)
    arg = shlex.quote(place)
    remedy = remedy or (
        f"to create one, run `campaign-console init --db {arg}` (an empty workspace) or "
        f"`campaign-console demo --db {arg}` (the demo)"
    )
    return WorkspaceMissingError(
        f"no campaign-console workspace at {place}{detail}. Check --db (or "
        f"CAMPAIGN_CONSOLE_DB, `db` in the config file); {remedy}"
    )


@dataclass(frozen=True)
class EngineOptions:
    """How a client opens the store (issue 15.5, 15.6), remembered per engine."""

    read_only: bool = False  # SQLite: the file is opened with mode=ro
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    statement_timeout: float | None = None  # PostgreSQL interactive reads (read_session)


_OPTIONS: weakref.WeakKeyDictionary[Engine, EngineOptions] = weakref.WeakKeyDictionary()


def engine_options(engine: Engine) -> EngineOptions:
    return _OPTIONS.get(engine, EngineOptions())
