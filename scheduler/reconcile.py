"""Reconcile: make the APScheduler jobs match the desired state in the database.

The database is the only desired state. Every `reconcile_interval` (1 s) the reconciler
reads the dynamic segments and time-scheduled mailings (cheap: a few columns per row)
and compares each one's *schedule key* (trigger kind and expression, paused or not) with
what it last applied. A difference, whoever made it (console, CLI, another host), turns
into an `add_job(..., replace_existing=True)`; a row that no longer wants a job has its
job removed. The key holds the schedule columns themselves rather than only `version`,
so a writer that forgets to bump a version is still noticed.

Pausing keeps the job (added with `next_run_time=None`, APScheduler's paused job);
resuming re-adds it, which yields the misfire policy of scheduler/mailings.py: a
broadcast's trigger is `max(send_at, now)` (fires once), a regular mailing's cron
computes its next occurrence after now (missed ones are skipped).

Jobs are rebuilt from the database at every start instead of being persisted in
APScheduler's SQLAlchemy job store: there is no second copy of the schedule to drift
from the tables the console edits, no pickled job arguments to break on upgrades, and a
standby taking over needs nothing but the tables. What must survive a restart lives in
the tables: `send_at`/`cron`, a segment's `last_refreshed_at` (the next interval refresh
is due `every` seconds after it), and the runs (a broadcast with a run never fires again).
The scheduler writes each mailing's next fire time back to `mailing.next_run_at`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlmodel import Session

from scheduler import jobs
from scheduler import mailings as mailing_runs
from store import mailings as store_mailings
from store.db import transaction
from store.models import Segment
from store.states import SegmentKind

log = logging.getLogger("scheduler.reconcile")

#: A broadcast's one-shot job that ran without the mailing being sent (e.g. it failed)
#: is tried again after this delay.
BROADCAST_RETRY = timedelta(seconds=5)
REGULAR_MISFIRE_GRACE = 30  # seconds; < 60 so a fire always belongs to its own minute


@dataclass
class JobSpec:
    job_id: str
    key: tuple
    paused: bool
    job_kwargs: Callable[[datetime], dict[str, Any]]  # earliest run -> add_job kwargs
    mailing_id: int | None = None
    stored_next_run_at: datetime | None = None


class Reconciler:
    """Owns the segment and mailing jobs of one scheduler term."""

    def __init__(self, scheduler: BaseScheduler, ctx: jobs.JobContext) -> None:
        self.scheduler = scheduler
        self.ctx = ctx
        self.applied: dict[str, tuple[tuple, bool]] = {}
        self.failed: dict[str, tuple[tuple, bool]] = {}

    # -------------------------------------------------------------- desired state

    def desired(self, session: Session, now: datetime) -> dict[str, JobSpec]:
        specs: dict[str, JobSpec] = {}
        for segment in session.execute(
            sa.select(
                Segment.id,
                Segment.refresh_every_seconds,
                Segment.refresh_cron,
                Segment.last_refreshed_at,
                Segment.created_at,
            ).where(
                Segment.kind == SegmentKind.DYNAMIC,
                sa.or_(
                    Segment.refresh_every_seconds.is_not(None), Segment.refresh_cron.is_not(None)
                ),
            )
        ):
            spec = self._segment_spec(*segment)
            specs[spec.job_id] = spec
        for schedule in store_mailings.mailing_schedules(session):
            plan = mailing_runs.plan_mailing(schedule)
            job_id = f"mailing:{schedule.mailing_id}"
            if plan is None:
                if schedule.next_run_at is not None:  # no job, so no next run to show
                    specs[job_id] = JobSpec(
                        job_id, ("none",), True, None, schedule.mailing_id, schedule.next_run_at
                    )
                continue
            specs[job_id] = JobSpec(
                job_id,
                plan.key,
                plan.paused,
                lambda earliest, plan=plan, schedule=schedule: {
                    "func": jobs.fire_mailing,
                    "trigger": plan.trigger(earliest),
                    "args": (self.ctx, schedule.mailing_id, plan.scheduled_for),
                    "misfire_grace_time": None
                    if plan.key[0] == "broadcast"
                    else REGULAR_MISFIRE_GRACE,
                    "name": f"mailing {schedule.name}",
                },
                schedule.mailing_id,
                schedule.next_run_at,
            )
        return specs

    def _segment_spec(
        self,
        segment_id: int,
        every: int | None,
        cron: str | None,
        last_refreshed_at: datetime | None,
        created_at: datetime,
    ) -> JobSpec:
        job_id = f"segment:{segment_id}"
        if every:
            # Survives restarts: the next refresh is due `every` after the last one.
            def kwargs(earliest: datetime) -> dict[str, Any]:
                first = max((last_refreshed_at or created_at) + timedelta(seconds=every), earliest)
                return {
                    "func": jobs.refresh_segment,
                    "trigger": IntervalTrigger(seconds=every, start_date=first, timezone=UTC),
                    "next_run_time": first,
                    "args": (self.ctx, segment_id),
                    "name": f"refresh segment #{segment_id}",
                }

            return JobSpec(job_id, ("interval", every), False, kwargs)

        def cron_kwargs(earliest: datetime) -> dict[str, Any]:
            # A refresh the expression called for while no scheduler ran is made now, as an
            # interval's is (a CronTrigger alone skips it to the next time the expression
            # names, while the segments screen said "due").
            due = store_mailings.next_cron_time(cron, last_refreshed_at or created_at)
            caught_up = {"next_run_time": earliest} if due is not None and due <= earliest else {}
            return {
                "func": jobs.refresh_segment,
                "trigger": mailing_runs.cron_trigger(cron),
                "args": (self.ctx, segment_id),
                "name": f"refresh segment #{segment_id}",
                **caught_up,
            }

        return JobSpec(job_id, ("cron", cron), False, cron_kwargs)

    # -------------------------------------------------------------- apply

    def reconcile(self) -> None:
        if not self.ctx.acting():
            return
        now = datetime.now(UTC)
        with Session(self.ctx.engine) as session:
            specs = self.desired(session, now)
        wanted = {job_id for job_id, spec in specs.items() if spec.job_kwargs is not None}
        for job_id in list(self.applied):
            if job_id not in wanted:
                self._remove(job_id)
        for job_id in wanted:
            spec = specs[job_id]
            state = (spec.key, spec.paused)
            job = self.scheduler.get_job(job_id)
            if self.applied.get(job_id) == state and job is not None:
                continue
            earliest = now
            if self.applied.get(job_id) == state and not spec.paused:
                # A one-shot job ran but the mailing still wants to fire: try again soon.
                earliest = now + BROADCAST_RETRY
            if self.failed.get(job_id) == state:
                continue  # reported once; retried when the row changes
            try:
                kwargs = spec.job_kwargs(earliest)
                if spec.paused:
                    kwargs["next_run_time"] = None  # a paused mailing is a paused job
                self.scheduler.add_job(id=job_id, replace_existing=True, **kwargs)
            except Exception:
                # One bad row (e.g. a cron written around the store's validation) must not
                # keep the other jobs from following the database.
                log.exception("cannot schedule %s %s; fix the row to retry", job_id, spec.key)
                self.failed[job_id] = state
                continue
            self.failed.pop(job_id, None)
            log.info(
                "%s %s (%s)",
                "paused" if spec.paused else "scheduled",
                job_id,
                " ".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in spec.key),
            )
            self.applied[job_id] = state
        self._store_next_runs(specs)

    def _remove(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):  # a one-shot job that already ran
            self.scheduler.remove_job(job_id)
        self.applied.pop(job_id, None)
        log.info("removed %s", job_id)

    def _store_next_runs(self, specs: dict[str, JobSpec]) -> None:
        changes = []
        for job_id, spec in specs.items():
            if spec.mailing_id is None:
                continue
            job = self.scheduler.get_job(job_id) if spec.job_kwargs is not None else None
            next_run = getattr(job, "next_run_time", None) if job is not None else None
            if next_run is not None:
                next_run = next_run.astimezone(UTC)
            if next_run != spec.stored_next_run_at:
                changes.append((spec.mailing_id, next_run))
        if changes:
            with transaction(self.ctx.engine) as session:
                for mailing_id, next_run in changes:
                    store_mailings.set_next_run_at(session, mailing_id, next_run)
