"""The real entry point (.venv/bin/campaign-console) as a process: exit codes, JSON on
stdout, reasons on stderr, the --wait progress bar only on a terminal; and --wait while
a real scheduler holds the lease (issue 6)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, r10_workspace
from e2e.scheduler_world import poll
from sqlmodel import Session

from store.db import create_workspace, open_store
from store.models import AudienceBuild

SCRIPT = Path(sys.executable).parent / "campaign-console"


pytestmark = pytest.mark.usefixtures("no_user_config")


def run(db_url: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "--db", db_url, *argv], capture_output=True, text=True, timeout=120
    )


def test_console_script_exit_codes_and_streams(sqlite_url, tmp_path):
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e . first"
    created = run(sqlite_url, "database", "create", "main", "--fields", "region:text", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "main"

    csv = tmp_path / "p.csv"
    csv.write_text("external_id,region\nA,Moscow\nB,Kazan\n", encoding="utf-8")
    imported = run(sqlite_url, "import", "profiles", "--database", "main", str(csv), "--json")
    assert imported.returncode == 0 and json.loads(imported.stdout)["inserted"] == 2

    piped = subprocess.run(
        [str(SCRIPT), "--db", sqlite_url, "import", "profiles", "--database", "main", "-"],
        input="external_id,region\nC,Sochi\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0 and "1 new" in piped.stdout, piped.stderr

    refused = run(sqlite_url, "database", "create", "main", "--fields", "region:text")
    assert refused.returncode == 3
    assert refused.stdout == "" and "already exists" in refused.stderr

    missing = run(sqlite_url, "campaign", "show", "nope", "--json")
    assert missing.returncode == 4 and missing.stdout == "" and "nope" in missing.stderr

    usage = run(sqlite_url, "campaign", "explode")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr

    unsupported = run("mysql://nowhere/db", "builds")
    assert unsupported.returncode == 1 and "unsupported database URL" in unsupported.stderr

    garbage = tmp_path / "not-a-database.db"
    garbage.write_bytes(b"this is not an SQLite file" * 100)
    # Issue 15.10: which file, and what to do; no SQLAlchemy text, SQL or links.
    not_sqlite = run(f"sqlite:///{garbage}", "campaign", "list")
    assert not_sqlite.returncode == 1 and not_sqlite.stdout == ""
    assert f"{garbage} is not an SQLite database" in not_sqlite.stderr
    assert "check --db" in not_sqlite.stderr and "campaign-console init" in not_sqlite.stderr
    for internal in ("Traceback", "sqlalche.me", "[SQL:", "(sqlite3.", "unexpected error"):
        assert internal not in not_sqlite.stderr


def _workspace_with_draft(sqlite_url: str, capsys, tmp_path: Path) -> None:
    cli = Cli(sqlite_url, capsys, tmp_path)
    r10_workspace(cli)
    cli.ok("campaign", "create", "c", "--database", "main", "--segment", "everyone", "--lcg", "15")


def test_wait_draws_a_progress_bar_on_a_terminal_only(sqlite_url, capsys, tmp_path):
    _workspace_with_draft(sqlite_url, capsys, tmp_path)
    # stderr is a pipe: no bar, only the outcome line
    piped = run(sqlite_url, "campaign", "activate", "c", "--wait", "--json")
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and "[#" not in piped.stderr
    assert "build #1 (activation): done" in piped.stderr
    assert json.loads(piped.stdout)["audience"]["control"] == 15

    # stderr is a terminal: the bar is drawn there, stdout stays clean JSON
    Cli(sqlite_url, capsys, tmp_path).ok("campaign", "lcg", "c", "--percent", "10")
    primary, replica = pty.openpty()
    try:
        process = subprocess.run(
            [str(SCRIPT), "--db", sqlite_url, "campaign", "lcg", "c", "--wait", "--percent", "5"],
            stdout=subprocess.PIPE,
            stderr=replica,
            timeout=120,
        )
        os.close(replica)
        replica = -1
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO once the terminal has no writer left
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if replica != -1:
            os.close(replica)
        os.close(primary)
    terminal = b"".join(chunks).decode()
    assert process.returncode == 0, terminal
    assert "[#" in terminal and "\r" in terminal
    assert b"[#" not in process.stdout


def test_wait_polls_while_a_scheduler_holds_the_lease(sqlite_url, capsys, tmp_path):
    """No in-process run when a scheduler is alive: the scheduler's worker runs the build."""
    from scheduler.service import SchedulerService

    _workspace_with_draft(sqlite_url, capsys, tmp_path)
    service = SchedulerService(sqlite_url, lease_ttl=5.0).start()
    try:
        assert service.wait_until_acting(30)
        cli = Cli(sqlite_url, capsys, tmp_path)
        result = cli("campaign", "activate", "c", "--wait", "--json")
    finally:
        service.shutdown()
    assert result.code == 0, result.err
    assert "a scheduler holds the lease" in result.err
    assert result.json["audience"]["control"] == 15
    engine = open_store(sqlite_url)
    try:
        with Session(engine) as session:
            build = session.scalar(sa.select(AudienceBuild))
    finally:
        engine.dispose()
    assert build.status == "done"
    assert not (build.worker or "").startswith("cli:"), build.worker


def test_wait_without_a_scheduler_runs_the_builds_in_this_process(sqlite_url, capsys, tmp_path):
    _workspace_with_draft(sqlite_url, capsys, tmp_path)
    result = Cli(sqlite_url, capsys, tmp_path)("campaign", "activate", "c", "--wait")
    assert result.code == 0, result.err
    engine = open_store(sqlite_url)
    try:
        with Session(engine) as session:
            build = session.scalar(sa.select(AudienceBuild))
    finally:
        engine.dispose()
    assert build.status == "done" and build.worker.startswith("cli:")


def test_wait_requeues_a_build_abandoned_by_a_crashed_process_and_runs_it(
    sqlite_url, capsys, tmp_path
):
    """No scheduler: a build left `running` with a stale heartbeat (its process died) is
    requeued from its checkpoint and run by --wait, instead of being waited on forever."""
    import io
    from datetime import timedelta

    from console.cli.wait import wait_for_builds
    from store import builds
    from store.models import utcnow

    _workspace_with_draft(sqlite_url, capsys, tmp_path)
    Cli(sqlite_url, capsys, tmp_path).ok("campaign", "activate", "c")
    engine = open_store(sqlite_url)
    try:
        build_id = builds.claim_next_build(engine, "crashed:host:1")
        assert build_id is not None
        with engine.begin() as conn:  # the crashed worker's last heartbeat, long ago
            conn.execute(
                sa.update(AudienceBuild)
                .where(AudienceBuild.id == build_id)
                .values(heartbeat_at=utcnow() - timedelta(minutes=10))
            )
        err = io.StringIO()
        assert wait_for_builds(engine, [build_id], err) == 0
        with Session(engine) as session:
            build = session.get(AudienceBuild, build_id)
        assert build.status == "done" and build.worker.startswith("cli:")
        assert f"build #{build_id} (activation): done" in err.getvalue()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_command_whose_database_goes_away_says_which_and_keeps_nothing(own_database):
    """A real outage mid-command (tests/own_database.py): the import is reading its file
    from a pipe when the database ends its connection and refuses new ones."""
    url = own_database.url
    create_workspace(url).dispose()
    assert run(url, "database", "create", "main", "--fields", "region:text").returncode == 0
    proc = subprocess.Popen(
        [str(SCRIPT), "--db", url, "import", "profiles", "--database", "main", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("external_id,region\nA,Moscow\n")
    proc.stdin.flush()

    def connected() -> bool:  # the command has opened the workspace and waits for input
        with own_database.admin.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": own_database.name},
                ).scalar()
            )

    poll(connected, 30, what="the command's connection")
    own_database.cut()
    out, err = proc.communicate("B,Kazan\n", timeout=60)  # the rest, then end of file
    assert proc.returncode == 1, err
    assert out == ""
    assert err.startswith("error: cannot connect to the PostgreSQL server at 127.0.0.1:5432"), err
    assert len(err.strip().splitlines()) == 1, err
    for internal in ("Traceback", "sqlalche.me", "[SQL:", "unexpected error"):
        assert internal not in err
    own_database.restore()
    engine = open_store(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM profile")).scalar() == 0
    engine.dispose()
