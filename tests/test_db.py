"""Database set-up: URL setting, SQLite pragmas, schema at head (see test_migrations.py)."""

from __future__ import annotations

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
