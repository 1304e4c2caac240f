"""The scheduler service through a PostgreSQL outage: it says so once, not once per job
and tick, and takes the lease again when the database answers.

Real processes and a real outage: `campaign-console scheduler` as a child process on a
database of the test's own, which the test closes to every connection (its open ones
ended, new ones refused) and opens again (tests/own_database.py).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from e2e.scheduler_world import SchedulerProcess, make_world, poll
from store import lease
from store.db import create_workspace

pytestmark = pytest.mark.postgres


def test_an_outage_is_logged_once_and_the_scheduler_takes_the_lease_again(own_database, tmp_path):
    engine = create_workspace(own_database.url)
    make_world(engine, n=20)  # a segment and profiles: the jobs have something to read
    engine.dispose()
    process = SchedulerProcess(
        own_database.url, tmp_path / "scheduler.log", lease_ttl=1.5, dispatch_interval=0.2
    )
    try:
        poll(lambda: "holds the lease (term 1)" in process.log(), 30, what="the first term")

        own_database.cut()
        poll(lambda: "database unreachable:" in process.log(), 30, what="the outage said")
        # Hold the outage until the term has ended for want of renewals: by then every
        # job has failed on several ticks (reconcile every second, dispatch every 0.2 s).
        poll(lambda: "stops acting (term 1)" in process.log(), 30, what="the term's end")
        own_database.restore()
        poll(lambda: "holds the lease (term 2)" in process.log(), 30, what="the second term")
        assert process.proc.poll() is None  # it never stopped

        log = process.log()
        said = [line for line in log.splitlines() if "database unreachable:" in line]
        assert len(said) == 1, log
        assert "WARNING" in said[0]
        assert "cannot connect to the PostgreSQL server at 127.0.0.1:5432" in said[0]
        assert log.count("database answers again after") == 1, log
        assert "Traceback" not in log and "sqlalche.me" not in log, log
        # Not knowing is not "another scheduler holds the lease".
        assert "standby" not in log, log
    finally:
        process.stop()
    check = create_workspace(own_database.url)
    with Session(check) as session:
        assert lease.live_lease(session) is not None  # the process held it until stopped
    check.dispose()


def test_a_lease_query_with_no_answer_is_logged_and_the_scheduler_acts_again_after(
    own_database, tmp_path
):
    """A real hang: another session holds an exclusive lock on the lease table, so the
    lease thread waits in its query with no answer, as for a frozen server."""
    engine = create_workspace(own_database.url)
    make_world(engine, n=20)
    engine.dispose()
    process = SchedulerProcess(
        own_database.url, tmp_path / "scheduler.log", lease_ttl=1.5, dispatch_interval=0.2
    )
    locker = sa.create_engine(own_database.url)
    try:
        poll(lambda: "holds the lease (term 1)" in process.log(), 30, what="the first term")
        with locker.connect() as conn:
            lock = conn.begin()
            conn.execute(sa.text("LOCK TABLE scheduler_lease IN ACCESS EXCLUSIVE MODE"))
            poll(lambda: "database not answering:" in process.log(), 30, what="the hang said")
            lock.rollback()
        poll(lambda: "database answers again after" in process.log(), 30, what="its end")
        poll(lambda: "holds the lease (term 2)" in process.log(), 30, what="acting again")
        log = process.log()
        said = [line for line in log.splitlines() if "database not answering:" in line]
        assert len(said) == 1, log
        assert "the lease query has waited" in said[0] and "WARNING" in said[0]
        assert "Traceback" not in log, log
        assert process.proc.poll() is None
    finally:
        process.stop()
        locker.dispose()
