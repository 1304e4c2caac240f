"""`--wait`: block until the audience builds a command queued have ended.

`--wait` never acts as a second scheduler. Each turn it looks at the scheduler lease
(store.lease, the same code as scheduler/service.py):

* another process holds a live lease: that scheduler runs the builds; the build rows are
  polled until they end;
* nobody does: this process takes the lease itself (`lease.try_acquire`, so a scheduler
  starting meanwhile waits as a standby instead of racing it), runs only the builds its
  own command queued (a build of theirs left `running` by a crashed process resumes from
  its checkpoint), renews the lease while it works, and releases it at once afterwards.

If the lease is lost while a build runs (it could not be renewed), the build stops at its
next chunk and goes back to the queue; the new holder runs it. A progress bar goes to
stderr only when stderr is a terminal.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

from console.cli.format import progress_text
from store.states import OPEN_BUILD_STATUSES, BuildStatus

POLL_SECONDS = 0.5
EXIT_OK, EXIT_UNEXPECTED = 0, 1


class ProgressBar:
    """A one-line progress bar on a stream, drawn only when the stream is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = False

    def show(self, label: str, processed: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = min(width, int(width * processed / total)) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{label} [{bar}] {progress_text(processed, total)}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def worker_name() -> str:
    return f"cli:{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    """Holds the scheduler lease for this process: renews it every ttl/3 in a thread;
    `lost` turns true when a renewal fails (someone else holds it now)."""

    def __init__(self, engine: Any, holder: str, ttl: float) -> None:
        self.engine, self.holder, self.ttl = engine, holder, ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="cli-wait-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from store import lease

        self._stop.set()
        self._thread.join()
        lease.release(self.engine, self.holder)

    def _renew(self) -> None:
        from store import lease

        while not self._stop.wait(self.ttl / 3):
            try:
                renewed = lease.heartbeat(self.engine, self.holder, self.ttl)
            except Exception:  # could not reach the database: try again next turn
                continue
            if not renewed:
                self.lost.set()
                return


def wait_for_builds(
    engine: Any, build_ids: Sequence[int], err: TextIO, *, settings: Any = None
) -> int:
    """Block until these builds (the ones a command queued) end.

    Returns 0 when all ended `done`, 1 when one failed or was cancelled. One line per
    build goes to `err`.
    """
    from store import builds, lease, views
    from store.settings import SchedulerSettings

    if not build_ids:
        return EXIT_OK
    settings = settings or SchedulerSettings()  # the caller's [scheduler] settings
    stale_after = settings.stale_after_delta
    holder = lease.make_holder(f"cli-wait-{uuid.uuid4().hex[:8]}")
    worker = worker_name()
    bar = ProgressBar(err)
    announced = False

    def on_progress(build_id: int, processed: int, total: int) -> None:
        bar.show(f"build #{build_id}", processed, total)

    while True:
        with views.read_session(engine) as session:
            rows = views.builds_by_id(session, list(build_ids))
            holding = lease.live_lease(session)
        open_rows = [b for b in rows if b.status in OPEN_BUILD_STATUSES]
        if not open_rows:
            break
        mine = holding is None or holding.holder == holder
        if mine and lease.try_acquire(engine, holder, settings.lease_ttl):
            ran = False
            with LeaseKeeper(engine, holder, settings.lease_ttl) as keeper:
                # Only this command's builds: one left running by a crashed process
                # resumes from its checkpoint; nothing else in the queue is touched.
                builds.requeue_abandoned(engine, stale_after, build_ids=build_ids)
                while not keeper.lost.is_set():
                    build_id = builds.claim_next_build(engine, worker, build_ids=build_ids)
                    if build_id is None:
                        break
                    ran = True
                    builds.run_build(
                        engine,
                        build_id,
                        worker=worker,
                        should_stop=keeper.lost.is_set,
                        on_progress=on_progress,
                    )
            if not ran:  # e.g. still running elsewhere, not yet abandoned: look again
                time.sleep(POLL_SECONDS)
            continue
        if not announced:
            bar.done()
            err.write("a scheduler holds the lease: waiting for it to run the builds\n")
            announced = True
        first = open_rows[0]
        bar.show(f"build #{first.id} {first.reason}", first.processed, first.total)
        time.sleep(POLL_SECONDS)
    bar.done()
    for b in rows:
        err.write(f"build #{b.id} ({b.reason}): {b.status}{': ' + b.error if b.error else ''}\n")
    return EXIT_OK if all(b.status == BuildStatus.DONE for b in rows) else EXIT_UNEXPECTED


def wait_for_events(
    engine: Any, up_to: int, actor: Any, err: TextIO, *, settings: Any = None
) -> int:
    """Block until every event up to inbox id `up_to` is processed (R11b).

    Like builds: a scheduler holding the lease drains them (polled); when nobody holds
    it, this process takes the lease and drains the inbox itself, in order, up to `up_to`
    (older events of others first, so the order holds), then releases it.
    """
    from store import events, lease, views
    from store.settings import SchedulerSettings

    settings = settings or SchedulerSettings()
    holder = lease.make_holder(f"cli-wait-{uuid.uuid4().hex[:8]}")
    announced = False
    while True:
        with views.read_session(engine) as session:
            pending = events.pending_count(session, up_to)
            holding = lease.live_lease(session)
        if not pending:
            return EXIT_OK
        mine = holding is None or holding.holder == holder
        if mine and lease.try_acquire(engine, holder, settings.lease_ttl):
            with LeaseKeeper(engine, holder, settings.lease_ttl) as keeper:
                events.drain(engine, actor, up_to=up_to, should_stop=keeper.lost.is_set)
            continue
        if not announced:
            err.write(
                f"a scheduler holds the lease: waiting for it to process {pending:,} events\n"
            )
            announced = True
        time.sleep(POLL_SECONDS)
