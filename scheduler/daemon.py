"""`campaign-console scheduler`: the scheduler as a foreground daemon.

Logs to stderr; SIGTERM and SIGINT stop it cleanly (running builds stop at their next
chunk boundary and go back to the queue with their checkpoint, the lease is released so
a standby takes over at once). Tunables come from the settings (store/settings.py):
`--pool-size`, then CC_SCHEDULER_* environment variables, then `[scheduler]` in the config
file.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from store.db import describe_url
from store.settings import SchedulerSettings

log = logging.getLogger("scheduler.daemon")


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # APScheduler logs every execution of the 1 s reconcile and 0.5 s dispatcher at INFO.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def run_daemon(
    db_url: str, settings: SchedulerSettings, *, connect_timeout: float | None = None
) -> int:
    """Run the scheduler in the foreground until SIGTERM or SIGINT; returns the exit code."""
    from scheduler.service import SchedulerService

    configure_logging()
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame) -> None:  # noqa: ANN001
        received.append(signum)
        stop.set()

    # Opened before the signal handlers: a missing workspace (issue 15.7) or an unreachable
    # server ends the command here, leaving the process's handlers as they were.
    options = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    service = SchedulerService(db_url, settings=settings, **options)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "scheduler daemon for %s: holder %s, pool size %s, lease ttl %ss",
        describe_url(db_url),
        service.holder,
        settings.pool_size,
        settings.lease_ttl,
    )
    try:
        service.start()
        while not stop.wait(1.0):
            pass
        log.info("received %s; shutting down", signal.Signals(received[0]).name)
    finally:
        service.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
