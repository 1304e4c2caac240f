"""Segments at a glance (issue 13 §6): one read model for the segments screen (`g`) and
`segment show` / `segment list`.

The last refresh's entered and left counts are stored on the segment by the refresh
(revision 0010 filled them for earlier refreshes from the intervals, which a refresh
stamps with its one time, R12): no member scan, and no index an add must write. The
next refresh of an interval schedule is the last refresh plus the interval (due now when
it never ran); of a cron schedule, the expression's first time after the last refresh (or
the segment's creation), computed as the scheduler's CronTrigger fires it
(store.mailings.next_cron_time). Either may lie in the past when no scheduler ran: the
refresh is due, and a scheduler makes it as soon as it acts (scheduler/reconcile.py). The
last refresh's duration is stored by the refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store.errors import NotFoundError
from store.models import Campaign, ProfileDatabase, Segment


@dataclass(frozen=True)
class SegmentOverview:
    name: str
    kind: str  # static | dynamic
    database: str | None
    members: int
    rule: str | None
    every_seconds: int | None
    cron: str | None
    last_refreshed_at: datetime | None
    last_refresh_entered: int | None  # None: never refreshed
    last_refresh_left: int | None
    next_refresh_at: datetime | None
    last_refresh_seconds: float | None = None  # how long the last refresh took
    campaigns: list[str] = field(default_factory=list)  # campaigns built on it

    @property
    def schedule(self) -> str:
        if self.kind != "dynamic":
            return "static"
        if self.every_seconds:
            return f"every {_duration(self.every_seconds)}"
        if self.cron:
            return f"cron {self.cron}"
        return "manual"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "database": self.database,
            "rule": self.rule,
            "every_seconds": self.every_seconds,
            "cron": self.cron,
            "schedule": self.schedule,
            "members": self.members,
            "last_refreshed_at": _iso(self.last_refreshed_at),
            "last_refresh": None
            if self.last_refreshed_at is None
            else {
                "at": _iso(self.last_refreshed_at),
                "entered": self.last_refresh_entered,
                "left": self.last_refresh_left,
                "seconds": self.last_refresh_seconds,
            },
            "next_refresh_at": _iso(self.next_refresh_at),
            "campaigns": list(self.campaigns),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _duration(seconds: int) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _overview(
    session: Session, segment: Segment, databases: dict[int, str], campaigns: list[str]
) -> SegmentOverview:
    at = segment.last_refreshed_at
    next_at = None
    base = at or segment.created_at
    if segment.kind == "dynamic" and segment.refresh_every_seconds:
        next_at = base + timedelta(seconds=segment.refresh_every_seconds)
    elif segment.kind == "dynamic" and segment.refresh_cron:
        next_at = _next_cron(segment.refresh_cron, base)
    return SegmentOverview(
        name=segment.name,
        kind=segment.kind,
        database=databases.get(segment.database_id) if segment.database_id else None,
        members=segment.member_count,
        rule=segment.rule,
        every_seconds=segment.refresh_every_seconds,
        cron=segment.refresh_cron,
        last_refreshed_at=at,
        last_refresh_entered=segment.last_refresh_entered if at is not None else None,
        last_refresh_left=segment.last_refresh_left if at is not None else None,
        next_refresh_at=next_at,
        last_refresh_seconds=segment.last_refresh_seconds if at is not None else None,
        campaigns=campaigns,
    )


def _next_cron(expr: str, after: datetime) -> datetime | None:
    from store.mailings import next_cron_time  # the cron grammar of mailings and segments

    try:
        return next_cron_time(expr, after)
    except ValueError:  # refused at creation; a stored one is never bad, but never crash
        return None


def segment_overviews(session: Session) -> list[SegmentOverview]:
    """Every segment, by name."""
    databases = dict(session.execute(sa.select(ProfileDatabase.id, ProfileDatabase.name)).all())
    on_segment: dict[int, list[str]] = {}
    for segment_id, name in session.execute(
        sa.select(Campaign.segment_id, Campaign.name).order_by(Campaign.name)
    ):
        on_segment.setdefault(segment_id, []).append(name)
    segments = session.scalars(sa.select(Segment).order_by(Segment.name)).all()
    return [_overview(session, s, databases, on_segment.get(s.id, [])) for s in segments]


def segment_overview(session: Session, name: str) -> SegmentOverview:
    """One segment; NotFoundError when there is none of that name."""
    segment = session.scalar(sa.select(Segment).where(Segment.name == name))
    if segment is None:
        raise NotFoundError(f"no segment named {name!r}")
    databases = dict(session.execute(sa.select(ProfileDatabase.id, ProfileDatabase.name)).all())
    campaigns = list(
        session.scalars(
            sa.select(Campaign.name)
            .where(Campaign.segment_id == segment.id)
            .order_by(Campaign.name)
        )
    )
    return _overview(session, segment, databases, campaigns)
