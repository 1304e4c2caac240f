"""A database outage in the scheduler's log: said once, not once per job and tick.

While the database cannot be reached (a PostgreSQL server stopped or restarting, the
network cut), every job of every tick fails the same way. Logged with a traceback each
time, fifteen seconds of outage wrote thousands of lines to the service's journal and
buried what the operator needs: that the database is unreachable, why, since when, and
when it came back. `Outage` says the first failure as one WARNING line (which server and
why, store.db.unreachable_problem), repeats it once a minute while it lasts, and says how
long it lasted when the lease thread reaches the database again. A lease call that gets
no answer at all is said by a watchdog (SchedulerService), since that thread cannot. Any other error is not
an outage: the caller logs it with its traceback, as before.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from sqlalchemy.engine import Engine

from store.db import unreachable_problem

log = logging.getLogger("scheduler.outage")

REMIND_EVERY = 60.0  # seconds between "still unreachable" lines


class Outage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._since: float | None = None
        self._said: float = 0.0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, what: str) -> bool:
        """Whether `exc` means the database cannot be reached (then it is logged here,
        once per outage and once a minute after); False for any other error."""
        problem = unreachable_problem(self.engine, exc)
        if problem is None:
            return False
        now = time.monotonic()
        with self._lock:
            first = self._since is None
            if first:
                self._since = now
            remind = first or now - self._said >= REMIND_EVERY
            if remind:
                self._said = now
            since = self._since
        if first:  # `what`: the first job that met it, e.g. "reconcile failed"
            met_by = what.split(";")[0]
            log.warning("database unreachable: %s; retrying (met by: %s)", problem, met_by)
        elif remind:
            log.warning("database still unreachable after %.0fs: %s", now - since, problem)
        else:
            log.debug("database unreachable (%s): %s", what, problem)
        return True

    def stalled(self, what: str, waited: float) -> None:
        """`what` has waited `waited` seconds for an answer (a frozen server, a network
        that drops packets, a lock someone holds): said once per outage."""
        now = time.monotonic()
        with self._lock:
            first = self._since is None
            if first:
                self._since = now - waited
                self._said = now
        if first:
            log.warning(
                "database not answering: %s has waited %.0fs; this scheduler does not act "
                "until it answers",
                what,
                waited,
            )

    def reached(self) -> None:
        """The database answered: end the outage, if there was one, saying how long."""
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("database answers again after %.0fs", time.monotonic() - since)


def log_failure(
    outage: Outage | None, logger: logging.Logger, message: str, *args, each: bool = False
) -> None:
    """In an `except` block: anything but an outage with its traceback
    (`logger.exception(message, *args)`). An outage is said once (Outage.failed); with
    `each`, for a failure that concerns one thing (a build, a mailing, a refresh), also
    one WARNING line per failure, without traceback, so what it did not do is on record."""
    exc = sys.exc_info()[1]
    if outage is not None and exc is not None and outage.failed(exc, message % args):
        if each:
            logger.warning("%s: the database is unreachable", message % args)
        return
    logger.exception(message, *args)
