"""Issue 10 item 4: `--wait` never acts as a second scheduler. It waits for the scheduler
that holds the lease, or takes the lease itself (store.lease, the service's code), runs
only the builds of its own command, and releases it. Both backends (`db_url`)."""

from __future__ import annotations

import io
import threading

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, r10_workspace
from sqlmodel import Session
from test_builds import ACTOR

from console.cli.wait import wait_for_builds
from store import builds, campaigns, lease
from store.db import open_store, transaction
from store.models import AudienceBuild, AuditEntry


@pytest.fixture
def two_drafts(db_url, capsys, tmp_path):
    cli = Cli(db_url, capsys, tmp_path)
    r10_workspace(cli)
    for name in ("mine", "theirs"):
        cli.ok(
            "campaign", "create", name, "--database", "main", "--segment", "everyone", "--lcg", "15"
        )
    engine = open_store(db_url)
    yield cli, engine
    engine.dispose()


def build_of(engine, campaign: str) -> AudienceBuild:
    with Session(engine) as s:
        campaign_id = campaigns.get_campaign(s, campaign).id
        return s.scalar(sa.select(AudienceBuild).where(AudienceBuild.campaign_id == campaign_id))


def test_wait_without_a_scheduler_runs_only_its_own_builds_and_releases_the_lease(two_drafts):
    cli, engine = two_drafts
    with transaction(engine) as s:  # someone else's build, queued before ours
        campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "theirs"))
    result = cli("campaign", "activate", "mine", "--wait", "--json")
    assert result.code == 0, result.err
    assert result.json["audience"]["control"] == 15
    mine, theirs = build_of(engine, "mine"), build_of(engine, "theirs")
    assert mine.status == "done" and mine.worker.startswith("cli:")
    assert theirs.status == "queued"  # not this command's: left to the scheduler
    with Session(engine) as s:
        assert lease.live_lease(s) is None  # released at once: a scheduler may start now
        holders = s.scalars(
            sa.select(AuditEntry.target_name).where(AuditEntry.action == "scheduler.lease_acquired")
        ).all()
    assert len(holders) == 1 and ":cli-wait-" in holders[0]  # the service's lease code


def test_wait_with_a_live_scheduler_only_waits_for_it(two_drafts):
    cli, engine = two_drafts
    scheduler = lease.make_holder("scheduler-under-test")
    assert lease.try_acquire(engine, scheduler, ttl=300)  # a live scheduler holds the lease
    with transaction(engine) as s:
        build_id = campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "mine")).id

    err = io.StringIO()
    outcome: list[int] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(wait_for_builds(engine, [build_id], err))
    )
    waiter.start()
    try:
        # The waiter announces that it waits; meanwhile it must not touch the build.
        announced = threading.Event()
        for _ in range(2400):
            if "a scheduler holds the lease" in err.getvalue():
                announced.set()
                break
            waiter.join(0.05)
        assert announced.is_set(), err.getvalue()
        assert build_of(engine, "mine").status == "queued"
        # The scheduler runs it; the waiter sees it end.
        assert builds.claim_next_build(engine, "scheduler-worker") == build_id
        builds.run_build(engine, build_id, worker="scheduler-worker")
    finally:
        waiter.join(120)
    assert outcome == [0]
    assert build_of(engine, "mine").worker == "scheduler-worker"
    assert f"build #{build_id} (activation): done" in err.getvalue()
    with Session(engine) as s:
        assert lease.live_lease(s).holder == scheduler  # never taken from the scheduler
