"""Module-level job functions, run by APScheduler's thread pools.

Each takes the `JobContext` of the leadership term it was scheduled in, and does nothing
once that term has ended (lease lost or shutdown): a scheduler that is not the lease
holder never acts. Every job catches and logs its own errors; a failed job never stops
the scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler import mailings as mailing_runs
from scheduler.outage import Outage, log_failure
from store import mailings as store_mailings
from store.actors import Actor
from store.db import transaction
from store.errors import StoreError
from store.models import AudienceBuild, Segment, utcnow
from store.states import ENDED_BUILD_STATUSES, BuildStatus

log = logging.getLogger("scheduler.jobs")


@dataclass
class JobContext:
    """What jobs of one leadership term share."""

    engine: Engine
    holder: str
    actor: Actor
    sender: mailing_runs.Sender
    pool_size: int
    stale_after: timedelta
    acting: Callable[[], bool]  # False once the lease is lost or the service stops
    wake_dispatcher: Callable[[], None]
    submit_build: Callable[[int], None]
    build_options: dict[str, Any] = field(default_factory=dict)
    build_chunk_pause: float = 0.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    in_flight: dict[int, int] = field(default_factory=dict)  # build id -> campaign id
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_requeue: float = 0.0
    dispatching: bool = False
    reconciler: Any = None  # scheduler.reconcile.Reconciler of this term
    outage: Outage | None = None  # says a database outage once (scheduler/outage.py)

    def should_stop(self) -> bool:
        """Checked by builds between chunks: stop when the term ends."""
        if self.build_chunk_pause > 0:
            self.stop_event.wait(self.build_chunk_pause)
        return not self.acting()


# ----------------------------------------------------------------------------- reconcile


def reconcile(ctx: JobContext) -> None:
    """Make the jobs match the database (scheduler/reconcile.py), every second."""
    if not ctx.acting():
        return
    try:
        ctx.reconciler.reconcile()
    except Exception:
        log_failure(ctx.outage, log, "reconcile failed; retrying on its next tick")


# ----------------------------------------------------------------------------- builds


def requeue_abandoned(ctx: JobContext) -> list[int]:
    """Crash recovery: builds left `running` by a dead scheduler go back to the queue.

    A build beats on every chunk; one whose heartbeat is older than `stale_after` has no
    live runner (only the lease holder runs builds, and it stops at the next chunk
    boundary once it loses the lease). It resumes from its checkpoint when claimed again.
    """
    from store import builds

    ctx.last_requeue = time.monotonic()
    with ctx.lock:
        mine = list(ctx.in_flight)
    if mine:
        # Never requeue a build of our own whose current chunk runs long: skip this round.
        with Session(ctx.engine) as session:
            oldest = session.scalar(
                sa.select(sa.func.min(AudienceBuild.heartbeat_at)).where(
                    AudienceBuild.id.in_(mine), AudienceBuild.status == BuildStatus.RUNNING
                )
            )
        if oldest is not None and utcnow() - oldest > ctx.stale_after * 0.8:
            log.warning("a build of ours has not beaten for a while; requeue skipped")
            return []
    requeued = builds.requeue_abandoned(ctx.engine, ctx.stale_after)
    if requeued:
        log.warning("requeued abandoned builds %s (resume from checkpoint)", requeued)
    return requeued


def dispatch_builds(ctx: JobContext) -> None:
    """Claim queued builds while the pool has room: one per campaign, up to pool_size."""
    if not ctx.acting():
        return
    from store import builds

    ctx.dispatching = True
    try:
        if time.monotonic() - ctx.last_requeue > ctx.stale_after.total_seconds() / 2:
            requeue_abandoned(ctx)
        while ctx.acting():
            with ctx.lock:
                if len(ctx.in_flight) >= ctx.pool_size:
                    return
                busy = tuple(ctx.in_flight.values())
            build_id = builds.claim_next_build(ctx.engine, ctx.holder, exclude_campaign_ids=busy)
            if build_id is None:
                return
            with Session(ctx.engine) as session:
                campaign_id = session.get(AudienceBuild, build_id).campaign_id
            with ctx.lock:
                ctx.in_flight[build_id] = campaign_id
            log.info("claimed build #%s of campaign #%s", build_id, campaign_id)
            ctx.submit_build(build_id)
    except Exception:
        log_failure(ctx.outage, log, "build dispatcher failed; retrying on its next tick")
    finally:
        ctx.dispatching = False


def run_build(ctx: JobContext, build_id: int) -> None:
    """Run (or resume) one claimed build; it stops between chunks when the term ends."""
    from store import builds

    try:
        status = builds.run_build(
            ctx.engine,
            build_id,
            worker=ctx.holder,
            should_stop=ctx.should_stop,
            **ctx.build_options,
        )
        log.info("build #%s %s", build_id, status)
    except Exception:
        log_failure(
            ctx.outage,
            log,
            "build #%s raised; it stays running until requeued",
            build_id,
            each=True,
        )
    finally:
        with ctx.lock:
            ctx.in_flight.pop(build_id, None)
        if ctx.acting():
            ctx.wake_dispatcher()


def wait_for_build(ctx: JobContext, build_id: int, poll: float = 0.1) -> str | None:
    """Wake the dispatcher and wait until `build_id` ends; None when the term ends first."""
    ctx.wake_dispatcher()
    while ctx.acting():
        with Session(ctx.engine) as session:
            status = session.get(AudienceBuild, build_id).status
        if status in ENDED_BUILD_STATUSES:
            return status
        ctx.stop_event.wait(poll)
    return None


# ----------------------------------------------------------------------------- segments


def refresh_segment(ctx: JobContext, segment_id: int) -> None:
    """A dynamic segment's scheduled refresh: set-based diff, R4 leavers, R2c builds."""
    if not ctx.acting():
        return
    from store import segments

    try:
        with transaction(ctx.engine) as session:
            segment = session.get(Segment, segment_id)
            if segment is None or segment.kind != "dynamic":
                return
            result = segments.refresh(session, ctx.actor, segment)
            name = segment.name
        log.info("segment %s refreshed: %s entered, %s left", name, result.entered, result.left)
        if result.entered:
            ctx.wake_dispatcher()  # incremental builds were queued (R2c)
    except StoreError as refusal:
        log.warning("segment #%s not refreshed: %s", segment_id, refusal)
    except Exception:
        log_failure(ctx.outage, log, "segment #%s refresh failed", segment_id, each=True)


# ----------------------------------------------------------------------------- mailings


def fire_mailing(ctx: JobContext, mailing_id: int, scheduled_for: datetime | None = None) -> None:
    """A mailing's job: broadcasts pass their send_at, regular mailings the current minute."""
    if not ctx.acting():
        return
    when = scheduled_for or mailing_runs.regular_fire_time(datetime.now(UTC))
    try:
        result = mailing_runs.fire(
            ctx.engine,
            mailing_id,
            when,
            actor=ctx.actor,
            sender=ctx.sender,
            run_expansion=lambda build_id: wait_for_build(ctx, build_id),
        )
        if result.outcome in ("not-sendable", "already-fired"):
            log.info("mailing #%s at %s: %s", mailing_id, when.isoformat(), result.reason)
    except Exception:
        log_failure(
            ctx.outage,
            log,
            "mailing #%s failed to fire for %s",
            mailing_id,
            when.isoformat(),
            each=True,
        )


def finish_unfinished_runs(ctx: JobContext, term_started: datetime) -> None:
    """Crash recovery: finish runs a previous scheduler claimed but never sent. Only runs
    claimed before this term started: a mailing job of this term may already have claimed
    its run and be waiting for its expansion build (R11), and finishing that run here too
    queued a second expansion build."""
    if not ctx.acting():
        return
    while True:  # once per term; a database that does not answer yet is asked again
        try:
            with Session(ctx.engine) as session:
                runs = store_mailings.unfinished_runs(session, claimed_before=term_started)
                run_ids = [run.id for run in runs]
            break
        except Exception:
            log_failure(ctx.outage, log, "could not look for unfinished mailing runs")
            if ctx.stop_event.wait(1.0) or not ctx.acting():
                return
    for run_id in run_ids:
        if not ctx.acting():
            return
        try:
            log.warning("finishing mailing run #%s left by a previous scheduler", run_id)
            mailing_runs.finish_run(
                ctx.engine,
                run_id,
                actor=ctx.actor,
                sender=ctx.sender,
                run_expansion=lambda build_id: wait_for_build(ctx, build_id),
            )
        except Exception:
            log_failure(ctx.outage, log, "mailing run #%s could not be finished", run_id, each=True)


# ----------------------------------------------------------------------------- events


def drain_events(ctx: JobContext) -> None:
    """R11b: process the event inbox in arrival order, batch by batch, while acting.

    Each batch's deliveries, suppressions and processed marks are one transaction
    (store.events.drain_batch), so a scheduler killed mid-drain leaves the batch
    unprocessed and the next holder processes it once: never twice.
    """
    if not ctx.acting():
        return
    from store import events

    try:
        result = events.drain(ctx.engine, ctx.actor, should_stop=lambda: not ctx.acting())
        if result.events:
            log.info(
                "processed %s events: %s delivered, %s suppressed",
                result.events,
                result.delivered,
                result.suppressed,
            )
    except Exception:
        log_failure(ctx.outage, log, "event drain failed; retrying on its next tick")
