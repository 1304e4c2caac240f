"""The scheduler service in-process: real APScheduler, real SQLite file, real builds.

Reconcile (jobs follow the database), segment refresh schedules, mailing schedules with
the pause and misfire policy (R5, R6), audience expansion (R11), the build dispatcher,
and clean shutdown. Every wait is a poll on a condition with a timeout.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.triggers.cron import CronTrigger
from e2e.scheduler_world import (
    ADMIN,
    build,
    builds_of,
    delivered_ids,
    mailing,
    make_world,
    new_campaign,
    poll,
    profile_ids,
    runs_of,
    slot,
)
from sqlmodel import Session

from scheduler.mailings import cron_trigger
from scheduler.reconcile import Reconciler
from scheduler.service import SchedulerService
from store import campaigns, lease, mailings, profiles, segments
from store.db import open_store, transaction
from store.models import (
    CampaignMember,
    Mailing,
    SchedulerLease,
    Segment,
    SegmentMember,
    utcnow,
)

FAST = {"lease_ttl": 3.0, "dispatch_interval": 0.2}


@pytest.fixture
def world(sqlite_url):
    engine = open_store(sqlite_url)
    make_world(engine, n=300)
    yield sqlite_url, engine
    engine.dispose()


@pytest.fixture
def start_service(world):
    url, _ = world
    started: list[SchedulerService] = []

    def start(**settings) -> SchedulerService:
        service = SchedulerService(
            url, pool_size=settings.pop("pool_size", 2), **{**FAST, **settings}
        )
        started.append(service.start())
        return service

    yield start
    for service in started:
        service.shutdown()


def add_mailing(engine, name, kind, campaign="Spring", **kwargs):
    with transaction(engine) as session:
        if "segment" in kwargs:
            kwargs["segment"] = segments.get_segment(session, kwargs["segment"])
        mailings.create_mailing(
            session, ADMIN, name, campaigns.get_campaign(session, campaign), kind, **kwargs
        )


def set_pause(engine, name, paused):
    with transaction(engine) as session:
        mailings.set_manual_pause(session, ADMIN, mailings.get_mailing(session, name), paused)


def group_ids(engine, campaign_name, group):
    with Session(engine) as session:
        campaign = campaigns.get_campaign(session, campaign_name)
        return sorted(
            session.scalars(
                sa.select(CampaignMember.profile_id).where(
                    CampaignMember.campaign_id == campaign.id,
                    CampaignMember.left_at.is_(None),
                    CampaignMember.group == group,
                )
            )
        )


def job_of(service, name, engine):
    return service.get_job(f"mailing:{mailing(engine, name).id}")


def recalculate(engine, name="Spring", percent="20"):
    """R6: an LCG edit of an active campaign queues a recalculation that pauses mailings."""
    with transaction(engine) as session:
        return campaigns.edit_lcg(
            session, ADMIN, campaigns.get_campaign(session, name), percent=percent
        ).id


# ----------------------------------------------------------------------------- lease


def test_only_the_lease_holder_acts_and_a_standby_takes_over_on_shutdown(world, start_service):
    _, engine = world
    first = start_service()
    assert first.wait_until_acting(10)
    second = start_service()
    with Session(engine) as session:
        assert lease.live_lease(session).holder == first.holder
    assert second.state == "standby" and second.jobs() == []
    first.shutdown()
    assert second.wait_until_acting(10)
    with Session(engine) as session:
        assert lease.live_lease(session).holder == second.holder
    assert first.state == "stopped"


# ----------------------------------------------------------------------------- segments


def test_a_refresh_schedule_fires_and_applies_its_diff(world, start_service):
    _, engine = world
    score = slot(engine, "score")
    with transaction(engine) as session:
        segments.create_segment(
            session,
            ADMIN,
            "high-score",
            database=profiles.get_database(session, "shop"),
            rule="score >= 8",
            every_seconds=1,
        )

    def members():
        with Session(engine) as session:
            segment = segments.get_segment(session, "high-score")
            return sorted(
                session.scalars(
                    sa.select(SegmentMember.profile_id).where(
                        SegmentMember.segment_id == segment.id, SegmentMember.left_at.is_(None)
                    )
                )
            )

    start_service()
    poll(lambda: members() == profile_ids(engine, f"{score} >= 8"), what="first refresh")
    # The data changes: the next scheduled refresh applies the diff (entered and left).
    with transaction(engine) as session:
        session.execute(sa.text(f"UPDATE profile SET {score} = 9 WHERE {score} = 7"))
        session.execute(sa.text(f"UPDATE profile SET {score} = 0 WHERE {score} = 8"))
    expected = profile_ids(engine, f"{score} >= 8")
    poll(lambda: members() == expected, what="refresh diff applied")
    with Session(engine) as session:
        assert segments.get_segment(session, "high-score").last_refreshed_at is not None


def test_a_cron_refresh_missed_while_no_scheduler_ran_is_made_when_one_starts(world, start_service):
    """An hourly cron segment last refreshed two hours ago (no scheduler ran since): the
    refresh its expression called for is made as soon as a scheduler acts, as an interval
    segment's is. A CronTrigger alone waited for the next full hour while the segments
    screen showed the missed time as due."""
    _, engine = world
    with transaction(engine) as session:
        segments.create_segment(
            session,
            ADMIN,
            "hourly-cron",
            database=profiles.get_database(session, "shop"),
            rule="score >= 8",
            cron="0 * * * *",
        )
    two_hours_ago = utcnow() - timedelta(hours=2)
    with transaction(engine) as session:
        session.execute(
            sa.update(Segment)
            .where(Segment.name == "hourly-cron")
            .values(created_at=two_hours_ago, last_refreshed_at=two_hours_ago)
        )

    def refreshed_since() -> bool:
        with Session(engine) as session:
            last = segments.get_segment(session, "hourly-cron").last_refreshed_at
        return last is not None and last > two_hours_ago

    start_service()
    poll(refreshed_since, timeout=30, what="the missed refresh made at start")


# ----------------------------------------------------------------------------- reconcile


def test_mailing_jobs_follow_the_database_within_seconds(world, start_service):
    _, engine = world
    new_campaign(engine)
    service = start_service()
    add_mailing(engine, "weekly", "regular", cron="0 10 * * 1")
    add_mailing(engine, "welcome", "trigger", event="signup")
    job = poll(lambda: job_of(service, "weekly", engine), what="job for a new mailing")
    assert isinstance(job.trigger, CronTrigger)
    assert job_of(service, "welcome", engine) is None  # trigger mailings: no time schedule
    expected = cron_trigger("0 10 * * 1").get_next_fire_time(None, datetime.now(UTC))
    poll(lambda: mailing(engine, "weekly").next_run_at == expected, what="next_run_at stored")

    set_pause(engine, "weekly", True)  # a paused mailing is a paused job
    poll(lambda: job_of(service, "weekly", engine).next_run_time is None, what="job paused")
    poll(lambda: mailing(engine, "weekly").next_run_at is None, what="next_run_at cleared")
    set_pause(engine, "weekly", False)
    poll(lambda: job_of(service, "weekly", engine).next_run_time == expected, what="resumed")

    with transaction(engine) as session:  # R8: a completed campaign's mailings stop
        campaigns.complete(session, ADMIN, campaigns.get_campaign(session, "Spring"))
    poll(lambda: job_of(service, "weekly", engine) is None, what="job removed on completion")
    assert runs_of(engine, "weekly") == []


def test_changed_stopped_and_rescheduled_rows_reach_the_jobs(world, start_service):
    """Changes made by any process: a new cron, a moved broadcast, a stopped mailing, a
    segment's new refresh interval."""
    _, engine = world
    new_campaign(engine)
    with transaction(engine) as session:
        segments.create_segment(
            session,
            ADMIN,
            "hourly",
            database=profiles.get_database(session, "shop"),
            rule="score >= 5",
            every_seconds=3600,
        )
    add_mailing(engine, "weekly", "regular", cron="0 10 * * 1")
    add_mailing(engine, "launch", "broadcast", send_at=utcnow() + timedelta(days=3))
    service = start_service()
    poll(lambda: job_of(service, "launch", engine), what="broadcast job")
    new_time = utcnow() + timedelta(days=5)
    with transaction(engine) as session:
        mailings.reschedule(
            session, ADMIN, mailings.get_mailing(session, "weekly"), cron="0 8 * * *"
        )
        mailings.reschedule(
            session, ADMIN, mailings.get_mailing(session, "launch"), send_at=new_time
        )
    daily = cron_trigger("0 8 * * *").get_next_fire_time(None, datetime.now(UTC))
    poll(lambda: job_of(service, "weekly", engine).next_run_time == daily, what="new cron")
    poll(lambda: job_of(service, "launch", engine).next_run_time == new_time, what="moved")
    with transaction(engine) as session:
        mailings.stop_mailing(session, ADMIN, mailings.get_mailing(session, "launch"))
    poll(lambda: job_of(service, "launch", engine) is None, what="stopped mailing's job gone")
    with Session(engine) as session:
        hourly = segments.get_segment(session, "hourly")
    job_id = f"segment:{hourly.id}"
    assert poll(lambda: service.get_job(job_id), what="refresh job").trigger.interval == timedelta(
        hours=1
    )
    with transaction(engine) as session:  # another process changes the interval
        session.execute(
            sa.update(Segment)
            .where(Segment.id == hourly.id)
            .values(refresh_every_seconds=60, version=Segment.version + 1)
        )
    poll(
        lambda: service.get_job(job_id).trigger.interval == timedelta(minutes=1),
        what="new interval",
    )


def test_a_regular_mailing_resumed_skips_to_its_next_occurrence(world, start_service):
    """Misfire policy: occurrences missed while paused are not replayed."""
    _, engine = world
    new_campaign(engine)
    add_mailing(engine, "every-minute", "regular", cron="* * * * *")
    set_pause(engine, "every-minute", True)
    service = start_service()
    poll(lambda: job_of(service, "every-minute", engine), what="paused job")
    assert job_of(service, "every-minute", engine).next_run_time is None

    def next_minute(at: datetime) -> datetime:
        return at.replace(second=0, microsecond=0) + timedelta(minutes=1)

    before = datetime.now(UTC)
    set_pause(engine, "every-minute", False)
    job = poll(
        lambda: (j := job_of(service, "every-minute", engine)) and j.next_run_time and j,
        what="resumed job",
    )
    after = datetime.now(UTC)
    # The scheduler applies the resume at some instant between `before` and `after`, and a
    # minute can turn meanwhile on a loaded machine: the next run is the first occurrence
    # after that instant, never one from before the resume.
    assert next_minute(before) <= job.next_run_time <= next_minute(after)
    # Nothing from before the resume was replayed (an occurrence after it may have fired).
    assert all(run.scheduled_for >= next_minute(before) for run in runs_of(engine, "every-minute"))


def test_one_unschedulable_row_does_not_hold_up_the_other_jobs(world, start_service):
    _, engine = world
    new_campaign(engine)
    add_mailing(engine, "broken", "regular", cron="0 10 * * 1")
    with transaction(engine) as session:  # written around the store's cron validation
        session.execute(sa.update(Mailing).where(Mailing.name == "broken").values(cron="nonsense"))
    service = start_service()
    add_mailing(engine, "weekly", "regular", cron="0 10 * * 1")
    poll(lambda: job_of(service, "weekly", engine), what="the healthy mailing's job")
    assert job_of(service, "broken", engine) is None


# ----------------------------------------------------------------------------- mailings


def test_a_broadcast_fires_at_its_time_to_the_test_group_only(world, start_service):
    _, engine = world
    new_campaign(engine)
    test_ids, control_ids = (
        group_ids(engine, "Spring", "test"),
        group_ids(engine, "Spring", "control"),
    )
    assert control_ids  # the LCG holds some profiles out
    send_at = utcnow() + timedelta(seconds=1)
    add_mailing(engine, "launch", "broadcast", send_at=send_at)
    service = start_service()
    poll(lambda: mailing(engine, "launch").status == "sent", what="broadcast sent")
    assert delivered_ids(engine, "launch") == test_ids
    assert not set(delivered_ids(engine)) & set(control_ids)
    (run,) = runs_of(engine, "launch")
    assert run.scheduled_for == send_at and run.started_at >= send_at
    poll(lambda: job_of(service, "launch", engine) is None, what="one-shot job gone")


def test_a_broadcast_whose_time_passed_while_paused_fires_once_on_resume(world, start_service):
    _, engine = world
    new_campaign(engine)
    send_at = utcnow() + timedelta(milliseconds=300)
    add_mailing(engine, "launch", "broadcast", send_at=send_at)
    set_pause(engine, "launch", True)
    service = start_service()
    poll(lambda: job_of(service, "launch", engine), what="paused job")
    poll(lambda: utcnow() > send_at + timedelta(seconds=1), what="send_at long passed")
    assert (
        runs_of(engine, "launch") == [] and job_of(service, "launch", engine).next_run_time is None
    )
    set_pause(engine, "launch", False)
    poll(lambda: mailing(engine, "launch").status == "sent", what="fired on resume")
    assert len(runs_of(engine, "launch")) == 1
    assert delivered_ids(engine, "launch") == group_ids(engine, "Spring", "test")


def test_mailings_are_paused_during_an_lcg_build_and_fire_after_it_R5_R6(world, start_service):
    _, engine = world
    new_campaign(engine)
    add_mailing(engine, "weekly", "regular", cron="0 10 * * 1")
    service = start_service(build_chunk_size=15, build_chunk_pause=0.1)
    poll(lambda: job_of(service, "weekly", engine), what="weekly scheduled")
    build_id = recalculate(engine)
    poll(lambda: build(engine, build_id).status == "running", what="build running")
    assert mailing(engine, "weekly").paused_reason == f"paused by audience build #{build_id}"
    poll(lambda: job_of(service, "weekly", engine).next_run_time is None, what="job paused")
    # A broadcast due while the build runs starts paused too, and waits for the build.
    add_mailing(engine, "flash", "broadcast", send_at=utcnow())
    assert mailing(engine, "flash").paused_by_build_id == build_id
    finished = poll(lambda: build(engine, build_id).finished_at, timeout=30, what="build end")
    assert build(engine, build_id).status == "done"
    poll(lambda: mailing(engine, "flash").status == "sent", what="broadcast after the build")
    (run,) = runs_of(engine, "flash")
    assert run.started_at >= finished  # never during the build
    assert delivered_ids(engine, "flash") == group_ids(engine, "Spring", "test")
    poll(lambda: job_of(service, "weekly", engine).next_run_time is not None, what="resumed")
    assert not mailing(engine, "weekly").paused


def test_a_manual_pause_survives_a_build(world, start_service):
    _, engine = world
    new_campaign(engine)
    add_mailing(engine, "weekly", "regular", cron="0 10 * * 1")
    set_pause(engine, "weekly", True)
    service = start_service()
    build_id = recalculate(engine)
    poll(lambda: build(engine, build_id).status == "done", timeout=30, what="build done")
    poll(lambda: mailing(engine, "weekly").paused_by_build_id is None, what="build pause gone")
    weekly = mailing(engine, "weekly")
    assert weekly.manual_paused and weekly.paused_reason == "paused by alice"
    assert job_of(service, "weekly", engine).next_run_time is None


def test_audience_expansion_runs_before_the_send_R11(world, start_service):
    _, engine = world
    region = slot(engine, "region")
    with transaction(engine) as session:
        half = segments.create_segment(session, ADMIN, "first-half")
        north = segments.create_segment(session, ADMIN, "north")
        session.flush()
        segments.add_profiles_where(session, ADMIN, half, sa.text("id <= 150"))
        segments.add_profiles_where(session, ADMIN, north, sa.text(f"{region} = 'North'"))
    new_campaign(engine, segment="first-half")
    north_ids = set(profile_ids(engine, f"{region} = 'North'"))
    outsiders = north_ids - set(profile_ids(engine, "id <= 150"))
    assert outsiders
    add_mailing(
        engine, "north-drop", "broadcast", send_at=utcnow(), segment="north", expand_audience=True
    )
    start_service()
    poll(lambda: mailing(engine, "north-drop").status == "sent", timeout=30, what="sent")
    (expansion,) = [b for b in builds_of(engine, "Spring") if b.reason == "expansion"]
    assert expansion.status == "done" and expansion.mailing_id == mailing(engine, "north-drop").id
    test_ids, control_ids = (
        group_ids(engine, "Spring", "test"),
        group_ids(engine, "Spring", "control"),
    )
    assert outsiders <= set(test_ids) | set(control_ids)  # expanded before the send
    assert delivered_ids(engine, "north-drop") == sorted(set(test_ids) & north_ids)
    assert not set(delivered_ids(engine)) & set(control_ids)
    (run,) = runs_of(engine, "north-drop")
    assert run.finished_at >= expansion.finished_at


# ----------------------------------------------------------------------------- builds


def test_builds_run_in_parallel_across_campaigns_one_per_campaign(world, start_service):
    _, engine = world
    for name in ("A", "B"):
        new_campaign(engine, name=name, percent="10", activate=False)
        with transaction(engine) as session:
            campaigns.activate(session, ADMIN, campaigns.get_campaign(session, name))
    service = start_service(pool_size=2, build_chunk_size=15, build_chunk_pause=0.1)
    poll(lambda: len(service.in_flight_builds()) == 2, what="two builds in parallel")
    assert sorted(service.in_flight_builds().values()) == sorted(
        b.campaign_id for n in ("A", "B") for b in builds_of(engine, n)
    )
    poll(
        lambda: all(b.status == "done" for n in ("A", "B") for b in builds_of(engine, n)),
        timeout=30,
        what="both builds done",
    )


def test_shutdown_stops_a_build_between_chunks_and_the_next_scheduler_resumes_it(
    world, start_service
):
    _, engine = world
    new_campaign(engine, activate=False)
    with transaction(engine) as session:
        build_id = campaigns.activate(session, ADMIN, campaigns.get_campaign(session, "Spring")).id
    first = start_service(build_chunk_size=10, build_chunk_pause=0.2)
    poll(lambda: build(engine, build_id).processed > 0, what="build under way")
    first.shutdown()
    stopped = build(engine, build_id)
    assert stopped.status == "queued" and stopped.checkpoint  # resumes from here
    with Session(engine) as session:
        assert lease.live_lease(session) is None  # released: a standby may take over now
    start_service()
    poll(lambda: build(engine, build_id).status == "done", timeout=30, what="resumed build done")
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Mailing)) == 0


def test_shutdown_waits_for_a_job_that_calls_the_scheduler_meanwhile(world, monkeypatch):
    """A reconcile still running when shutdown begins calls the scheduler (get_job).
    APScheduler 3.11's own `shutdown(wait=True)` waits for running jobs while holding the
    lock get_job needs: the job never ended, shutdown gave up after its timeout, and the
    process hung at exit. The service stops the scheduler first and waits outside its
    locks, so the job ends and shutdown returns after it."""
    url, _ = world
    entered, finished = threading.Event(), threading.Event()
    real = Reconciler.reconcile

    def reconcile(self: Reconciler) -> None:
        if entered.is_set():
            return real(self)
        entered.set()
        poll(lambda: self.scheduler.state == STATE_STOPPED, what="the shutdown to begin")
        self.scheduler.get_job("dispatch")  # as reconcile does for each of its jobs
        finished.set()
        return None

    monkeypatch.setattr(Reconciler, "reconcile", reconcile)
    service = SchedulerService(url, **FAST).start()
    poll(entered.is_set, what="a reconcile under way")
    service.shutdown(timeout=20)
    assert finished.is_set()
    assert service.state == "stopped" and service.jobs() == []


# ----------------------------------------------------------------------------- lease loss


def test_a_scheduler_that_loses_its_lease_stops_acting(world, start_service):
    """Another holder took the lease (e.g. after a network partition): stop everything."""
    _, engine = world
    new_campaign(engine, activate=False)
    with transaction(engine) as session:
        build_id = campaigns.activate(session, ADMIN, campaigns.get_campaign(session, "Spring")).id
    # 30 chunks 0.5 s apart: the build cannot end before the step-down even on a loaded
    # machine, and the test does not wait for it (the service stops it between chunks).
    service = start_service(lease_ttl=1.0, build_chunk_size=10, build_chunk_pause=0.5)
    poll(lambda: build(engine, build_id).processed > 0, what="build under way", timeout=30)
    with transaction(engine) as session:  # the lease now belongs to someone else
        session.execute(
            sa.update(SchedulerLease).values(
                holder="elsewhere:1:x",
                host="elsewhere",
                pid=1,
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
    poll(lambda: service.state == "standby", what="stepped down", timeout=30)
    assert service.jobs() == []
    poll(lambda: build(engine, build_id).status == "queued", what="build handed back", timeout=30)
    assert build(engine, build_id).checkpoint  # the next holder resumes it


# ----------------------------------------------------------------------------- restarts


def test_schedules_survive_a_restart(world, start_service):
    """Jobs are rebuilt from the database: a broadcast due while no scheduler ran fires
    once at the next start; an interval refresh is due `every` after the last one."""
    _, engine = world
    new_campaign(engine)
    with transaction(engine) as session:
        segments.create_segment(
            session,
            ADMIN,
            "hourly",
            database=profiles.get_database(session, "shop"),
            rule="score >= 5",
            every_seconds=3600,
        )
        segments.refresh(session, ADMIN, segments.get_segment(session, "hourly"))
    send_at = utcnow() + timedelta(seconds=30)
    add_mailing(engine, "launch", "broadcast", send_at=send_at)
    first = start_service()
    poll(lambda: mailing(engine, "launch").next_run_at == send_at, what="next_run_at stored")
    first.shutdown()
    with transaction(engine) as session:  # the time comes while no scheduler runs
        session.execute(
            sa.update(Mailing)
            .where(Mailing.name == "launch")
            .values(send_at=utcnow() - timedelta(minutes=1), version=Mailing.version + 1)
        )
    second = start_service()
    poll(lambda: mailing(engine, "launch").status == "sent", what="missed broadcast fired")
    assert len(runs_of(engine, "launch")) == 1
    with Session(engine) as session:
        hourly = segments.get_segment(session, "hourly")
    job = poll(lambda: second.get_job(f"segment:{hourly.id}"), what="refresh job")
    assert job.next_run_time == hourly.last_refreshed_at + timedelta(hours=1)


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_the_service_schedules_builds_and_sends_on_postgresql(postgres_url):
    """The same service on a real PostgreSQL schema: build, pause, broadcast after it."""
    engine = open_store(postgres_url)
    make_world(engine, n=120)
    new_campaign(engine)
    add_mailing(engine, "weekly", "regular", cron="0 10 * * 1")
    service = SchedulerService(postgres_url, build_chunk_size=15, build_chunk_pause=0.05, **FAST)
    try:
        service.start()
        poll(lambda: job_of(service, "weekly", engine), what="weekly scheduled")
        build_id = recalculate(engine)
        poll(lambda: build(engine, build_id).status == "running", what="build running")
        add_mailing(engine, "flash", "broadcast", send_at=utcnow())
        finished = poll(lambda: build(engine, build_id).finished_at, timeout=30, what="build end")
        poll(lambda: mailing(engine, "flash").status == "sent", what="broadcast after the build")
        assert runs_of(engine, "flash")[0].started_at >= finished
        assert delivered_ids(engine, "flash") == group_ids(engine, "Spring", "test")
        assert not set(delivered_ids(engine)) & set(group_ids(engine, "Spring", "control"))
    finally:
        service.shutdown()
        engine.dispose()
