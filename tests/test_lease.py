"""The scheduler lease (SPEC Scheduler: exactly one scheduler acts on a database).

Real SQLite file and real PostgreSQL schema (`engine` fixture).
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from e2e.scheduler_world import poll
from sqlmodel import Session

from store import lease
from store.models import AuditEntry, SchedulerLease


def _live(engine):
    with Session(engine) as session:
        return lease.live_lease(session)


def test_first_scheduler_acquires_the_lease_with_host_and_pid(engine):
    assert _live(engine) is None
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=10)
    live = _live(engine)
    assert (live.holder, live.host, live.pid) == ("hostA:101:aa", "hostA", 101)
    assert live.expires_at > live.heartbeat_at


def test_a_second_scheduler_is_refused_while_the_lease_is_live(engine):
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=10)
    assert not lease.try_acquire(engine, "hostB:202:bb", ttl=10)
    assert not lease.heartbeat(engine, "hostB:202:bb", ttl=10)
    assert _live(engine).holder == "hostA:101:aa"


def test_heartbeat_extends_the_lease_of_its_holder(engine):
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=5)
    before = _live(engine)
    assert poll(
        lambda: (
            lease.heartbeat(engine, "hostA:101:aa", ttl=5)
            and _live(engine).expires_at > before.expires_at
        )
    )
    after = _live(engine)
    assert after.acquired_at == before.acquired_at  # renewal, not a new acquisition


def test_standby_takes_over_when_the_lease_expires(engine):
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=0.3)
    poll(lambda: lease.try_acquire(engine, "hostB:202:bb", ttl=10), timeout=5, what="takeover")
    assert _live(engine).holder == "hostB:202:bb"
    # The former holder has lost it: its heartbeat fails, so it stops acting.
    assert not lease.heartbeat(engine, "hostA:101:aa", ttl=10)


def test_release_lets_a_standby_take_over_at_once_and_keeps_who_was_last_heard(engine):
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=60)
    assert lease.release(engine, "hostA:101:aa")
    assert _live(engine) is None
    with Session(engine) as session:
        assert lease.current_lease(session).holder == "hostA:101:aa"  # for "last heard"
    assert lease.try_acquire(engine, "hostB:202:bb", ttl=60)
    assert not lease.release(engine, "hostA:101:aa")  # no longer its lease


def test_racing_schedulers_never_both_acquire(engine):
    holders = [f"host{i}:{1000 + i}:n{i}" for i in range(6)]
    barrier = threading.Barrier(len(holders))
    won: list[str] = []

    def contend(holder: str) -> None:
        barrier.wait()
        if lease.try_acquire(engine, holder, ttl=30):
            won.append(holder)

    threads = [threading.Thread(target=contend, args=(h,)) for h in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert _live(engine).holder == won[0]
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SchedulerLease)) == 1


def test_each_acquisition_is_audited_with_the_previous_holder(engine):
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=60)
    assert lease.try_acquire(engine, "hostA:101:aa", ttl=60)  # renewal: no entry
    lease.release(engine, "hostA:101:aa")
    assert lease.try_acquire(engine, "hostB:202:bb", ttl=60)
    with Session(engine) as session:
        entries = list(
            session.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.action == "scheduler.lease_acquired")
                .order_by(AuditEntry.id)
            )
        )
    assert [e.target_name for e in entries] == ["hostA:101:aa", "hostB:202:bb"]
    assert entries[1].details["previous_holder"] == "hostA:101:aa"
