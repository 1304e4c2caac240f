"""Mailing runs and deliveries (SPEC: mailings send to the test group only; R5, R8).

The campaign's members are placed directly (this is about who a run reaches, not about
builds); the run goes through the real firing code with the default database sender.
Real SQLite file and real PostgreSQL schema (`engine` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from e2e.scheduler_world import (
    ADMIN,
    delivered_ids,
    mailing,
    make_world,
    profile_ids,
    runs_of,
    seed_campaign,
    slot,
)
from sqlmodel import Session

from scheduler import jobs
from scheduler import mailings as mailing_runs
from store import deliveries, history, segments
from store import mailings as store_mailings
from store.actors import system_actor
from store.db import transaction
from store.errors import InvalidStateError, ReadOnlyError, ValidationError
from store.models import AuditEntry, Campaign, Delivery, MailingRun, Profile, utcnow

SEND_AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SYSTEM = system_actor()


def no_expansion(build_id: int) -> str:  # the mailings here have no expansion
    raise AssertionError("no expansion expected")


def fire(engine, name: str, when: datetime = SEND_AT) -> mailing_runs.FireResult:
    return mailing_runs.fire(
        engine,
        mailing(engine, name).id,
        when,
        actor=SYSTEM,
        sender=mailing_runs.DatabaseSender(),
        run_expansion=no_expansion,
    )


@pytest.fixture
def world(engine):
    make_world(engine, n=40)
    ids = profile_ids(engine)
    test_ids, control_ids = ids[:30], ids[30:36]  # the last 4 profiles are not members
    seed_campaign(engine, "Spring", test_ids, control_ids)
    return engine, test_ids, control_ids


def create(engine, name, kind="broadcast", **kwargs):
    with transaction(engine) as session:
        campaign = session.scalar(sa.select(Campaign).where(Campaign.name == "Spring"))
        if kind == "broadcast":
            kwargs.setdefault("send_at", SEND_AT)
        store_mailings.create_mailing(session, ADMIN, name, campaign, kind, **kwargs)


def test_a_run_reaches_the_test_group_and_never_a_control_member(world):
    engine, test_ids, control_ids = world
    create(engine, "launch")
    result = fire(engine, "launch")
    assert (result.outcome, result.recipients) == ("sent", len(test_ids))
    assert delivered_ids(engine) == test_ids
    assert not set(delivered_ids(engine)) & set(control_ids)
    assert mailing(engine, "launch").status == "sent"
    (run,) = runs_of(engine, "launch")
    assert (run.status, run.recipients, run.scheduled_for) == ("done", len(test_ids), SEND_AT)


def test_a_mailing_with_its_own_segment_reaches_only_test_members_in_it(world):
    engine, test_ids, control_ids = world
    region = slot(engine, "region")
    with transaction(engine) as session:
        north = segments.create_segment(session, ADMIN, "north")
        session.flush()
        segments.add_profiles_where(session, ADMIN, north, sa.text(f"{region} = 'North'"))
        north_ids = set(
            session.scalars(sa.text(f"SELECT id FROM profile WHERE {region} = 'North'"))
        )
    with transaction(engine) as session:
        create(engine, "north-only", segment=segments.get_segment(session, "north"))
    fire(engine, "north-only")
    assert delivered_ids(engine) == sorted(set(test_ids) & north_ids)
    assert not set(delivered_ids(engine)) & set(control_ids)


def test_a_firing_is_never_doubled(world):
    engine, test_ids, _ = world
    create(engine, "weekly", "regular", cron="0 10 * * 1")
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert fire(engine, "weekly", monday).outcome == "sent"
    again = fire(engine, "weekly", monday)
    assert again.outcome == "already-fired"
    assert len(delivered_ids(engine)) == len(test_ids)
    assert fire(engine, "weekly", monday + timedelta(days=7)).outcome == "sent"
    assert len(delivered_ids(engine)) == 2 * len(test_ids)
    assert mailing(engine, "weekly").status == "active"  # regular mailings keep going


def test_a_paused_mailing_does_not_fire_and_writes_nothing(world):
    engine, *_ = world
    create(engine, "launch")
    with transaction(engine) as session:
        store_mailings.set_manual_pause(
            session, ADMIN, store_mailings.get_mailing(session, "launch"), True
        )
    result = fire(engine, "launch")
    assert result.outcome == "not-sendable"
    assert "paused by alice" in result.reason
    assert runs_of(engine, "launch") == [] and delivered_ids(engine) == []


def test_a_completed_campaign_never_sends_R8(world):
    engine, *_ = world
    create(engine, "launch")
    with transaction(engine) as session:
        session.execute(sa.update(Campaign).values(status="completed"))
    result = fire(engine, "launch")
    assert result.outcome == "not-sendable" and "R8" in result.reason
    assert delivered_ids(engine) == []


def test_a_broadcast_paused_after_its_claim_is_withdrawn_and_fires_once_later(world):
    """Misfire policy: the claim is withdrawn, so the broadcast fires once on resume."""
    engine, test_ids, _ = world
    create(engine, "launch")
    with transaction(engine) as session:
        run = store_mailings.begin_run(session, mailing(engine, "launch").id, SEND_AT)
        run_id = run.id
    with transaction(engine) as session:
        store_mailings.set_manual_pause(
            session, ADMIN, store_mailings.get_mailing(session, "launch"), True
        )
    finished = mailing_runs.finish_run(
        engine,
        run_id,
        actor=SYSTEM,
        sender=mailing_runs.DatabaseSender(),
        run_expansion=no_expansion,
    )
    assert finished.outcome == "skipped"
    assert runs_of(engine, "launch") == [] and delivered_ids(engine) == []
    with transaction(engine) as session:
        store_mailings.set_manual_pause(
            session, ADMIN, store_mailings.get_mailing(session, "launch"), False
        )
    assert fire(engine, "launch").outcome == "sent"
    assert delivered_ids(engine) == test_ids


def test_a_regular_occurrence_paused_after_its_claim_is_skipped(world):
    """Misfire policy: a regular mailing skips the occurrence; it is not replayed."""
    engine, *_ = world
    create(engine, "weekly", "regular", cron="0 10 * * 1")
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with transaction(engine) as session:
        run_id = store_mailings.begin_run(session, mailing(engine, "weekly").id, monday).id
    with transaction(engine) as session:
        store_mailings.set_manual_pause(
            session, ADMIN, store_mailings.get_mailing(session, "weekly"), True
        )
    mailing_runs.finish_run(
        engine,
        run_id,
        actor=SYSTEM,
        sender=mailing_runs.DatabaseSender(),
        run_expansion=no_expansion,
    )
    (run,) = runs_of(engine, "weekly")
    assert run.status == "skipped" and delivered_ids(engine) == []
    with transaction(engine) as session:
        store_mailings.set_manual_pause(
            session, ADMIN, store_mailings.get_mailing(session, "weekly"), False
        )
    assert fire(engine, "weekly", monday).outcome == "already-fired"


def test_a_run_left_claimed_by_a_dead_scheduler_is_finished_exactly_once(world):
    engine, test_ids, _ = world
    create(engine, "launch")
    with transaction(engine) as session:
        run_id = store_mailings.begin_run(session, mailing(engine, "launch").id, SEND_AT).id
    with Session(engine) as session:
        assert [r.id for r in store_mailings.unfinished_runs(session)] == [run_id]
    for _ in range(2):
        mailing_runs.finish_run(
            engine,
            run_id,
            actor=SYSTEM,
            sender=mailing_runs.DatabaseSender(),
            run_expansion=no_expansion,
        )
    assert delivered_ids(engine) == test_ids
    with Session(engine) as session:
        assert store_mailings.unfinished_runs(session) == []


def test_recovery_at_a_term_start_leaves_the_runs_of_that_term_alone(world):
    """Crash recovery runs once when a scheduler starts acting (scheduler.jobs.
    finish_unfinished_runs). A mailing job of the same term can claim its run first and
    still be waiting for its expansion build (R11): recovery finishes only the runs
    claimed before the term started. It used to finish that run too, and queued a second
    expansion build (seen under load in test_scheduler_service)."""
    engine, test_ids, _ = world
    create(engine, "left-behind")
    create(engine, "this-term")
    with transaction(engine) as session:
        dead = store_mailings.begin_run(session, mailing(engine, "left-behind").id, SEND_AT).id
    term_started = utcnow()
    with transaction(engine) as session:
        live = store_mailings.begin_run(session, mailing(engine, "this-term").id, SEND_AT).id
    ctx = jobs.JobContext(
        engine=engine,
        holder="test",
        actor=SYSTEM,
        sender=mailing_runs.DatabaseSender(),
        pool_size=1,
        stale_after=timedelta(minutes=1),
        acting=lambda: True,
        wake_dispatcher=lambda: None,
        submit_build=lambda build_id: None,
    )
    jobs.finish_unfinished_runs(ctx, term_started)
    with Session(engine) as session:
        assert session.get(MailingRun, dead).status == "done"
        assert [r.id for r in store_mailings.unfinished_runs(session)] == [live]
        assert store_mailings.unfinished_runs(session, claimed_before=term_started) == []
    assert sorted(delivered_ids(engine, "left-behind")) == sorted(test_ids)
    assert delivered_ids(engine, "this-term") == []


def test_begin_run_refuses_without_writing_when_already_fired(world):
    engine, *_ = world
    create(engine, "launch")
    fire(engine, "launch")
    with transaction(engine) as session, pytest.raises(InvalidStateError, match="mailing is sent"):
        store_mailings.begin_run(session, mailing(engine, "launch").id, SEND_AT)
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(MailingRun)) == 1


def test_each_send_is_audited_and_deliveries_show_per_profile(world):
    engine, test_ids, _ = world
    create(engine, "launch")
    fire(engine, "launch")
    with Session(engine) as session:
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "mailing.send"))
        assert (entry.actor, entry.details["recipients"]) == ("scheduler", len(test_ids))
        (delivery,) = deliveries.deliveries_of_profile(session, test_ids[0])
        assert (
            isinstance(delivery, Delivery) and delivery.mailing_id == mailing(engine, "launch").id
        )
        assert deliveries.count_recipients(session, mailing(engine, "launch")) == len(test_ids)


def test_the_profile_card_shows_what_the_profile_received(world):
    engine, test_ids, control_ids = world
    create(engine, "launch")
    fire(engine, "launch")
    with Session(engine) as session:
        received = history.profile_card(session, "shop", _external_id(session, test_ids[0]))
        held_out = history.profile_card(session, "shop", _external_id(session, control_ids[0]))
    assert [(e.kind, e.mailing) for e in received.events if e.kind == "delivered"] == [
        ("delivered", "launch")
    ]
    assert not [e for e in held_out.events if e.kind == "delivered"]


def _external_id(session, profile_id):
    return session.get(Profile, profile_id).external_id


def test_reschedule_and_stop_are_audited_and_refusals_change_nothing(world, viewer):
    engine, *_ = world
    create(engine, "launch")
    create(engine, "welcome", "trigger", event="signup")
    later = SEND_AT + timedelta(days=1)
    with transaction(engine) as session:
        launch = store_mailings.get_mailing(session, "launch")
        store_mailings.reschedule(session, ADMIN, launch, send_at=later)
    assert (mailing(engine, "launch").send_at, mailing(engine, "launch").version) == (later, 2)
    refusals = [
        (viewer, "launch", {"send_at": SEND_AT}, ReadOnlyError),
        (ADMIN, "launch", {"cron": "0 9 * * *"}, ValidationError),
        (ADMIN, "launch", {"send_at": SEND_AT.replace(tzinfo=None)}, ValidationError),
        (ADMIN, "welcome", {"cron": "0 9 * * *"}, InvalidStateError),
    ]
    for actor, name, change, error in refusals:
        with pytest.raises(error), transaction(engine) as session:
            store_mailings.reschedule(
                session, actor, store_mailings.get_mailing(session, name), **change
            )
    assert (mailing(engine, "launch").send_at, mailing(engine, "launch").version) == (later, 2)
    with transaction(engine) as session:
        store_mailings.stop_mailing(session, ADMIN, store_mailings.get_mailing(session, "launch"))
    assert mailing(engine, "launch").status == "stopped"
    assert fire(engine, "launch", later).outcome == "not-sendable"
    with pytest.raises(InvalidStateError, match="stopped"), transaction(engine) as session:
        store_mailings.stop_mailing(session, ADMIN, store_mailings.get_mailing(session, "launch"))
    with Session(engine) as session:
        actions = session.execute(
            sa.select(AuditEntry.action, AuditEntry.outcome)
            .where(AuditEntry.target_type == "mailing")
            .order_by(AuditEntry.id)
        ).all()
    # The refusals changed nothing but are audited by the store (issue 10 item 2).
    assert [tuple(a) for a in actions] == [
        ("mailing.create", "ok"),
        ("mailing.create", "ok"),
        ("mailing.reschedule", "ok"),
        *[("mailing.reschedule", "refused")] * 4,
        ("mailing.stop", "ok"),
        ("mailing.stop", "refused"),
    ]
