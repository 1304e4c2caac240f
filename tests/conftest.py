"""Shared fixtures: one parametrised database fixture runs store tests on both backends.

`db_url` / `engine` run each test on a fresh SQLite file and on a fresh schema of a real
PostgreSQL server (CC_TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
Without a reachable server the PostgreSQL half is skipped with the reason; in CI (CI=true)
that is a failure instead, so CI can never pass on SQLite alone.
Use `sqlite_url` / `sqlite_engine` for tests that are about SQLite or about the UI.

Only `init` and `demo` create a workspace (issue 15.7), so these fixtures hand out
workspaces made by the store's own creation path (`store.db.create_workspace`, what `init`
runs). `empty_db_url` / `empty_postgres_url` are places with no workspace yet (migration
tests, `init` itself).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from cli_helpers import Cli
from own_database import OwnDatabase
from sqlalchemy.engine import Engine, make_url

from store.actors import Actor
from store.db import create_workspace, open_store

POSTGRES_ADMIN_URL = os.environ.get(
    "CC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_pg_problem: str | None = None
_pg_checked = False


def _postgres_unavailable() -> str | None:
    """None when the server answers, else why not (checked once per session)."""
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
        except Exception as exc:  # any failure to connect means: no server for these tests
            _pg_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _pg_problem


def require_postgres() -> None:
    problem = _postgres_unavailable()
    if problem is None:
        return
    message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({problem})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the PostgreSQL tests (.ci/run starts the server)")
    pytest.skip(f"{message}; start a server or set CC_TEST_POSTGRES_URL to run them")


def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections see only a fresh schema, dropped afterwards."""
    require_postgres()
    schema = f"cc_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    # application_name tags this test's connections so teardown can end the ones a test
    # left open (an idle transaction would otherwise block DROP SCHEMA forever).
    options = f"-csearch_path={schema} -capplication_name={schema}"
    url = make_url(POSTGRES_ADMIN_URL).update_query_dict({"options": options})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": schema},
            )
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def initialised(url: str) -> str:
    """`url` after the store's creation path made an empty workspace there (as `init`)."""
    create_workspace(url).dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A place with no workspace yet: a path with no file, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from postgres_schema_url()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    return initialised(empty_db_url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_store(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def own_database() -> Iterator[OwnDatabase]:
    """A PostgreSQL database of the test's own, which it may cut off (tests/own_database.py)."""
    require_postgres()
    database = OwnDatabase(POSTGRES_ADMIN_URL)
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    yield from postgres_schema_url()


@pytest.fixture
def postgres_url(empty_postgres_url: str) -> str:
    return initialised(empty_postgres_url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return initialised(f"sqlite:///{tmp_path / 'store.db'}")


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = open_store(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def operator() -> Actor:
    return Actor(user="alice", role="operator", origin="ssh 203.0.113.7:50022")


@pytest.fixture
def viewer() -> Actor:
    return Actor(user="bob", role="read_only", origin="local")


# ---- the CLI in-process (tests/cli_helpers.py)


@pytest.fixture
def no_user_config(monkeypatch, tmp_path) -> None:
    """The CLI reads neither the developer's configuration file nor CAMPAIGN_CONSOLE_DB.
    CLI test modules use it for every test: pytestmark = usefixtures("no_user_config")."""
    monkeypatch.setenv("CAMPAIGN_CONSOLE_CONFIG", os.devnull)
    monkeypatch.delenv("CAMPAIGN_CONSOLE_DB", raising=False)


@pytest.fixture
def cli(sqlite_url, capsys, tmp_path) -> Cli:
    """The CLI on a fresh SQLite workspace."""
    return Cli(sqlite_url, capsys, tmp_path)


@pytest.fixture
def both_cli(db_url, capsys, tmp_path) -> Cli:
    """The CLI on a fresh workspace of each backend."""
    return Cli(db_url, capsys, tmp_path)
