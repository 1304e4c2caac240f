"""scheduler/outage.py: what the scheduler's log says of a database it cannot reach.

The failures are real: connections refused by a port nothing listens on (PostgreSQL's
driver), and a statement that fails on a working SQLite workspace (not an outage). The
whole service through a real outage is tests/e2e/test_scheduler_outage.py.
"""

from __future__ import annotations

import logging
import socket

import pytest
import sqlalchemy as sa

from scheduler.outage import Outage, log_failure

log = logging.getLogger("scheduler.jobs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refused() -> sa.Engine:
    """An engine whose every connection is refused (nothing listens on the port)."""
    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    yield engine
    engine.dispose()


def fail(engine: sa.Engine, outage: Outage, message: str, *args, each: bool = False) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT no_such_column FROM no_such_table"))
    except Exception:
        log_failure(outage, log, message, *args, each=each)


def lines(caplog, level: int = logging.DEBUG) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= level]


def test_an_outage_is_said_once_then_when_it_ends(refused, caplog):
    caplog.set_level(logging.DEBUG)
    outage = Outage(refused)
    fail(refused, outage, "reconcile failed; retrying on its next tick")
    for _ in range(5):
        fail(refused, outage, "build dispatcher failed; retrying on its next tick")
    said = lines(caplog, logging.INFO)
    assert len(said) == 1, said
    port = refused.url.port
    assert said[0].startswith(
        f"WARNING database unreachable: cannot connect to the PostgreSQL server at "
        f"127.0.0.1:{port}: "
    )
    assert said[0].endswith("; retrying (met by: reconcile failed)")
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    assert outage.ongoing

    caplog.clear()
    outage.reached()
    said = lines(caplog)
    assert len(said) == 1 and said[0].startswith("WARNING database answers again after ")
    assert not outage.ongoing
    caplog.clear()
    outage.reached()  # no outage: nothing to say
    assert lines(caplog) == []


def test_a_failure_of_one_build_or_mailing_is_on_record_each_time(refused, caplog):
    caplog.set_level(logging.INFO)
    outage = Outage(refused)
    for build in (5, 6):
        fail(refused, outage, "build #%s raised; it stays running until requeued", build, each=True)
    said = lines(caplog)
    assert said[0].startswith("WARNING database unreachable: cannot connect")
    assert said[1:] == [
        "WARNING build #5 raised; it stays running until requeued: the database is unreachable",
        "WARNING build #6 raised; it stays running until requeued: the database is unreachable",
    ]


def test_other_errors_keep_their_traceback(sqlite_engine, caplog):
    caplog.set_level(logging.INFO)
    outage = Outage(sqlite_engine)
    fail(sqlite_engine, outage, "reconcile failed; retrying on its next tick")
    fail(sqlite_engine, outage, "reconcile failed; retrying on its next tick")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info for r in errors)
    assert errors[0].getMessage() == "reconcile failed; retrying on its next tick"
    assert not outage.ongoing


def test_a_periodic_job_still_running_at_its_next_tick_is_not_a_warning(caplog):
    """A real APScheduler, two jobs that outlast their 0.05 s interval. For the term's own
    periodic jobs (an events drain, a reconcile) that is normal work: the journal got
    "skipped: maximum number of running instances" twice a second while an import
    drained. A mailing's skipped run is still told."""
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler
    from e2e.scheduler_world import poll

    import scheduler.service  # noqa: F401  (installs the filter)

    release = threading.Event()
    aps = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True})
    for job_id in ("events", "mailing:1"):
        aps.add_job(release.wait, "interval", seconds=0.05, args=(30,), id=job_id)
    caplog.set_level(logging.WARNING, logger="apscheduler.scheduler")
    aps.start()
    try:

        def skipped(job_id: str) -> int:
            return sum(
                "skipped: maximum number of running instances" in r.getMessage()
                and r.args[0].id == job_id
                for r in caplog.records
                if r.name == "apscheduler.scheduler" and r.args
            )

        poll(lambda: skipped("mailing:1") >= 3, timeout=30, what="the mailing's skips told")
        assert skipped("events") == 0
    finally:
        release.set()
        aps.shutdown(wait=True)
