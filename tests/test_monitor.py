"""The scheduler read model (store/monitor.py): health, builds with progress, rate and ETA.

Real SQLite file and real PostgreSQL schema (`engine` fixture). Builds are queued and run
through store.builds; times the figures depend on are set explicitly.
"""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from e2e.scheduler_world import ADMIN, make_world
from sqlmodel import Session

from store import builds, campaigns, lease, monitor, profiles, segments
from store.db import transaction
from store.models import AudienceBuild, utcnow


def _campaign(engine, name="Spring"):
    with transaction(engine) as session:
        campaigns.create_campaign(
            session,
            ADMIN,
            name,
            profiles.get_database(session, "shop"),
            segments.get_segment(session, "everyone"),
            lcg_percent="10",
            seed=99,
        )
    with transaction(engine) as session:
        return campaigns.activate(session, ADMIN, campaigns.get_campaign(session, name)).id


def test_health_says_not_running_when_no_scheduler_ever_ran(engine):
    with Session(engine) as session:
        health = monitor.scheduler_health(session)
    assert not health.alive and health.holder is None and health.heartbeat_age_seconds is None
    assert health.describe() == "NOT RUNNING"


def test_health_shows_holder_host_pid_and_heartbeat_age(engine):
    assert lease.try_acquire(engine, "hostA:4242:nonce", ttl=30)
    with Session(engine) as session:
        beat = lease.current_lease(session).heartbeat_at
        health = monitor.scheduler_health(session, now=beat + timedelta(seconds=3))
    assert health.alive and (health.host, health.pid) == ("hostA", 4242)
    assert health.heartbeat_age_seconds == 3.0
    assert health.describe() == "alive · hostA:4242 · heard 3s ago"


def test_health_after_release_says_when_it_was_last_heard_from(engine):
    assert lease.try_acquire(engine, "hostA:4242:nonce", ttl=30)
    lease.release(engine, "hostA:4242:nonce")
    with Session(engine) as session:
        beat = lease.current_lease(session).heartbeat_at
        health = monitor.scheduler_health(session, now=beat + timedelta(minutes=5))
    assert not health.alive
    assert health.describe() == "NOT RUNNING · last hostA:4242 5m ago"


def test_builds_show_progress_rate_and_eta(engine):
    make_world(engine, n=50)
    build_id = _campaign(engine)
    _campaign(engine, "Autumn")
    started = utcnow() - timedelta(seconds=10)
    with transaction(engine) as session:  # a running build half-way, as a runner leaves it
        session.execute(
            sa.update(AudienceBuild)
            .where(AudienceBuild.id == build_id)
            .values(status="running", started_at=started, processed=500, total=1000, worker="w")
        )
    with Session(engine) as session:
        snapshot = monitor.scheduler_monitor(session, now=started + timedelta(seconds=10))
    (running,) = snapshot.running
    assert (running.id, running.campaign, running.reason) == (build_id, "Spring", "activation")
    assert (running.processed, running.total, running.percent) == (500, 1000, 50.0)
    assert running.rate == 50.0 and running.eta_seconds == 10.0
    (queued,) = snapshot.queued
    assert queued.campaign == "Autumn" and queued.rate is None and queued.eta_seconds is None
    assert snapshot.recent == []


def test_finished_builds_are_listed_as_recent_and_the_snapshot_is_json_ready(engine):
    make_world(engine, n=50)
    _campaign(engine)
    builds.run_pending(engine, worker="test")
    with Session(engine) as session:
        snapshot = monitor.scheduler_monitor(session)
    assert snapshot.running == [] and snapshot.queued == []
    (done,) = snapshot.recent
    assert done.status == "done" and done.processed == done.total
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert data["recent"][0]["campaign"] == "Spring" and data["recent"][0]["percent"] == 100.0
    assert data["health"]["alive"] is False
