"""Creating a workspace: `init` (an empty one) and the demo's (issue 15.7).

Only these two create a workspace; every other command and the console open an existing
one (`store.db.open_store`) and refuse a missing one, naming both. A typo in `--db` so
never becomes a new, empty workspace that looks like a real one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from store.actors import Actor
from store.db import (
    DEFAULT_CONNECT_TIMEOUT,
    as_connected,
    check_connection,
    create_workspace,
    make_engine,
    sqlite_path,
    transaction,
    where,
    workspace_exists,
)
from store.errors import DomainError, InvalidStateError
from store.migrate import foreign_tables
from store.models import AuditEntry, SchedulerLease, StoreMeta

# Tables whose rows do not make a workspace "non-empty": bookkeeping, not data.
_BOOKKEEPING = {AuditEntry.__tablename__, SchedulerLease.__tablename__, StoreMeta.__tablename__}


@dataclass(frozen=True)
class InitResult:
    """What `init` did: the workspace, whether it was created now, its schema revision."""

    database: str
    created: bool
    revision: str

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "created": self.created, "revision": self.revision}


def data_tables_in_use(engine: Engine) -> list[str]:
    """The tables of ours that hold rows, bookkeeping aside (empty list: an empty workspace)."""
    present = set(sa.inspect(engine).get_table_names())
    used = []
    with engine.connect() as conn:
        for name in sorted(set(SQLModel.metadata.tables) - _BOOKKEEPING):
            if (
                name in present
                and conn.execute(
                    sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)
                ).first()
            ):
                used.append(name)
    return used


def init(
    url: str,
    actor: Actor,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> InitResult:
    """`campaign-console init`: create an empty workspace at `url` (the SQLite file and its
    directory, or the tables in the PostgreSQL database/schema the URL selects).

    Refused (exit 3) for a read-only actor, for a workspace that already holds data, and
    for an SQLite file of another application. An existing empty workspace is left as it
    is (`created` false). Refusals are audited in the workspace when it exists; the
    creation is audited in the new workspace (`workspace.init`)."""
    from store import migrate
    from store.audit import record, record_refusal

    exists = workspace_exists(url, connect_timeout=connect_timeout)
    path = sqlite_path(url)
    engine: Engine | None = None
    if exists or (path is not None and path.is_file()):
        engine = make_engine(url, read_only=not exists, connect_timeout=connect_timeout)
    try:
        if exists:
            actor = as_connected(engine, actor)  # a read-only database role (issue 15.5)
        actor.require_write(f"create a workspace at {where(url)}")
        if exists:
            used = data_tables_in_use(engine)
            if used:
                raise InvalidStateError(
                    f"{where(url)} is a workspace that already holds data "
                    f"({', '.join(used[:4])}{', …' if len(used) > 4 else ''}): init only "
                    "creates new, empty workspaces. Use it as it is, or choose another --db"
                )
        elif engine is not None:  # an SQLite file without our tables
            check_connection(engine)
            other = foreign_tables(engine)
            if other:
                raise InvalidStateError(
                    f"{where(url)} is an SQLite database of another application (tables "
                    f"{', '.join(other[:4])}): init makes a workspace only in a new file or "
                    "an empty one; choose another --db"
                )
    except DomainError as exc:
        if exists:  # refused in an existing workspace: its audit log records it
            with contextlib.suppress(Exception):
                record_refusal(engine, actor, "workspace.init", "workspace", None, str(exc))
        raise
    finally:
        if engine is not None:
            engine.dispose()

    engine = create_workspace(url, connect_timeout=connect_timeout)
    try:
        with transaction(engine) as session:
            if not exists:
                record(session, actor, "workspace.init", "workspace", target_name=where(url))
        return InitResult(where(url), created=not exists, revision=migrate.head())
    finally:
        engine.dispose()


def open_or_create(
    url: str,
    actor: Actor,
    action: str,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float | None = None,
) -> Engine:
    """The demo's engine: its workspace, created first when missing. A read-only actor never
    creates one (refused before anything is made; there is no audit log yet to record it)."""
    from store.db import open_store

    if not workspace_exists(url, connect_timeout=connect_timeout):
        actor.require_write(action)
        return create_workspace(
            url, connect_timeout=connect_timeout, statement_timeout=statement_timeout
        )
    return open_store(
        url,
        read_only=actor.read_only,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
    )
