"""SchedulerService: the lease, and APScheduler jobs while holding it.

Why a `BackgroundScheduler` with thread pools: builds, refreshes and sends are synchronous
store calls (SQLAlchemy, set-based SQL) that run for seconds; threads let them run next
to each other and next to the console's event loop without blocking it, and the same
service runs unchanged embedded in the console or as the `campaign-console scheduler`
daemon. (An AsyncIOScheduler would only push the same blocking calls into threads.)

Life cycle: `start()` starts a lease thread. Without the lease the service is a standby
that polls for it. On acquiring the lease a *term* begins: abandoned builds are requeued
(crash recovery), a fresh BackgroundScheduler starts with

* `reconcile` every second: segment refresh and mailing jobs follow the database
  (scheduler/reconcile.py);
* `dispatch` every half second: claims queued builds, one per campaign, up to
  `pool_size` at a time, each run as a job on the `builds` executor;
* `events` every half second (the dispatch interval): drains the event inbox, firing
  trigger mailings (R11b, store/events.py);
* a one-off `recover` job finishing mailing runs a dead scheduler left claimed.

The lease thread renews the lease every ttl/3. A term ends when the lease is taken by
someone else or could not be renewed for 0.8 × ttl (before another scheduler may take
it): every job checks `acting()` and builds stop at their next chunk boundary, going
back to the queue with their checkpoint. `shutdown()` ends the term the same way, waits
for the jobs, then releases the lease so a standby takes over at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED

from scheduler import jobs
from scheduler.mailings import DatabaseSender, Sender
from scheduler.outage import Outage, log_failure
from scheduler.reconcile import Reconciler
from store import lease
from store.actors import system_actor
from store.db import DEFAULT_CONNECT_TIMEOUT, open_store, resolve_db_url
from store.settings import SchedulerSettings

log = logging.getLogger("scheduler.service")

FENCE_FRACTION = 0.8  # stop acting when the lease went unrenewed this share of its TTL

# The term's own periodic jobs: each runs again on its next tick, so a run still going when
# the tick comes (a long event drain, a slow reconcile) is normal work.
PERIODIC_JOBS = frozenset({"reconcile", "dispatch", "events"})


class QuietOverlaps(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances reached" WARNING
    for PERIODIC_JOBS: a large events import logged it twice a second for as long as it
    drained, burying the journal. A mailing's skipped run is still told."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        overlap = str(record.msg).startswith('Execution of job "%s" skipped')
        return not (overlap and getattr(job, "id", None) in PERIODIC_JOBS)


logging.getLogger("apscheduler.scheduler").addFilter(QuietOverlaps())


class _BackgroundScheduler(BackgroundScheduler):
    """APScheduler 3.11 races its own shutdown: `shutdown()` marks the scheduler stopped
    before taking the job-store lock, so a pass of the loop in progress fails to remove a
    one-shot job it just ran (JobLookupError, killing the loop thread noisily). The
    scheduler is stopping anyway, so that error is expected then and only then."""

    def _process_jobs(self):  # noqa: ANN202
        try:
            return super()._process_jobs()
        except JobLookupError:
            if self.state == STATE_STOPPED:
                return None
            raise


class _PoolExecutor(BasePoolExecutor):
    """APScheduler's thread-pool executor over a pool the service keeps, so that it can
    wait for the running jobs itself (SchedulerService._shutdown_scheduler)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        super().__init__(pool)


@dataclass
class _Term:
    """One stretch of holding the lease."""

    number: int
    last_renewed: float  # monotonic time just before the last successful renewal
    fence: float
    ended: bool = False
    scheduler: BackgroundScheduler | None = None
    ctx: jobs.JobContext | None = None
    pools: list[ThreadPoolExecutor] = field(default_factory=list)  # the jobs' threads
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def acting(self) -> bool:
        return not self.ended and time.monotonic() - self.last_renewed < self.fence


class SchedulerService:
    """Runs the scheduler for one database while (and only while) it holds the lease."""

    def __init__(
        self,
        db_url: str | None = None,
        *,
        pool_size: int = 2,
        holder: str | None = None,
        settings: SchedulerSettings | None = None,
        sender: Sender | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        **overrides,
    ) -> None:
        self.db_url = resolve_db_url(db_url)
        # A copy: overrides must not leak into the caller's settings object.
        self.settings = replace(settings) if settings else SchedulerSettings(pool_size=pool_size)
        for name, value in overrides.items():
            if not hasattr(self.settings, name):
                raise TypeError(f"unknown scheduler setting {name!r}")
            setattr(self.settings, name, value)
        if settings is None:
            self.settings.pool_size = pool_size
        self.settings.validate()
        self.holder = holder or lease.make_holder(uuid.uuid4().hex[:8])
        self.sender = sender or DatabaseSender()
        self.actor = system_actor("scheduler")
        # No statement timeout: builds and imports take as long as they take (issue 15.6).
        self.engine = open_store(self.db_url, connect_timeout=connect_timeout)
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._term: _Term | None = None
        self._terms = 0
        self._thread: threading.Thread | None = None
        self._standby_logged = False
        self.outage = Outage(self.engine)  # said once in the log (scheduler/outage.py)
        self._lease_call_started: float | None = None  # a lease query in flight since

    # ------------------------------------------------------------------ public

    def start(self) -> SchedulerService:
        """Start the lease thread (non-blocking): standby until the lease is ours."""
        if self._thread is not None:
            raise RuntimeError("scheduler service already started")
        self._thread = threading.Thread(
            target=self._lease_loop, name="scheduler-lease", daemon=True
        )
        self._thread.start()
        threading.Thread(
            target=self._watch_lease, name="scheduler-lease-watch", daemon=True
        ).start()
        log.info("scheduler %s started on %s", self.holder, self.engine.url.render_as_string())
        return self

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop acting: builds stop at their next chunk, then release the lease.

        Waits up to `timeout` seconds for running jobs; a job still running then finishes
        its chunk on its own and hands its build back to the queue.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._end_term("shutdown", release=True, timeout=remaining)
        self.engine.dispose()
        log.info("scheduler %s stopped", self.holder)

    @property
    def is_leader(self) -> bool:
        term = self._term
        return term is not None and term.acting()

    @property
    def state(self) -> str:
        """ "acting" (holds the lease), "standby" or "stopped"."""
        if self._stopping.is_set() or self._thread is None:
            return "stopped"
        return "acting" if self.is_leader else "standby"

    def wait_until_acting(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_leader:
                return True
            self._stopping.wait(0.05)
        return self.is_leader

    def jobs(self) -> list:
        """The APScheduler jobs of the current term (empty when not acting)."""
        term = self._term
        if term is None or term.scheduler is None:
            return []
        return term.scheduler.get_jobs()

    def get_job(self, job_id: str):
        term = self._term
        if term is None or term.scheduler is None:
            return None
        return term.scheduler.get_job(job_id)

    def in_flight_builds(self) -> dict[int, int]:
        term = self._term
        if term is None or term.ctx is None:
            return {}
        with term.ctx.lock:
            return dict(term.ctx.in_flight)

    # ------------------------------------------------------------------ lease

    def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                interval = self._lease_step()
            except Exception:  # never let the lease thread die: a dead one would fence us out
                log.exception("lease step failed; stepping down and retrying")
                self._end_term("internal error", release=False)
                interval = min(self.settings.lease_ttl / 3, 1.0)
            self._stopping.wait(interval)

    def _watch_lease(self) -> None:
        """Say in the log when a lease query has had no answer for a TTL (a frozen server,
        a network that drops packets, a lock someone holds on the lease): the lease thread
        waits in it and cannot, and the term's fence has stopped the jobs by then."""
        while not self._stopping.wait(1.0):
            started = self._lease_call_started
            if started is not None:
                waited = time.monotonic() - started
                if waited >= self.settings.lease_ttl:
                    self.outage.stalled("the lease query", waited)

    def _lease_step(self) -> float:
        """One turn of the lease thread; returns the seconds to wait before the next."""
        ttl = self.settings.lease_ttl
        term = self._term
        before = time.monotonic()
        if term is None:
            self._lease_call_started = before
            try:
                acquired: bool | None = lease.try_acquire(self.engine, self.holder, ttl)
                self.outage.reached()
            except Exception:
                log_failure(self.outage, log, "could not reach the database for the lease")
                acquired = None  # unknown: not "another scheduler holds it"
            finally:
                self._lease_call_started = None
            if acquired and not self._stopping.is_set():
                self._standby_logged = False
                self._begin_term(before)
            elif acquired is False and not self._standby_logged:
                self._standby_logged = True
                log.info("standby: another scheduler holds the lease; waiting for it")
            interval = min(ttl / 3, 1.0)
        else:
            self._lease_call_started = before
            try:
                renewed: bool | None = lease.heartbeat(self.engine, self.holder, ttl)
                self.outage.reached()
            except Exception:
                log_failure(self.outage, log, "could not renew the lease")
                renewed = None
            finally:
                self._lease_call_started = None
            if renewed:
                term.last_renewed = before
            elif renewed is False:
                self._end_term("another scheduler holds the lease", release=False)
            if self._term is not None and not self._term.acting():
                self._end_term("the lease could not be renewed in time", release=False)
            interval = ttl / 3
        return interval

    def _begin_term(self, renewed_at: float) -> None:
        s = self.settings
        term_started = datetime.now(UTC)  # runs claimed from now on are this term's own
        with self._lock:
            self._terms += 1
            term = _Term(self._terms, renewed_at, FENCE_FRACTION * s.lease_ttl)
            pools = {
                "default": ThreadPoolExecutor(s.mailing_threads),
                "builds": ThreadPoolExecutor(s.pool_size),
            }
            term.pools = list(pools.values())
            scheduler = _BackgroundScheduler(
                timezone=UTC,
                executors={name: _PoolExecutor(pool) for name, pool in pools.items()},
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            )
            build_options = {}
            if s.build_chunk_size:
                build_options["chunk_size"] = s.build_chunk_size
            ctx = jobs.JobContext(
                engine=self.engine,
                holder=self.holder,
                actor=self.actor,
                sender=self.sender,
                pool_size=s.pool_size,
                stale_after=s.stale_after_delta,
                acting=term.acting,
                wake_dispatcher=lambda: self._wake_dispatcher(term),
                submit_build=lambda build_id: self._submit_build(term, build_id),
                build_options=build_options,
                build_chunk_pause=s.build_chunk_pause,
                outage=self.outage,
            )
            ctx.reconciler = Reconciler(scheduler, ctx)
            term.scheduler, term.ctx = scheduler, ctx
            self._term = term
        log.info("scheduler %s holds the lease (term %s)", self.holder, term.number)
        try:
            jobs.requeue_abandoned(ctx)  # crash recovery before the first claim
        except Exception:
            log_failure(
                self.outage, log, "could not requeue abandoned builds; the dispatcher retries"
            )
        now = datetime.now(UTC)
        scheduler.add_job(
            jobs.reconcile,
            "interval",
            seconds=s.reconcile_interval,
            args=(ctx,),
            id="reconcile",
            name="reconcile jobs with the database",
            next_run_time=now,
        )
        scheduler.add_job(
            jobs.dispatch_builds,
            "interval",
            seconds=s.dispatch_interval,
            args=(ctx,),
            id="dispatch",
            name="dispatch audience builds",
            next_run_time=now,
        )
        scheduler.add_job(
            jobs.drain_events,
            "interval",
            seconds=s.dispatch_interval,
            args=(ctx,),
            id="events",
            name="process trigger events (R11b)",
            next_run_time=now,
        )
        scheduler.add_job(
            jobs.finish_unfinished_runs,
            args=(ctx, term_started),
            id="recover",
            name="recover mailing runs",
        )
        scheduler.start()

    def _end_term(self, reason: str, *, release: bool, timeout: float | None = None) -> None:
        with self._lock:
            term, self._term = self._term, None
        if term is None:
            return
        term.ended = True
        term.ctx.stop_event.set()
        log.log(
            logging.INFO if release else logging.WARNING,
            "scheduler %s stops acting (term %s): %s",
            self.holder,
            term.number,
            reason,
        )
        if not release:  # lost the lease: let the jobs wind down on their own
            with contextlib.suppress(SchedulerNotRunningError):
                term.scheduler.shutdown(wait=False)
            return
        stopper = threading.Thread(
            target=self._shutdown_scheduler, args=(term,), name="scheduler-stop", daemon=True
        )
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("jobs still running after %ss; releasing the lease anyway", timeout)
        try:
            lease.release(self.engine, self.holder)
        except Exception:
            log_failure(self.outage, log, "could not release the lease; it expires on its own")

    @staticmethod
    def _shutdown_scheduler(term: _Term) -> None:
        """Stop the scheduler, then wait for its running jobs. Not `shutdown(wait=True)`:
        APScheduler 3.11 waits for them while it holds its job-store lock, and a running
        job that calls the scheduler (reconcile's get_job, a build's submission) waits
        for that lock: neither ever ended, and the process then hung at exit."""
        with contextlib.suppress(SchedulerNotRunningError):
            term.scheduler.shutdown(wait=False)
        for pool in term.pools:
            pool.shutdown(wait=True)

    def _wake_dispatcher(self, term: _Term) -> None:
        if not term.acting() or term.ctx.dispatching:
            return  # a running dispatcher looks again before it returns
        with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
            term.scheduler.modify_job("dispatch", next_run_time=datetime.now(UTC))

    def _submit_build(self, term: _Term, build_id: int) -> None:
        try:
            term.scheduler.add_job(
                jobs.run_build,
                args=(term.ctx, build_id),
                id=f"build:{build_id}",
                name=f"audience build #{build_id}",
                executor="builds",
                misfire_grace_time=None,
                replace_existing=True,
            )
        except SchedulerNotRunningError:
            # The term ended between claim and start: the build stays claimed until the
            # next holder requeues it (stale heartbeat), then resumes from its checkpoint.
            with term.ctx.lock:
                term.ctx.in_flight.pop(build_id, None)
