"""A full disk: a command says where the disk is full and that nothing of the change was
kept (no driver text, SQL or links: issue 15.10), and a build that meets it fails with
that one line. Both backends, with each one's real error (tests/disk_full.py). And an
SQLite workspace kept locked by another writer past the busy timeout: the command says
the workspace is busy, and why.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, people, twin_campaigns
from disk_full import disk_full, expected_reason, run_until_the_disk_fills
from table_state import table_checksums

from store import builds, db
from store.db import make_engine, transaction
from store.models import AudienceBuild, AuditEntry, CampaignMember

pytestmark = pytest.mark.usefixtures("no_user_config")


@pytest.fixture
def workspace(both_cli: Cli) -> Cli:
    cli = both_cli
    cli.ok("database", "create", "main", "--fields", "region:text,tier:int")
    cli.ok("import", "profiles", "--database", "main", cli.file("p.csv", people(50)))
    return cli


def test_a_command_on_a_full_disk_says_where_and_changes_nothing(workspace):
    cli = workspace
    engine = make_engine(cli.db_url)
    many = cli.file("more.csv", people(5000, start=50))
    before = table_checksums(engine, skip=(AuditEntry.__tablename__,))
    try:
        with disk_full(cli.db_url):
            result = cli("import", "profiles", "--database", "main", many)
            assert table_checksums(engine, skip=(AuditEntry.__tablename__,)) == before
    finally:
        engine.dispose()
    assert result.code == 1, result.err
    assert result.err.startswith("error: " + expected_reason(cli.db_url)), result.err
    assert "nothing of it was kept" in result.err and "Free space" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    for internal in ("OperationalError", "[SQL:", "sqlalche.me", "Traceback"):
        assert internal not in result.err, result.err
    # Room again: the same command succeeds.
    cli.ok("import", "profiles", "--database", "main", many)
    assert cli.ok("database", "list", "--json").json[0]["profiles"] == 5050


def test_a_build_that_meets_a_full_disk_fails_with_that_one_line(workspace):
    """The disk fills after the activation's first chunk: the build fails, its error is
    the one line a person reads in `builds` and the console, and what it committed stays
    consistent with the counters."""
    cli = workspace
    cli.ok("import", "profiles", "--database", "main", cli.file("more.csv", people(950, 50)))
    cli.ok("segment", "create", "everyone", "--database", "main", "--rule", "tier >= 0")
    cli.ok("segment", "refresh", "everyone")
    cli.ok("campaign", "create", "C", "--database", "main", "--segment", "everyone", "--lcg", "5")
    cli.ok("campaign", "activate", "C")
    engine = make_engine(cli.db_url)
    try:
        build_id = builds.claim_next_build(engine, "w")
        assert run_until_the_disk_fills(cli.db_url, build_id) == "failed"
        with transaction(engine) as session:
            build = session.get(AudienceBuild, build_id)
            members = session.scalar(
                sa.select(sa.func.count()).where(CampaignMember.campaign_id == build.campaign_id)
            )
    finally:
        engine.dispose()
    assert build.status == "failed"
    assert build.error.startswith(expected_reason(cli.db_url)), build.error
    assert "\n" not in build.error and "sqlalche.me" not in build.error
    assert 0 < build.processed < 1000 and members == build.processed
    shown = cli.ok("builds", "--json").json
    assert shown[0]["error"] == build.error
    shown = cli.ok("campaign", "show", "C", "--json").json
    assert shown["audience"]["members"] == members  # the counters match the committed rows


def test_a_write_kept_waiting_past_the_busy_timeout_says_the_workspace_is_busy(
    sqlite_url, capsys, tmp_path, monkeypatch
):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # 30 s in use: not in a test
    cli = Cli(sqlite_url, capsys, tmp_path)
    cli.ok("database", "create", "main", "--fields", "region:text")
    path = sqlite_url.removeprefix("sqlite:///")
    other_writer = sqlite3.connect(path, isolation_level=None)  # e.g. a long import
    other_writer.execute("BEGIN IMMEDIATE")
    try:
        result = cli("segment", "create", "s", "--database", "main")
    finally:
        other_writer.execute("ROLLBACK")
        other_writer.close()
    assert result.code == 1, result.err
    assert result.err.startswith(
        f"error: the workspace {path} is busy: another process kept writing it for more than 0.3 s"
    ), result.err
    assert "nothing of it was kept" in result.err and len(result.err.splitlines()) == 1
    assert "OperationalError" not in result.err and "sqlalche.me" not in result.err
    cli.ok("segment", "create", "s", "--database", "main")  # once the other one is done


def test_a_build_kept_waiting_past_the_busy_timeout_tries_again_instead_of_failing(
    sqlite_url, capsys, tmp_path, monkeypatch
):
    """A large import holds the SQLite file: the build's chunk gives up after the busy
    timeout and is tried again (its mailings stay paused, R5), until the import ends; the
    build then ends as one never kept waiting."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    waits: list[str] = []
    real_busy_problem = db.busy_problem

    def observed(engine, original):  # noqa: ANN001
        problem = real_busy_problem(engine, original)
        if problem is not None:
            waits.append(str(problem))
        return problem

    monkeypatch.setattr(db, "busy_problem", observed)
    cli = Cli(sqlite_url, capsys, tmp_path)
    twin_campaigns(cli, "Waiting", "Clean", seed=3, weekly=True)
    cli.ok("campaign", "activate", "Waiting")
    path = sqlite_url.removeprefix("sqlite:///")
    other_writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    paused_meanwhile: list[int | None] = []

    def end_the_import_after_two_waits() -> None:
        deadline = time.monotonic() + 60
        while len(waits) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        paused_meanwhile.append(
            other_writer.execute("SELECT paused_by_build_id FROM mailing").fetchone()[0]
        )
        other_writer.execute("ROLLBACK")

    engine = make_engine(sqlite_url)
    releaser = threading.Thread(target=end_the_import_after_two_waits, daemon=True)
    try:
        build_id = builds.claim_next_build(engine, "w")

        def lock_after_the_first_chunk(_build: int, processed: int, _total: int) -> None:
            if processed and not locked:
                locked.append(processed)
                other_writer.execute("BEGIN IMMEDIATE")  # e.g. a long import begins
                releaser.start()

        locked: list[int] = []

        outcome = builds.run_build(
            engine, build_id, worker="w", chunk_size=300, on_progress=lock_after_the_first_chunk
        )
        releaser.join(timeout=60)
        with transaction(engine) as session:
            build = session.get(AudienceBuild, build_id)
            ended = (outcome, build.status, build.error)
    finally:
        other_writer.close()
        engine.dispose()
    assert len(waits) >= 2 and paused_meanwhile == [build_id]  # R5: paused while it waited
    assert ended == ("done", "done", None)
    cli.ok("campaign", "activate", "Clean", "--wait")
    waiting = cli.ok("campaign", "show", "Waiting", "--json").json
    clean = cli.ok("campaign", "show", "Clean", "--json").json
    assert waiting["audience"] == clean["audience"] and waiting["strata"] == clean["strata"]
    assert waiting["audience"]["members"] == 1000 and not waiting["mailings"][0]["paused"]
