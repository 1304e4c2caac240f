"""A full disk: a command says where the disk is full and that nothing of the change was
kept (no driver text, SQL or links: issue 15.10), and a build that meets it fails with
that one line. Both backends, with each one's real error: SQLite's SQLITE_FULL (the file
capped at its size with `max_page_count`, which SQLite reports exactly as a full disk),
PostgreSQL's disk_full (SQLSTATE 53100, raised by the server while it writes rows).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import sqlalchemy as sa
from cli_helpers import Cli
from table_state import table_checksums

from store import builds
from store.db import make_engine, transaction
from store.locations import is_sqlite
from store.models import AudienceBuild, AuditEntry, CampaignMember

pytestmark = pytest.mark.usefixtures("no_user_config")

HEADER = "external_id,region,tier\n"
FULL_TABLES = ("profile", "segment_member", "campaign_member")


def people(count: int, start: int = 0) -> str:
    return HEADER + "".join(f"P{i:06d},R{i % 3},{i % 2}\n" for i in range(start, start + count))


def _cap_sqlite(dbapi_connection, _record) -> None:  # noqa: ANN001
    if isinstance(dbapi_connection, sqlite3.Connection):
        size = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {size}")


@contextmanager
def disk_full(db_url: str) -> Iterator[None]:
    """Until the block ends, writing more rows fails as on a full disk. SQLite: every
    connection opened meanwhile (the pool's open ones are closed first) may not grow the
    file. PostgreSQL: the server raises disk_full for every row written to FULL_TABLES."""
    engine = make_engine(db_url)
    sqlite = is_sqlite(engine)
    try:
        if sqlite:
            sa.event.listen(sa.pool.Pool, "connect", _cap_sqlite)
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE FUNCTION cc_test_disk_full() RETURNS trigger AS $$ BEGIN "
                    'RAISE EXCEPTION \'could not extend file "base/1/2": No space left on '
                    "device' USING ERRCODE = 'disk_full'; END $$ LANGUAGE plpgsql"
                )
                for table in FULL_TABLES:
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER cc_test_disk_full BEFORE INSERT OR UPDATE ON {table} "
                        "FOR EACH ROW EXECUTE FUNCTION cc_test_disk_full()"
                    )
        yield
    finally:
        if sqlite:
            sa.event.remove(sa.pool.Pool, "connect", _cap_sqlite)
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP FUNCTION cc_test_disk_full() CASCADE")
        engine.dispose()


def expected_reason(db_url: str) -> str:
    if db_url.startswith("sqlite"):
        return f"the disk is full: SQLite could not write {db_url.removeprefix('sqlite:///')}"
    return "the PostgreSQL server at 127.0.0.1:5432 is out of disk space (could not extend"


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
        with ExitStack() as full:

            def fill_the_disk_after_a_chunk(_build: int, processed: int, _total: int) -> None:
                if processed and not filled:
                    filled.append(full.enter_context(disk_full(cli.db_url)))
                    engine.dispose()  # the next chunk opens a connection on the full disk

            filled: list[None] = []

            outcome = builds.run_build(
                engine,
                build_id,
                worker="w",
                chunk_size=300,
                on_progress=fill_the_disk_after_a_chunk,
            )
        with transaction(engine) as session:
            build = session.get(AudienceBuild, build_id)
            members = session.scalar(
                sa.select(sa.func.count()).where(CampaignMember.campaign_id == build.campaign_id)
            )
    finally:
        engine.dispose()
    assert outcome == "failed" and build.status == "failed"
    assert build.error.startswith(expected_reason(cli.db_url)), build.error
    assert "\n" not in build.error and "sqlalche.me" not in build.error
    assert 0 < build.processed < 1000 and members == build.processed
    shown = cli.ok("builds", "--json").json
    assert shown[0]["error"] == build.error
    shown = cli.ok("campaign", "show", "C", "--json").json
    assert shown["audience"]["members"] == members  # the counters match the committed rows
