"""A full disk, for tests: each backend's real error. SQLite's SQLITE_FULL (the file capped
at its size with `max_page_count`, which SQLite reports exactly as a full disk),
PostgreSQL's disk_full (SQLSTATE 53100, raised by the server while it writes rows)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import sqlalchemy as sa

from store import builds
from store.db import make_engine
from store.locations import is_sqlite

FULL_TABLES = ("profile", "segment_member", "campaign_member")


def _cap_sqlite(dbapi_connection, _record) -> None:  # noqa: ANN001
    if isinstance(dbapi_connection, sqlite3.Connection):
        size = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {size}")


@contextmanager
def disk_full(db_url: str) -> Iterator[None]:
    """Until the block ends, writing more rows fails as on a full disk. SQLite: no
    connection opened meanwhile may grow the file (one already open is not capped: dispose
    of its engine first). PostgreSQL: the server raises disk_full for every row written to
    FULL_TABLES."""
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
    """The start of the line a full disk gives on this backend."""
    if db_url.startswith("sqlite"):
        return f"the disk is full: SQLite could not write {db_url.removeprefix('sqlite:///')}"
    return "the PostgreSQL server at 127.0.0.1:5432 is out of disk space (could not extend"


def run_until_the_disk_fills(db_url: str, build_id: int, chunk_size: int = 300) -> str:
    """Run the build; the disk fills once its first chunk of members is committed. Returns
    its outcome (store.builds.run_build)."""
    engine = make_engine(db_url)
    filled: list[None] = []
    try:
        with ExitStack() as full:

            def fill_the_disk_after_a_chunk(_build: int, processed: int, _total: int) -> None:
                if processed and not filled:
                    filled.append(full.enter_context(disk_full(db_url)))
                    engine.dispose()  # the next chunk opens a connection on the full disk

            return builds.run_build(
                engine,
                build_id,
                worker="w",
                chunk_size=chunk_size,
                on_progress=fill_the_disk_after_a_chunk,
            )
    finally:
        engine.dispose()
