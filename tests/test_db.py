"""Database set-up: URL setting, SQLite pragmas, schema at head (see test_migrations.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from store import db, migrate


def test_cli_value_beats_environment_which_beats_default(monkeypatch, tmp_path):
    monkeypatch.setenv(db.ENV_VAR, "sqlite:////from/env.db")
    assert db.resolve_db_url("sqlite:////from/flag.db") == "sqlite:////from/flag.db"
    assert db.resolve_db_url(None) == "sqlite:////from/env.db"
    monkeypatch.delenv(db.ENV_VAR)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert (
        db.resolve_db_url(None)
        == f"sqlite:///{tmp_path / 'data' / 'campaign-console' / 'workspace.db'}"
    )


def test_bare_path_means_an_sqlite_file(tmp_path):
    assert db.resolve_db_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"


def test_sqlite_file_runs_in_wal_with_busy_timeout_and_foreign_keys(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_schema_is_created_on_first_use_at_the_head_revision(engine):
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
    tables = set(sa.inspect(engine).get_table_names())
    assert {"profile", "campaign", "campaign_member", "audience_build", "audit_log"} <= tables
    db.init_schema(engine)  # idempotent on an existing database
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()


def test_unsupported_url_gets_a_clear_error():
    try:
        db.make_engine("mysql://root@localhost/x")
    except db.StoreError as exc:
        assert "unsupported database URL" in str(exc)
    else:
        raise AssertionError("mysql must be refused")


def _refused_engine() -> sa.Engine:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")


def test_a_refused_connection_is_an_outage_said_in_the_stores_words():
    engine = _refused_engine()
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        problem = db.unreachable_problem(engine, exc)
    engine.dispose()
    port = engine.url.port
    # The server is named once: not again in the driver's `connection to server at …`.
    assert str(problem) == f"cannot connect to the PostgreSQL server at 127.0.0.1:{port}: " + (
        "Connection refused"
    )


@pytest.mark.postgres
def test_a_commit_refused_by_a_deferred_constraint_is_not_an_outage(empty_postgres_url):
    """A COMMIT's failure carries no statement either, as a failed connection does."""
    engine = sa.create_engine(empty_postgres_url)
    with pytest.raises(sa.exc.IntegrityError) as raised, engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1), (1)"))
    engine.dispose()
    assert raised.value.statement is None  # raised by the COMMIT
    assert db.unreachable_problem(engine, raised.value) is None
    assert db.unreachable_problem(engine, ValueError("not a database error")) is None


def test_on_sqlite_a_failed_statement_is_not_an_outage_and_a_file_that_is_not_a_database_is(
    sqlite_engine, tmp_path
):
    with pytest.raises(sa.exc.OperationalError) as failed, sqlite_engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert db.unreachable_problem(sqlite_engine, failed.value) is None
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not an SQLite file" * 300)
    engine = sa.create_engine(f"sqlite:///{garbage}")
    with pytest.raises(sa.exc.DatabaseError) as unusable, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM sqlite_master"))
    engine.dispose()
    problem = db.unreachable_problem(engine, unusable.value)
    assert str(problem).startswith(f"{garbage} is not an SQLite database")
