"""The scheduler lease: exactly one scheduler acts on a database at a time.

One row (`scheduler_lease`, name "scheduler") names the holder ("host:pid:nonce"), when it
last beat and when the lease expires. Every change is one atomic statement, so two
schedulers racing for the lease on SQLite or PostgreSQL can never both win:

* renewal: ``UPDATE ... WHERE holder = me`` (nobody else can hold the row meanwhile);
* takeover: ``UPDATE ... WHERE expires_at <= now`` (the previous holder stopped beating);
* first use: ``INSERT`` of the row; a concurrent INSERT loses on the primary key.

Times are the acting host's UTC clock; hosts sharing a database are assumed to be
NTP-synchronised (skew far below the TTL). A holder that cannot renew stops acting on
its own before its lease expires (see scheduler/service.py), so a takeover never
overlaps with a live holder.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store.actors import system_actor
from store.catalog import SchedulerLease, utcnow

LEASE_NAME = "scheduler"
_table = SchedulerLease.__table__


def make_holder(nonce: str) -> str:
    """A holder id for this process: "host:pid:nonce"."""
    return f"{socket.gethostname()}:{os.getpid()}:{nonce}"


def parse_holder(holder: str) -> tuple[str, int]:
    """(host, pid) of a holder id; pid 0 when the id is not in the usual shape."""
    parts = holder.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return holder, 0


def current_lease(session: Session) -> SchedulerLease | None:
    """The lease row, expired or not (None when no scheduler ever ran on this database)."""
    return session.get(SchedulerLease, LEASE_NAME, populate_existing=True)


def live_lease(session: Session, now: datetime | None = None) -> SchedulerLease | None:
    """The lease when its expiry is in the future, i.e. a scheduler is acting."""
    lease = current_lease(session)
    if lease is None or lease.expires_at <= (now or utcnow()):
        return None
    return lease


def try_acquire(engine: Engine, holder: str, ttl: float) -> bool:
    """Take or renew the lease for `holder`; False when another holder's lease is live."""
    now = utcnow()
    host, pid = parse_holder(holder)
    expires = now + timedelta(seconds=ttl)
    with Session(engine) as session:  # a standby polls with a read, not a write lock
        seen = current_lease(session)
        if seen is not None and seen.holder != holder and seen.expires_at > now:
            return False
    with engine.begin() as conn:
        renewed = conn.execute(
            sa.update(_table)
            .where(_table.c.name == LEASE_NAME, _table.c.holder == holder)
            .values(heartbeat_at=now, expires_at=expires)
        ).rowcount
    if renewed:
        return True
    with Session(engine) as session:
        previous = current_lease(session)
        taken = session.execute(
            sa.update(_table)
            .where(_table.c.name == LEASE_NAME, _table.c.expires_at <= now)
            .values(
                holder=holder,
                host=host,
                pid=pid,
                acquired_at=now,
                heartbeat_at=now,
                expires_at=expires,
            )
        ).rowcount
        if not taken and previous is None:
            try:
                session.execute(
                    sa.insert(_table).values(
                        name=LEASE_NAME,
                        holder=holder,
                        host=host,
                        pid=pid,
                        acquired_at=now,
                        heartbeat_at=now,
                        expires_at=expires,
                    )
                )
                session.flush()
                taken = 1
            except sa.exc.IntegrityError:
                session.rollback()  # another scheduler inserted the row first
                return False
        if taken:
            # Imported here: the console header reads the lease (current_lease) before
            # the first frame, which must not wait for the whole schema (issue 14 target 5).
            from store import audit

            resumed = _requeue_builds_of(session, previous, holder)
            audit.record(
                session,
                system_actor(),
                "scheduler.lease_acquired",
                "scheduler_lease",
                target_name=holder,
                previous_holder=previous.holder if previous is not None else None,
                previous_heartbeat=previous.heartbeat_at.isoformat()
                if previous is not None
                else None,
                requeued_builds=resumed,
            )
            session.commit()
        return bool(taken)


def _requeue_builds_of(session: Session, previous: SchedulerLease | None, holder: str) -> list[int]:
    """A new holder knows the previous one is gone (its lease expired): the builds it left
    `running` go back to the queue at once, to resume from their checkpoints, instead of
    waiting for their heartbeats to go stale (issue 15.11). Safe even if the old holder
    still finishes a chunk: every step checks that its worker still owns the build."""
    if previous is None or previous.holder == holder:
        return []
    from store.models import AudienceBuild

    ids = list(
        session.scalars(
            sa.select(AudienceBuild.id).where(
                AudienceBuild.status == "running", AudienceBuild.worker == previous.holder
            )
        )
    )
    if ids:
        session.execute(
            sa.update(AudienceBuild)
            .where(AudienceBuild.id.in_(ids), AudienceBuild.status == "running")
            .values(status="queued", worker=None)
        )
    return ids


def heartbeat(engine: Engine, holder: str, ttl: float) -> bool:
    """Extend the lease of `holder`; False when it is no longer the holder."""
    now = utcnow()
    with engine.begin() as conn:
        return bool(
            conn.execute(
                sa.update(_table)
                .where(_table.c.name == LEASE_NAME, _table.c.holder == holder)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl))
            ).rowcount
        )


def release(engine: Engine, holder: str) -> bool:
    """Give the lease up at once (clean shutdown): a standby may take over immediately.

    The row stays, expired, so the console can still say who was last heard from and when.
    """
    now = utcnow()
    with engine.begin() as conn:
        return bool(
            conn.execute(
                sa.update(_table)
                .where(_table.c.name == LEASE_NAME, _table.c.holder == holder)
                .values(expires_at=now)
            ).rowcount
        )
