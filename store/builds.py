"""Audience builds (R2–R11): queue, claim, run in resumable chunks.

Every build, whatever its reason, reconciles the campaign with its settings in phases;
each phase runs in chunks, and every chunk is one transaction that commits its rows,
events and counters together with `processed`, `heartbeat_at` and the checkpoint:

1. rekey   (recalculation, lcg_disable) recompute the open members' stratum keys for the
           current strata fields, then rebuild the per-stratum counters from the rows.
2. demote  (all) control members outside the current LCG cohort, or all of them when the
           LCG is off, move to test with `moved_to_test` (R7; cohort ended).
3. plan    (one transaction) counts the newcomers per stratum with one GROUP BY over
           the candidate query (R1 scope; activation: every open segment member, R3;
           otherwise only segment rows above the watermark without an open membership,
           R2c, plus the mailing's own segment for an expansion, R11; re-entering
           profiles carry the group of their latest closed membership, R4), then T, the
           quotas (R9 largest remainder), the surplus cut-offs (R6) and, per stratum, the
           (assignment_hash, external_id) of the min(q_s − c_s, newcomers)-th smallest
           fresh newcomer. Found exactly without sorting everyone: only newcomers whose
           hash is below a generous cut are fetched, and a stratum that comes up short is
           fetched again with a doubled cut. The plan is frozen in the checkpoint with the
           segment bound (max segment_member.id) and the watermark, so a resumed build
           makes exactly the same decisions as an uninterrupted one.
4. trim    (recalculation, lcg_disable) surplus control members with the largest
           (hash, external_id) move to test with `moved_to_test` (R6). Incremental and
           expansion builds never trim: they only fill deficits.
5. assign  (all) one INSERT … SELECT per chunk of the candidate query (keyset on
           profile id, or segment_member id for the delta), hash computed once per row
           in a fenced subquery, group = control when at or below its stratum's
           cut-off; a GROUP BY over the chunk's rows feeds the counters. Leavers that
           left meanwhile are skipped.
6. finish  R3 `left_campaign` events (activation), watermark, quotas, R10 warnings.

A delta build (no trim) whose newcomers fit in one chunk runs plan, assign and finish
in one transaction, from its candidates read once into a temporary table
(build_plan._store_candidates) instead of once by each pass over them.

Events carry the build id; the unique index on (build, profile, kind, campaign) and the
chunk-with-checkpoint commits mean a resumed build never writes an event twice (R12).
Builds that change LCG membership pause the campaign's scheduled mailings while they run
(R5/R6) and resume them at the end, whatever the outcome.

This module queues, claims and drives builds; store/build_steps.py does one step.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store import audit, mailings
from store.actors import Actor
from store.build_steps import LostClaim, end_build, run_step
from store.db import transaction, unreachable_problem
from store.errors import InvalidStateError, NotFoundError, WorkspaceBusy, public_reason
from store.locations import is_postgres
from store.models import (
    AudienceBuild,
    Campaign,
    Mailing,
    UTCDateTime,
    utcnow,
)
from store.states import (
    OPEN_BUILD_STATUSES,
    RECALCULATING_REASONS,
    BuildReason,
    BuildStatus,
    CampaignStatus,
    MailingStatus,
    check_not_completed,
)

CHUNK_SIZE = 50_000
# Seconds before each new try of a chunk whose database connection was lost (a server
# restart or failover): about half a minute in all, then the build fails (builds retry).
RECONNECT_WAITS = (0.5, 1, 2, 4, 8, 15)
REASON_RANK = {
    BuildReason.INCREMENTAL: 0,
    BuildReason.EXPANSION: 0,
    BuildReason.RECALCULATION: 1,
    BuildReason.LCG_DISABLE: 2,
    BuildReason.ACTIVATION: 3,
}


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------- queueing


def queue_build(
    session: Session,
    campaign: Campaign,
    reason: str,
    actor: Actor,
    *,
    mailing: Mailing | None = None,
) -> AudienceBuild:
    """R2: queue a build, or merge into a queued one of the campaign that has not started.

    Every build reads the campaign's settings when it starts and, except an activation
    build (R4a: a snapshot), takes the segment newcomers, so an incremental request
    merges into any not-yet-started build but an activation one; other
    requests merge into one of the same kind (same mailing for expansions), keeping the
    strongest reason and pausing mailings if either asked for it.
    """
    if reason not in list(BuildReason):
        raise ValueError(f"unknown build reason {reason!r}")
    check_not_completed(campaign)
    if campaign.status != CampaignStatus.ACTIVE and reason != BuildReason.ACTIVATION:
        raise InvalidStateError(
            f"campaign {campaign.name!r} is a draft: no build before activation"
        )
    if reason == BuildReason.EXPANSION and mailing is None:
        raise ValueError("an expansion build needs its mailing")
    if reason == BuildReason.EXPANSION and mailing.status != MailingStatus.ACTIVE:
        raise InvalidStateError(
            f"mailing {mailing.name!r} is {mailing.status}: only a mailing that is not "
            "completed expands the audience (R11)"
        )
    pauses = reason in RECALCULATING_REASONS or (
        reason == BuildReason.ACTIVATION and campaign.lcg_enabled
    )
    mailing_id = mailing.id if mailing is not None else None
    query = sa.select(AudienceBuild).where(
        AudienceBuild.campaign_id == campaign.id,
        AudienceBuild.status == BuildStatus.QUEUED,
        AudienceBuild.started_at.is_(None),
    )
    if reason == "incremental":
        # R4a: an activation build takes the segment as it stood at activation; later
        # newcomers wait for a build of their own.
        query = query.where(AudienceBuild.reason != "activation")
    else:
        query = query.where(
            AudienceBuild.mailing_id.is_(None)
            if mailing_id is None
            else AudienceBuild.mailing_id == mailing_id
        )
    existing = session.scalar(query.order_by(AudienceBuild.id).limit(1))
    if existing is not None:
        if REASON_RANK[reason] > REASON_RANK[existing.reason] and existing.mailing_id is None:
            existing.reason = reason
        existing.pauses_mailings = existing.pauses_mailings or pauses
        session.add(existing)
        session.flush()
        return existing
    build = AudienceBuild(
        campaign_id=campaign.id,
        reason=reason,
        requested_by=actor.user,
        requested_at=utcnow(),
        mailing_id=mailing_id,
        pauses_mailings=pauses,
    )
    session.add(build)
    session.flush()
    return build


def get_build(session: Session, build_id: int) -> AudienceBuild:
    # An id no 64-bit key can hold names no build (the driver would raise OverflowError).
    build = session.get(AudienceBuild, build_id) if -(2**63) <= build_id < 2**63 else None
    if build is None:
        raise NotFoundError(f"no audience build #{build_id}")
    return build


@audit.operation("build.retry", "build")
def retry_build(session: Session, actor: Actor, build: AudienceBuild) -> AudienceBuild:
    """Queue a failed build again (after what failed it is fixed: a full disk, a lost
    server). It resumes from its checkpoint as after a crash: the chunks it committed stay,
    its frozen plan decides the rest, so it ends as an uninterrupted build would have, and
    no event is written twice (R12). It pauses mailings again when it is claimed (R5/R6).

    Only the campaign's latest build, of a campaign not completed (R8): a build queued
    after it reads the campaign afresh and takes over its newcomers (docs/engine.md)."""
    actor.require_write("retry an audience build")
    if build.status != BuildStatus.FAILED:
        raise InvalidStateError(
            f"build #{build.id} is {build.status}: only a failed build can be retried"
        )
    campaign = session.get(Campaign, build.campaign_id)
    check_not_completed(campaign, f"retry build #{build.id}")
    later = session.scalar(
        sa.select(AudienceBuild)
        .where(AudienceBuild.campaign_id == build.campaign_id, AudienceBuild.id > build.id)
        .order_by(AudienceBuild.id)
        .limit(1)
    )
    if later is not None:
        raise InvalidStateError(
            f"build #{later.id} ({later.reason}, {later.status}) of campaign "
            f"{campaign.name!r} came after build #{build.id}: only a campaign's latest build "
            "can be retried"
        )
    failure = build.error
    build.status, build.worker, build.finished_at, build.error = (
        BuildStatus.QUEUED,
        None,
        None,
        None,
    )
    session.add(build)
    session.flush()
    audit.record(session, actor, "build.retry", "build", build.id, f"#{build.id}", failure=failure)
    return build


@audit.operation("build.cancel", "build")
def cancel_build(session: Session, actor: Actor, build: AudienceBuild) -> None:
    actor.require_write("cancel an audience build")
    if build.status not in OPEN_BUILD_STATUSES:
        raise InvalidStateError(f"build #{build.id} is {build.status}; nothing to cancel")
    end_build(session, build, BuildStatus.CANCELLED)
    audit.record(session, actor, "build.cancel", "build", build.id, f"#{build.id}")


# --------------------------------------------------------------------------- claiming


def _running_exists(campaign_id: Any) -> sa.Exists:
    other = AudienceBuild.__table__.alias("other")
    return (
        sa.select(other.c.id)
        .where(other.c.campaign_id == campaign_id, other.c.status == BuildStatus.RUNNING)
        .exists()
    )


def claim_next_build(
    engine: Engine, worker: str, exclude_campaign_ids=(), *, build_ids=None
) -> int | None:
    """Mark the oldest claimable queued build running (never two per campaign: a partial
    unique index backs the check) and pause mailings when it pauses them (R5/R6).
    `build_ids`: claim only among these (CLI --wait runs only its own command's builds)."""
    with Session(engine) as session:
        query = sa.select(AudienceBuild.id, AudienceBuild.campaign_id).where(
            AudienceBuild.status == BuildStatus.QUEUED, ~_running_exists(AudienceBuild.campaign_id)
        )
        if exclude_campaign_ids:
            query = query.where(AudienceBuild.campaign_id.not_in(list(exclude_campaign_ids)))
        if build_ids is not None:
            query = query.where(AudienceBuild.id.in_(list(build_ids)))
        candidates = session.execute(
            query.order_by(AudienceBuild.requested_at, AudienceBuild.id).limit(20)
        ).all()
    for build_id, campaign_id in candidates:
        try:
            with transaction(engine) as session:
                if is_postgres(engine):
                    session.execute(
                        sa.select(Campaign.id).where(Campaign.id == campaign_id).with_for_update()
                    )
                now = utcnow()
                result = session.execute(
                    sa.update(AudienceBuild)
                    .where(
                        AudienceBuild.id == build_id,
                        AudienceBuild.status == BuildStatus.QUEUED,
                        ~_running_exists(campaign_id),
                    )
                    .values(
                        status=BuildStatus.RUNNING,
                        worker=worker,
                        started_at=sa.func.coalesce(
                            AudienceBuild.started_at, sa.literal(now, UTCDateTime())
                        ),
                        heartbeat_at=now,
                        # A build that had started is resumed: its rate counts from here.
                        resumed_at=sa.case(
                            (AudienceBuild.started_at.is_(None), None),
                            else_=sa.literal(now, UTCDateTime()),
                        ),
                        resumed_processed=sa.case(
                            (AudienceBuild.started_at.is_(None), None),
                            else_=AudienceBuild.processed,
                        ),
                    )
                )
                if result.rowcount != 1:
                    continue
                build = session.get(AudienceBuild, build_id)
                session.refresh(build)
                if build.pauses_mailings:
                    mailings.pause_for_build(session, build)
            return build_id
        except sa.exc.IntegrityError:
            continue
    return None


def requeue_abandoned(engine: Engine, stale_after: timedelta, *, build_ids=None) -> list[int]:
    """Crash recovery: running builds whose heartbeat is older than `stale_after` go back to
    `queued` with their checkpoint; mailings they paused stay paused until they end.
    `build_ids`: only among these (CLI --wait)."""
    cutoff = utcnow() - stale_after
    query = sa.select(AudienceBuild.id).where(
        AudienceBuild.status == BuildStatus.RUNNING, AudienceBuild.heartbeat_at < cutoff
    )
    if build_ids is not None:
        query = query.where(AudienceBuild.id.in_(list(build_ids)))
    with transaction(engine) as session:
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                sa.update(AudienceBuild)
                .where(AudienceBuild.id.in_(ids), AudienceBuild.status == BuildStatus.RUNNING)
                .values(status=BuildStatus.QUEUED, worker=None)
            )
    return ids


# --------------------------------------------------------------------------- running


def run_build(
    engine: Engine,
    build_id: int,
    *,
    worker: str,
    should_stop: Callable[[], bool] = lambda: False,
    chunk_size: int = CHUNK_SIZE,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> str:
    """Run (or resume) a claimed build chunk by chunk. Returns done | failed | cancelled,
    or interrupted when should_stop() turned true between chunks (back to queued). A chunk
    that waited past SQLite's busy timeout for another writer is tried again, and so is
    one whose connection was lost or refused (up to len(RECONNECT_WAITS) times in a row).
    An outage never fails a build: one longer than those waits raises the connection's
    error and leaves the build running, to be requeued as abandoned once the database
    answers and resumed from its checkpoint."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    lost = 0  # connections lost in a row
    while True:
        try:
            with transaction(engine) as session:
                outcome, processed, total = run_step(session, build_id, worker, chunk_size)
        except LostClaim:
            with Session(engine) as session:
                status = session.scalar(
                    sa.select(AudienceBuild.status).where(AudienceBuild.id == build_id)
                )
            return "cancelled" if status in (BuildStatus.CANCELLED, None) else "interrupted"
        except WorkspaceBusy:
            # Another process (a large import) kept the SQLite file locked past the busy
            # timeout, and nothing of the chunk was kept: the build waits its turn instead
            # of failing, trying the chunk again. Asked to stop meanwhile, it cannot write
            # either: it stays running, and is requeued as abandoned, as after a crash.
            if should_stop():
                return "interrupted"
            continue
        except sa.exc.DBAPIError as exc:
            # The server restarted, or a failover dropped the connection, mid-chunk: the
            # chunk was rolled back, or it committed and the checkpoint says so. Either
            # way trying it again is a resume; the pool opens a new connection, once the
            # server accepts one again (store.db.unreachable_problem: lost or refused).
            if unreachable_problem(engine, exc) is None:
                _fail(engine, build_id, worker, public_reason(exc))
                return "failed"
            if should_stop():
                return "interrupted"  # stays running, requeued as abandoned (as above)
            if lost >= len(RECONNECT_WAITS):
                # Still away: recording a failure would need the database (and, were it
                # back by then, would fail a build that only has to resume). It stays
                # running with its checkpoint; the caller says why (CLI, scheduler log).
                raise
            time.sleep(RECONNECT_WAITS[lost])
            lost += 1
            continue
        except Exception as exc:  # the chunk rolled back; record why and end the build
            _fail(engine, build_id, worker, public_reason(exc))
            return "failed"
        lost = 0
        if on_progress is not None:
            on_progress(build_id, processed, total)
        if outcome != "more":
            return outcome
        if should_stop():
            _give_back(engine, build_id, worker)
            return "interrupted"


def _give_back(engine: Engine, build_id: int, worker: str) -> None:
    """A running build back to queued, its checkpoint kept: the next claim resumes it."""
    with transaction(engine) as session:
        session.execute(
            sa.update(AudienceBuild)
            .where(
                AudienceBuild.id == build_id,
                AudienceBuild.status == BuildStatus.RUNNING,
                AudienceBuild.worker == worker,
            )
            .values(status=BuildStatus.QUEUED, worker=None, heartbeat_at=utcnow())
        )


def run_pending(
    engine: Engine,
    worker: str = "inline",
    on_progress: Callable[[int, int, int], None] | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> list[int]:
    """Claim and run queued builds until none is left (CLI --wait, demo, tests)."""
    ran: list[int] = []
    while True:
        build_id = claim_next_build(engine, worker)
        if build_id is None:
            return ran
        run_build(engine, build_id, worker=worker, on_progress=on_progress, chunk_size=chunk_size)
        ran.append(build_id)


def _fail(engine: Engine, build_id: int, worker: str, error: str) -> None:
    with transaction(engine) as session:
        build = session.get(AudienceBuild, build_id)
        if build is not None and build.status == BuildStatus.RUNNING and build.worker == worker:
            end_build(session, build, BuildStatus.FAILED, error)


def build_progress(session: Session, build_id: int) -> tuple[int, int]:
    build = session.get(AudienceBuild, build_id)
    return (build.processed, build.total) if build else (0, 0)
