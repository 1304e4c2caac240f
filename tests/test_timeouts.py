"""Issue 15.6: a PostgreSQL server that accepts connections but never answers must not hang
the CLI or the console. The connect timeout (default 10 s, `connect_timeout` under
[postgres]) and the statement timeout of interactive reads (`statement_timeout`) end the
command with exit 1 and a message naming the server and the setting. Builds and imports run
by the scheduler have no statement timeout.

The hanging server is a real socket in this process (it accepts and never says a word);
the commands run as real processes (.venv/bin/campaign-console). The subprocess timeout is
only a guard against a hang, not a timing assertion.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from store.db import engine_options, open_store

SCRIPT = Path(sys.executable).parent / "campaign-console"
HANG_GUARD = 90  # seconds: far above any timeout under test; reached only by a hang


class SilentServer:
    """Accepts TCP connections and never answers (nor closes them)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def run(url: str, *argv: str, config: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(config.parent),
        "CAMPAIGN_CONSOLE_CONFIG": str(config),
    }
    return subprocess.run(
        [str(SCRIPT), "--db", url, *argv],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        env=env,
    )


def test_a_server_that_never_answers_ends_the_command_with_the_host_and_the_setting(
    silent_server, tmp_path
):
    config = tmp_path / "config.toml"
    config.write_text("[postgres]\nconnect_timeout = 2\n", encoding="utf-8")
    url = f"postgresql+psycopg://cc@127.0.0.1:{silent_server.port}/campaigns"
    # `scheduler` too: the daemon opens its own engine with the configured timeout.
    for argv in (
        ["campaign", "list", "--json"],
        ["--read-only", "status"],
        ["init"],
        ["scheduler"],
    ):
        result = run(url, *argv, config=config)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stdout == ""
        err = result.stderr
        assert f"the PostgreSQL server at 127.0.0.1:{silent_server.port}" in err, err
        assert "did not answer within 2 s" in err and "connect_timeout under [postgres]" in err
        assert "Traceback" not in err and "sqlalche.me" not in err
    assert silent_server.accepted, "the client never reached the server"


def test_the_connect_timeout_defaults_to_ten_seconds(silent_server, tmp_path):
    config = tmp_path / "empty.toml"
    config.write_text("")  # no settings of its own
    url = f"postgresql+psycopg://cc@127.0.0.1:{silent_server.port}/campaigns"
    result = run(url, "campaign", "list", config=config)
    assert result.returncode == 1
    assert "did not answer within 10 s" in result.stderr, result.stderr
    assert "connect_timeout under [postgres]" in result.stderr


@pytest.mark.postgres
def test_an_interactive_read_blocked_by_a_lock_ends_with_the_statement_timeout(
    postgres_url, tmp_path
):
    config = tmp_path / "config.toml"
    config.write_text("[postgres]\nstatement_timeout = 1\n", encoding="utf-8")
    engine = open_store(postgres_url)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql("LOCK TABLE campaign IN ACCESS EXCLUSIVE MODE")
            result = run(postgres_url, "campaign", "list", "--json", config=config)
            holder.rollback()
    finally:
        engine.dispose()
    assert result.returncode == 1, result.stderr
    err = result.stderr
    host = (
        f"{sa.engine.make_url(postgres_url).host}:{sa.engine.make_url(postgres_url).port or 5432}"
    )
    assert f"the PostgreSQL server at {host} did not answer a read within 1 s" in err, err
    assert "statement_timeout under [postgres]" in err
    assert "[SQL:" not in err and "Traceback" not in err
    # The same command answers once the lock is gone.
    again = run(postgres_url, "campaign", "list", "--json", config=config)
    assert again.returncode == 0, again.stderr


@pytest.mark.postgres
def test_a_members_export_blocked_by_a_lock_ends_with_the_statement_timeout(postgres_url, tmp_path):
    """The export reads through its own DBAPI cursor (store.members.MemberStream), which
    SQLAlchemy's error hook never sees: it says the same thing, and leaves no file."""
    from test_builds import make_db, make_segment, new_campaign, r10_rows

    config = tmp_path / "config.toml"
    config.write_text("[postgres]\nstatement_timeout = 1\n", encoding="utf-8")
    target = tmp_path / "members.csv"
    engine = open_store(postgres_url)
    try:
        make_segment(engine, db_id=make_db(engine, r10_rows()))
        new_campaign(engine)
        with engine.connect() as holder:
            holder.exec_driver_sql("LOCK TABLE campaign_member IN ACCESS EXCLUSIVE MODE")
            result = run(
                postgres_url, "campaign", "members", "c", "--output", str(target), config=config
            )
            holder.rollback()
    finally:
        engine.dispose()
    assert result.returncode == 1, result.stderr
    assert "did not answer a read within 1 s" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "[SQL:" not in result.stderr
    assert list(tmp_path.glob("members.csv*")) == []
    again = run(postgres_url, "campaign", "members", "c", "--output", str(target), config=config)
    assert again.returncode == 0, again.stderr
    assert len(target.read_text().splitlines()) == 101


def test_the_scheduler_engine_has_no_statement_timeout(sqlite_url):
    from scheduler.service import SchedulerService

    service = SchedulerService(sqlite_url)
    try:
        assert engine_options(service.engine).statement_timeout is None
    finally:
        service.engine.dispose()


def test_the_scheduler_service_connects_with_the_configured_timeout(silent_server):
    """The daemon and the console's embedded scheduler open their own engine: it gets the
    `[postgres] connect_timeout` of the settings, not the default (issue 15.6)."""
    from scheduler.service import SchedulerService
    from store.errors import ConnectionProblem

    url = f"postgresql+psycopg://cc@127.0.0.1:{silent_server.port}/campaigns"
    with pytest.raises(ConnectionProblem) as raised:
        SchedulerService(url, connect_timeout=3)
    assert "did not answer within 3 s" in str(raised.value)
    assert "connect_timeout under [postgres]" in str(raised.value)
