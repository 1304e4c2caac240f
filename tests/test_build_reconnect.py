"""PostgreSQL: a build whose connection is lost mid-chunk (a server restart, a failover)
tries the chunk again on a new connection and ends exactly as a build that never lost it.
The loss is real: the server terminates the build's backend (`pg_terminate_backend`)
while it waits, inside a chunk, for a segment lock this test holds.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, twin_campaigns
from sqlalchemy.engine import make_url

from store import builds
from store.db import create_workspace, make_engine

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("no_user_config")]


def ends_as_a_build_that_never_met_it(cli: Cli) -> None:
    """Dropped (the build that met the loss) has exactly the groups and strata of Clean (its
    twin, built without one), and its build is done without an error."""
    cli.ok("campaign", "activate", "Clean", "--wait")
    dropped = cli.ok("campaign", "show", "Dropped", "--json").json
    clean = cli.ok("campaign", "show", "Clean", "--json").json
    assert dropped["audience"] == clean["audience"] and dropped["strata"] == clean["strata"]
    assert dropped["audience"]["members"] == 1000
    shown = cli.ok("builds", "--campaign", "Dropped", "--json").json[0]
    assert (shown["status"], shown["error"]) == ("done", None)


def test_a_build_whose_connection_is_lost_mid_chunk_resumes_on_a_new_one(
    postgres_url, capsys, tmp_path
):
    cli = Cli(postgres_url, capsys, tmp_path)
    twin_campaigns(cli, "Dropped", "Clean", seed=5, weekly=False)
    cli.ok("campaign", "activate", "Dropped")

    # The build's own connections carry a name this test alone uses.
    name = f"cc_build_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).update_query_dict({"application_name": name})
    engine = make_engine(url.render_as_string(hide_password=False))
    admin = make_engine(postgres_url)
    blocker = admin.connect()
    terminated: list[int] = []

    def terminate_the_build_while_it_waits() -> None:
        deadline = time.monotonic() + 60
        with admin.connect() as conn:
            while not terminated and time.monotonic() < deadline:
                pids = conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE application_name = :name AND wait_event_type = 'Lock'"
                    ),
                    {"name": name},
                ).scalars()
                for pid in pids:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    terminated.append(pid)
                conn.rollback()
                time.sleep(0.02)
        blocker.rollback()  # the segment lock goes: the chunk tried again gets it

    killer = threading.Thread(target=terminate_the_build_while_it_waits, daemon=True)

    def hold_the_segment_after_the_first_chunk(_build: int, processed: int, _total: int) -> None:
        if processed and not killer.is_alive() and not terminated:
            blocker.execute(sa.text("SELECT id FROM segment FOR UPDATE"))  # as a change would
            killer.start()

    try:
        build_id = builds.claim_next_build(engine, "w")
        outcome = builds.run_build(
            engine,
            build_id,
            worker="w",
            chunk_size=300,
            on_progress=hold_the_segment_after_the_first_chunk,
        )
        killer.join(timeout=60)
    finally:
        blocker.close()
        admin.dispose()
        engine.dispose()
    assert len(terminated) == 1, "the build's backend was terminated once, mid-chunk"
    assert outcome == "done"
    ends_as_a_build_that_never_met_it(cli)


def test_a_build_whose_server_refuses_connections_for_a_while_waits_for_it(
    own_database, capsys, tmp_path
):
    """A real outage between two chunks (tests/own_database.py): the build's connection is
    ended and new ones are refused, as while a server restarts, then accepted again. The
    build tries again (RECONNECT_WAITS) and ends as a build that never met it."""
    create_workspace(own_database.url).dispose()
    cli = Cli(own_database.url, capsys, tmp_path)
    twin_campaigns(cli, "Dropped", "Clean", seed=5, weekly=False)
    cli.ok("campaign", "activate", "Dropped")
    engine = make_engine(own_database.url)
    outage: list[threading.Thread] = []

    def restore_later() -> None:
        time.sleep(1.0)  # how long the server refuses: the build's first tries meet it
        own_database.restore()

    def cut_after_the_first_chunk(_build: int, processed: int, _total: int) -> None:
        if processed and not outage:
            own_database.cut()
            outage.append(threading.Thread(target=restore_later, daemon=True))
            outage[0].start()

    try:
        build_id = builds.claim_next_build(engine, "w")
        outcome = builds.run_build(
            engine, build_id, worker="w", chunk_size=300, on_progress=cut_after_the_first_chunk
        )
        outage[0].join(timeout=60)
    finally:
        engine.dispose()
    assert outcome == "done"
    ends_as_a_build_that_never_met_it(cli)


def test_a_build_whose_server_stays_away_is_left_running_and_resumes_exactly(
    own_database, capsys, tmp_path, monkeypatch
):
    """An outage longer than RECONNECT_WAITS never fails the build: run_build gives up with
    the connection's error (what the CLI and the scheduler report) and the build stays
    running with its checkpoint. Once the server answers, crash recovery requeues it and it
    resumes to exactly the groups of a build that never met the outage."""
    monkeypatch.setattr(builds, "RECONNECT_WAITS", (0.05, 0.1))
    create_workspace(own_database.url).dispose()
    cli = Cli(own_database.url, capsys, tmp_path)
    twin_campaigns(cli, "Dropped", "Clean", seed=5, weekly=False)
    cli.ok("campaign", "activate", "Dropped")
    engine = make_engine(own_database.url)

    def cut_after_the_first_chunk(_build: int, processed: int, _total: int) -> None:
        if processed == 300:
            own_database.cut()  # and never restored while the build runs

    try:
        build_id = builds.claim_next_build(engine, "w")
        with pytest.raises(sa.exc.OperationalError):
            builds.run_build(
                engine, build_id, worker="w", chunk_size=300, on_progress=cut_after_the_first_chunk
            )
        own_database.restore()
        shown = cli.ok("builds", "--campaign", "Dropped", "--json").json[0]
        assert (shown["status"], shown["error"]) == ("running", None)
        assert builds.requeue_abandoned(engine, timedelta(0), build_ids=[build_id]) == [build_id]
        assert builds.claim_next_build(engine, "w2") == build_id
        assert builds.run_build(engine, build_id, worker="w2", chunk_size=300) == "done"
    finally:
        engine.dispose()
    ends_as_a_build_that_never_met_it(cli)
