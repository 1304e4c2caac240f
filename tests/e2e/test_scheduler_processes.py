"""Real scheduler processes (`python -m console --db URL scheduler`) on a real SQLite file
(the lease takeover also on PostgreSQL).

* lease takeover: a standby process takes over when the holder is SIGKILLed, and acts
  (its broadcast reaches the test group only); SIGTERM shuts down cleanly and releases;
* SIGTERM in the middle of a build: exit 0, the build back in the queue with its
  checkpoint, the lease released;
* crash recovery: a process SIGKILLed in the middle of an LCG build is replaced, the build
  resumes from its checkpoint and ends exactly as an uninterrupted build of the same
  workspace (members, groups, events, counters), and the mailings it paused resume.

Short TTLs and intervals through CC_SCHEDULER_* variables; every wait is a poll.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from e2e.scheduler_world import (
    ADMIN,
    SchedulerProcess,
    build,
    builds_of,
    delivered_ids,
    mailing,
    make_world,
    poll,
)
from store import builds, campaigns, lease, mailings, profiles, segments
from store.db import create_workspace, transaction
from store.models import AuditEntry, Campaign, CampaignMember, CampaignStratum, utcnow

pytestmark = pytest.mark.e2e

FAST = {"lease_ttl": 1.5, "stale_after": 2.0, "dispatch_interval": 0.2}


@pytest.fixture
def processes():
    started: list[SchedulerProcess] = []
    yield started
    for process in started:
        process.stop()


def spawn(processes, url, tmp_path, name, **settings) -> SchedulerProcess:
    process = SchedulerProcess(url, tmp_path / f"{name}.log", **{**FAST, **settings})
    processes.append(process)
    return process


def holder_pid(engine) -> int | None:
    with Session(engine) as session:
        live = lease.live_lease(session)
        return live.pid if live else None


def workspace(url: str, n: int = 300, activate_inline: bool = True):
    """`shop`, campaign Spring (LCG 10 % by region, fixed seed), a weekly mailing."""
    engine = create_workspace(url)  # what `init` runs (issue 15.7)
    make_world(engine, n=n)
    with transaction(engine) as session:
        spring = campaigns.create_campaign(
            session,
            ADMIN,
            "Spring",
            profiles.get_database(session, "shop"),
            segments.get_segment(session, "everyone"),
            lcg_percent="10",
            lcg_strata=["region"],
            seed=777,
        )
        mailings.create_mailing(session, ADMIN, "weekly", spring, "regular", cron="0 10 * * 1")
    with transaction(engine) as session:
        build_id = campaigns.activate(session, ADMIN, campaigns.get_campaign(session, "Spring")).id
    if activate_inline:
        builds.run_pending(engine, worker="setup")
    return engine, build_id


def test_a_standby_process_takes_over_when_the_holder_is_killed(db_url, tmp_path, processes):
    """Lease failover between two real processes, on SQLite and on PostgreSQL (issue 7)."""
    url = db_url
    engine, _ = workspace(url)
    first = spawn(processes, url, tmp_path, "first")
    poll(lambda: holder_pid(engine) == first.pid, timeout=20, what="first holds the lease")
    second = spawn(processes, url, tmp_path, "second")
    poll(lambda: "standby" in second.log(), timeout=20, what="second waits as standby")
    assert holder_pid(engine) == first.pid

    first.kill()
    poll(lambda: holder_pid(engine) == second.pid, timeout=20, what="takeover")

    # The new holder acts: a broadcast reaches the test group, never a control member.
    with transaction(engine) as session:
        mailings.create_mailing(
            session,
            ADMIN,
            "launch",
            campaigns.get_campaign(session, "Spring"),
            "broadcast",
            send_at=utcnow() + timedelta(milliseconds=500),
        )
    poll(lambda: mailing(engine, "launch").status == "sent", timeout=20, what="broadcast sent")
    with Session(engine) as session:
        spring = campaigns.get_campaign(session, "Spring")
        groups = dict(
            session.execute(
                sa.select(CampaignMember.profile_id, CampaignMember.group).where(
                    CampaignMember.campaign_id == spring.id, CampaignMember.left_at.is_(None)
                )
            ).all()
        )
    delivered = delivered_ids(engine, "launch")
    assert delivered == sorted(pid for pid, group in groups.items() if group == "test")
    assert "control" in groups.values() and all(groups[pid] == "test" for pid in delivered)

    assert second.terminate() == 0  # SIGTERM: clean shutdown, lease released
    assert holder_pid(engine) is None
    assert "shutting down" in second.log()
    engine.dispose()


def _snapshot(engine) -> dict:
    """Everything a build decides, keyed by external ids (database ids may differ)."""
    with Session(engine) as session:
        spring = session.scalar(sa.select(Campaign).where(Campaign.name == "Spring"))
        members = session.execute(
            sa.text(
                """SELECT p.external_id, m."group", m.joined_group, m.source, m.stratum_key,
                          m.cohort, m.left_at IS NULL
                   FROM campaign_member m JOIN profile p ON p.id = m.profile_id
                   WHERE m.campaign_id = :c ORDER BY p.external_id, m.id"""
            ),
            {"c": spring.id},
        ).all()
        events = session.execute(
            sa.text(
                """SELECT p.external_id, e.kind, e."group", e.campaign_id, e.segment_id
                   FROM profile_event e JOIN profile p ON p.id = e.profile_id"""
            )
        ).all()
        strata = session.execute(
            sa.select(
                CampaignStratum.stratum_key,
                CampaignStratum.members,
                CampaignStratum.cohort,
                CampaignStratum.control,
                CampaignStratum.quota,
            )
            .where(CampaignStratum.campaign_id == spring.id)
            .order_by(CampaignStratum.stratum_key)
        ).all()
        return {
            "members": [tuple(row) for row in members],
            "events": Counter(tuple(row) for row in events),
            "strata": [tuple(row) for row in strata],
            "counters": (
                spring.members,
                spring.test_count,
                spring.control_count,
                spring.cohort_size,
                spring.warnings,
            ),
        }


def test_sigkill_mid_build_then_resume_equals_an_uninterrupted_build(tmp_path, processes):
    reference, _ = workspace(f"sqlite:///{tmp_path / 'reference.db'}", n=400)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    engine, build_id = workspace(url, n=400, activate_inline=False)

    slow = {"chunk_size": 20, "chunk_pause": 0.05}
    doomed = spawn(processes, url, tmp_path, "doomed", **slow)
    poll(
        lambda: 0 < build(engine, build_id).processed < build(engine, build_id).total,
        timeout=20,
        interval=0.01,
        what="build under way",
    )
    assert mailing(engine, "weekly").paused_by_build_id == build_id  # R5 while it runs
    doomed.kill()
    killed = build(engine, build_id)
    assert killed.status == "running" and killed.processed < killed.total  # abandoned mid-way

    successor = spawn(processes, url, tmp_path, "successor", **slow)
    poll(lambda: build(engine, build_id).status == "done", timeout=30, what="build resumed")
    # Issue 15.11: taking the lease, the successor requeued the dead holder's build at once.
    with Session(engine) as session:
        takeovers = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "scheduler.lease_acquired")
        ).all()
    assert any(build_id in (e.details.get("requeued_builds") or []) for e in takeovers)
    assert [b.status for b in builds_of(engine, "Spring")] == ["done"]
    assert _snapshot(engine) == _snapshot(reference)
    # The mailing the killed build paused is resumed once the build ends.
    poll(lambda: mailing(engine, "weekly").paused_by_build_id is None, what="mailing resumed")
    poll(lambda: mailing(engine, "weekly").next_run_at is not None, what="weekly rescheduled")
    assert successor.terminate() == 0
    engine.dispose()
    reference.dispose()


def test_sigterm_mid_build_stops_cleanly_and_hands_the_build_back(tmp_path, processes):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine, build_id = workspace(url, n=300, activate_inline=False)
    daemon = spawn(processes, url, tmp_path, "daemon", chunk_size=10, chunk_pause=0.1)
    poll(lambda: build(engine, build_id).processed > 0, timeout=20, what="build under way")
    assert daemon.terminate() == 0
    stopped = build(engine, build_id)
    assert stopped.status == "queued" and stopped.checkpoint  # resumes from here
    assert mailing(engine, "weekly").paused_by_build_id == build_id  # until the build ends
    assert holder_pid(engine) is None  # released: a standby could take over at once
    log = daemon.log()
    assert "received SIGTERM" in log and "build #1 interrupted" in log
    engine.dispose()


def test_sigkill_mid_drain_then_takeover_sends_every_event_exactly_once(tmp_path, processes):
    """R11b, at-least-once input, exactly-once effect: a scheduler killed while it drains
    the event inbox is replaced; every event ends with exactly one outcome per mailing."""
    import io

    from store import events
    from store.models import Delivery, Suppression, TriggerEvent

    url = f"sqlite:///{tmp_path / 'events.db'}"
    engine, _ = workspace(url)
    n = 60_000
    with transaction(engine) as session:
        spring = campaigns.get_campaign(session, "Spring")
        mailings.create_mailing(session, ADMIN, "hello", spring, "trigger", event="purchase")
        csv = "external_id,event\n" + "".join(f"P{1 + i % 300:05d},purchase\n" for i in range(n))
        database = profiles.get_database(session, "shop")
        events.import_events(session, ADMIN, database, io.BytesIO(csv.encode()))

    def processed() -> int:
        with Session(engine) as session:
            return session.scalar(
                sa.select(sa.func.count()).where(TriggerEvent.processed_at.is_not(None))
            )

    first = spawn(processes, url, tmp_path, "first")
    poll(lambda: processed() > 0, timeout=30, what="the first scheduler drains")
    first.kill()
    assert processed() < n  # killed mid-drain
    second = spawn(processes, url, tmp_path, "second")
    poll(lambda: processed() == n, timeout=120, what="the second scheduler drains the rest")
    with Session(engine) as session:
        outcomes = (
            session.execute(
                sa.select(Delivery.event_id).where(Delivery.event_id.is_not(None))
            ).all()
            + session.execute(sa.select(Suppression.event_id)).all()
        )
    assert len(outcomes) == n and len(set(outcomes)) == n  # one per event, none twice
    assert second.terminate() == 0
    engine.dispose()
