"""Read model of the scheduler and its builds, for the console header, the builds screen
and the CLI (`to_dict()` gives JSON-ready values, times in ISO 8601 with a timezone).

* health: who holds the lease (host, pid), when it was last heard from, whether it is
  alive (lease not expired);
* running and queued builds with campaign name, reason, processed/total, rate (profiles
  per second since the build started) and ETA; recently finished builds.

A few indexed queries over `scheduler_lease` and `audience_build`; nothing scans members.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store.catalog import AudienceBuild, Campaign, utcnow
from store.states import ENDED_BUILD_STATUSES, OPEN_BUILD_STATUSES, BuildStatus


@dataclass(frozen=True)
class SchedulerHealth:
    holder: str | None
    host: str | None
    pid: int | None
    acquired_at: datetime | None
    heartbeat_at: datetime | None
    expires_at: datetime | None
    heartbeat_age_seconds: float | None  # None: no scheduler ever ran on this database
    alive: bool

    def describe(self) -> str:
        """One line for headers: "alive · host:pid · 2s ago" or "NOT RUNNING (last …)"."""
        if self.alive:
            return f"alive · {self.host}:{self.pid} · heard {self.heartbeat_age_seconds:.0f}s ago"
        if self.heartbeat_at is None:
            return "NOT RUNNING"
        return (
            f"NOT RUNNING · last {self.host}:{self.pid} {_age_text(self.heartbeat_age_seconds)} ago"
        )


@dataclass(frozen=True)
class BuildProgress:
    id: int
    campaign: str
    reason: str
    status: str
    processed: int
    total: int
    requested_by: str
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    resumed_at: datetime | None  # when its current run began, if it was resumed
    worker: str | None
    mailing_id: int | None
    error: str | None
    rate: float | None  # profiles per second
    eta_seconds: float | None

    @property
    def percent(self) -> float | None:
        return round(100 * self.processed / self.total, 1) if self.total else None


@dataclass(frozen=True)
class SchedulerMonitor:
    at: datetime
    health: SchedulerHealth
    running: list[BuildProgress]
    queued: list[BuildProgress]
    recent: list[BuildProgress]

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {key: plain(item) for key, item in value.items()}
            if isinstance(value, list):
                return [plain(item) for item in value]
            return value

        data = plain(asdict(self))
        for group in ("running", "queued", "recent"):
            for row, build in zip(data[group], getattr(self, group), strict=True):
                row["percent"] = build.percent
        return data


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def scheduler_health(session: Session, now: datetime | None = None) -> SchedulerHealth:
    # Imported here: `campaign list` reads build progress from this module, not the lease
    # (issue 14 target 6: tests/test_architecture.py keeps store.lease out of it).
    from store.lease import current_lease

    now = now or utcnow()
    lease = current_lease(session)
    if lease is None:
        return SchedulerHealth(None, None, None, None, None, None, None, False)
    return SchedulerHealth(
        holder=lease.holder,
        host=lease.host,
        pid=lease.pid,
        acquired_at=lease.acquired_at,
        heartbeat_at=lease.heartbeat_at,
        expires_at=lease.expires_at,
        heartbeat_age_seconds=max(0.0, (now - lease.heartbeat_at).total_seconds()),
        alive=lease.expires_at > now,
    )


def progress_row(build: AudienceBuild, campaign: str, now: datetime) -> BuildProgress:
    """A build with its rate (profiles/s) and ETA as of `now`."""
    rate = eta = None
    # A resumed build counts its current run only (revision 0011): the time it spent
    # failed, waiting or crashed is not work.
    began = build.resumed_at or build.started_at
    before = (build.resumed_processed or 0) if build.resumed_at else 0
    placed = build.processed - before
    if began is not None and placed > 0:
        end = build.finished_at or (
            build.heartbeat_at if build.status != BuildStatus.RUNNING else now
        )
        seconds = ((end or now) - began).total_seconds()
        if seconds > 0:
            rate = placed / seconds
            if build.status == BuildStatus.RUNNING and build.total:
                eta = max(0.0, (build.total - build.processed) / rate)
    return BuildProgress(
        id=build.id,
        campaign=campaign,
        reason=build.reason,
        status=build.status,
        processed=build.processed,
        total=build.total,
        requested_by=build.requested_by,
        requested_at=build.requested_at,
        started_at=build.started_at,
        finished_at=build.finished_at,
        heartbeat_at=build.heartbeat_at,
        resumed_at=build.resumed_at,
        worker=build.worker,
        mailing_id=build.mailing_id,
        error=build.error,
        rate=rate,
        eta_seconds=eta,
    )


def builds_progress(
    session: Session, statuses: tuple[str, ...], *, limit: int | None = None, now: datetime
) -> list[BuildProgress]:
    finished = not set(statuses) & set(OPEN_BUILD_STATUSES)
    query = (
        sa.select(AudienceBuild, Campaign.name)
        .join(Campaign, Campaign.id == AudienceBuild.campaign_id)
        .where(AudienceBuild.status.in_(statuses))
        .order_by(
            *(
                (AudienceBuild.finished_at.desc(), AudienceBuild.id.desc())
                if finished
                else (AudienceBuild.id,)
            )
        )
    )
    if limit is not None:
        query = query.limit(limit)
    return [progress_row(build, name, now) for build, name in session.execute(query)]


def scheduler_monitor(
    session: Session, now: datetime | None = None, recent_limit: int = 10
) -> SchedulerMonitor:
    """Health, running, queued and recent builds in one snapshot."""
    now = now or utcnow()
    return SchedulerMonitor(
        at=now,
        health=scheduler_health(session, now),
        running=builds_progress(session, (BuildStatus.RUNNING,), now=now),
        queued=builds_progress(session, (BuildStatus.QUEUED,), now=now),
        recent=builds_progress(session, ENDED_BUILD_STATUSES, limit=recent_limit, now=now),
    )
