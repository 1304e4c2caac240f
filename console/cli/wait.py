"""`--wait`: block until the audience builds a command queued have ended.

No scheduler holds the lease (store.lease.live_lease): the builds run here, in the calling
process, through store.builds.run_pending. A scheduler holds it: the build rows are polled
until they end; if the scheduler goes away meanwhile, what is left runs here. A progress
bar goes to stderr only when stderr is a terminal.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from console.cli.format import progress_text
from store.states import OPEN_BUILD_STATUSES, BuildStatus

POLL_SECONDS = 0.5
# A build `running` with no heartbeat for this long, while no scheduler is alive, was left
# by a crashed process: it goes back to the queue (from its checkpoint) and runs here.
ABANDONED_AFTER = timedelta(seconds=60)
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


def _open_build_ids(engine: Engine, campaign_ids: Sequence[int]) -> list[int]:
    from store.models import AudienceBuild

    if not campaign_ids:
        return []
    with Session(engine) as session:
        return list(
            session.scalars(
                sa.select(AudienceBuild.id)
                .where(
                    AudienceBuild.campaign_id.in_(list(campaign_ids)),
                    AudienceBuild.status.in_(OPEN_BUILD_STATUSES),
                )
                .order_by(AudienceBuild.id)
            )
        )


def _builds(engine: Engine, build_ids: Sequence[int]) -> list[Any]:
    from store.models import AudienceBuild

    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.scalars(
                sa.select(AudienceBuild)
                .where(AudienceBuild.id.in_(list(build_ids)))
                .order_by(AudienceBuild.id)
            )
        )


def _scheduler_alive(engine: Engine) -> bool:
    from store import lease

    with Session(engine) as session:
        return lease.live_lease(session) is not None


def wait_for_builds(engine: Engine, campaign_ids: Sequence[int], err: TextIO) -> int:
    """Block until the queued/running builds of these campaigns end.

    Returns 0 when all ended `done`, 1 when one failed or was cancelled. One line per
    build goes to `err`.
    """
    from store import builds

    build_ids = _open_build_ids(engine, campaign_ids)
    if not build_ids:
        return EXIT_OK
    bar = ProgressBar(err)
    announced = False
    worker = worker_name()

    def on_progress(build_id: int, processed: int, total: int) -> None:
        bar.show(f"build #{build_id}", processed, total)

    while True:
        rows = _builds(engine, build_ids)
        open_rows = [b for b in rows if b.status in OPEN_BUILD_STATUSES]
        if not open_rows:
            break
        if not _scheduler_alive(engine):
            builds.requeue_abandoned(engine, ABANDONED_AFTER)
            builds.run_pending(engine, worker=worker, on_progress=on_progress)
            rows = _builds(engine, build_ids)
            open_rows = [b for b in rows if b.status in OPEN_BUILD_STATUSES]
            if not open_rows:
                break
        elif not announced:
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
