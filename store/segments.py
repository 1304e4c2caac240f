"""Segments: static membership changes, dynamic refresh, and the campaign hooks (R3, R4, R12).

Membership is a set of *intervals* (`segment_member`): adding a profile opens a row
(`entered_at`, `entered_by`), removing it closes the open row (`left_at`, `left_by`).
Rows are never reopened or deleted, so the profile card derives every `entered_segment`
and `left_segment` event from them (R12).

Every operation is set-based: one `INSERT … SELECT` opens all newcomers, one
`UPDATE … WHERE` closes all leavers, and one timestamp stamps the whole operation. That
timestamp is what `store.audience.on_segment_left` uses to find the profiles that just
left, so active campaigns on the segment close their memberships at once (R4), while
`on_segment_entered` queues an incremental build for the newcomers (R2c). Draft
campaigns get nothing at campaign level (R3); completed ones are never touched (R8):
both are the hooks' business.

Profile filters are SQL boolean expressions over the table `profile` (a `sa.text()`
clause or a SQLAlchemy expression). They are trusted code from the store's callers
(imports, the demo); operator-typed rules go through `store.rules`, which never
interpolates text into SQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import audience, audit, rules
from store.actors import Actor
from store.db import keep_statistics_fresh
from store.errors import InvalidStateError, NotFoundError, ValidationError
from store.locations import is_sqlite
from store.models import (
    AudienceBuild,
    Profile,
    ProfileDatabase,
    Segment,
    SegmentMember,
    UTCDateTime,
    utcnow,
)
from store.names import check_name
from store.profiles import database_fields

MAX_REFRESH_SECONDS = 366 * 24 * 3600  # docs/cli.md: ranges of numeric arguments
ID_CHUNK = 5_000  # profile ids per statement (SQLite caps bound parameters)

profile_table = Profile.__table__
member_table = SegmentMember.__table__


@dataclass(frozen=True)
class RefreshResult:
    entered: int
    left: int
    builds: tuple[AudienceBuild, ...] = ()  # the incremental builds it queued (R2c)


# --------------------------------------------------------------------------- lookups


def get_segment(session: Session, name: str) -> Segment:
    segment = session.scalar(sa.select(Segment).where(Segment.name == name))
    if segment is None:
        raise NotFoundError(f"no segment named {name!r}")
    return segment


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(sa.select(Segment).order_by(Segment.name)))


def is_member(session: Session, segment: Segment, profile_id: int) -> bool:
    return (
        session.scalar(
            sa.select(SegmentMember.id).where(
                SegmentMember.segment_id == segment.id,
                SegmentMember.profile_id == profile_id,
                SegmentMember.left_at.is_(None),
            )
        )
        is not None
    )


# --------------------------------------------------------------------------- creation


@audit.operation("segment.create", "segment")
def create_segment(
    session: Session,
    actor: Actor,
    name: str,
    *,
    database: ProfileDatabase | None = None,
    rule: str | None = None,
    every_seconds: int | None = None,
    cron: str | None = None,
) -> Segment:
    """A static segment (no rule) or a dynamic one (rule over `database`'s fields).

    A static segment may hold profiles of several databases; a `database` given for it is
    recorded as its home database but does not restrict membership. A dynamic segment
    needs a database, and may have a refresh schedule: `every_seconds` (>= 1) or `cron`.
    """
    actor.require_write("create a segment")
    name = check_name("segment", name)
    if session.scalar(sa.select(Segment.id).where(Segment.name == name)) is not None:
        raise ValidationError(f"segment {name!r} already exists; pick another name")
    kind = "static"
    if rule is not None:
        if database is None:
            raise ValidationError(
                f"dynamic segment {name!r} needs a profile database: its rule is evaluated "
                "against that database's declared fields"
            )
        _compile_for(session, database.id, rule)  # raises ValidationError with the position
        kind = "dynamic"
    _validate_schedule(kind, every_seconds, cron)
    segment = Segment(
        name=name,
        kind=kind,
        database_id=database.id if database is not None else None,
        rule=rule.strip() if rule is not None else None,
        refresh_every_seconds=every_seconds,
        refresh_cron=cron,
    )
    session.add(segment)
    session.flush()
    audit.record(
        session,
        actor,
        "segment.create",
        "segment",
        segment.id,
        name,
        kind=kind,
        database=database.name if database is not None else None,
        rule=segment.rule,
        every_seconds=every_seconds,
        cron=cron,
    )
    return segment


def _validate_schedule(kind: str, every_seconds: int | None, cron: str | None) -> None:
    if every_seconds is None and cron is None:
        return
    if kind != "dynamic":
        raise ValidationError(
            "only a dynamic segment (one with a rule) has a refresh schedule; "
            "a static segment changes by import or explicit add/remove"
        )
    if every_seconds is not None and cron is not None:
        raise ValidationError("give either a refresh interval in seconds or a cron, not both")
    if every_seconds is not None and (
        isinstance(every_seconds, bool)
        or not isinstance(every_seconds, int)
        or not 1 <= every_seconds <= MAX_REFRESH_SECONDS
    ):
        raise ValidationError(
            "refresh interval must be a whole number of seconds from 1 to "
            f"{MAX_REFRESH_SECONDS:,} (366 days), not {every_seconds!r}"
        )
    if cron is not None:
        from store.mailings import validate_cron

        validate_cron(cron)


def _compile_for(session: Session, database_id: int, rule_text: str) -> sa.ColumnElement[bool]:
    fields = database_fields(session, database_id)
    return rules.compile_rule(rules.parse_rule(rule_text), fields)


# --------------------------------------------------------------------------- static changes


@dataclass(frozen=True)
class MembershipChange:
    """What one membership operation did, with the incremental builds it queued (R2c)."""

    added: int
    removed: int
    builds: tuple[AudienceBuild, ...] = ()


MEMBERSHIP_ACTIONS = ("add", "remove", "replace")


@dataclass(frozen=True)
class ProfileIds:
    """The profiles of a membership change as a table of distinct profile ids (column
    `profile_id`, its primary key: segment files, store.imports).

    "add" consumes it: the ids of current members are deleted from it, then the rest are
    inserted in id order (the order of segment_member's indexes; the table is filled in
    that order) with no per-row check against the members, which made SQLite write every
    new row to a temporary table first (the statement reads the table it inserts into):
    0.45 CPU-s per million rows.
    """

    table: str

    def profile_filter(self) -> sa.TextClause:
        return sa.text(f"id IN (SELECT profile_id FROM {self.table})")


def _change_action(segment: Segment, action: str | None = None, *_: Any, **kw: Any) -> str:
    return f"segment.{kw.get('action', action)}"


@audit.operation(_change_action, "segment")
def change_members_where(
    session: Session, actor: Actor, segment: Segment, action: str, profile_filter: Any
) -> MembershipChange:
    """add, remove or replace (make the members exactly) the profiles matching
    `profile_filter` (SQL over `profile`) in a static segment."""
    if action not in MEMBERSHIP_ACTIONS:
        raise ValueError(f"action must be one of {MEMBERSHIP_ACTIONS}, not {action!r}")
    verb = {"add": "add profiles to", "remove": "remove profiles from"}.get(
        action, "replace the members of"
    )
    _require_static(actor, segment, verb)
    _lock(session, segment)
    now = utcnow()
    ids = profile_filter if isinstance(profile_filter, ProfileIds) else None
    matches = ids.profile_filter() if ids else _as_filter(profile_filter)
    added = removed = 0
    if action == "add" and ids:
        added = _open_ids(session, segment, ids, now, actor)
    elif action == "add":
        added = _open(session, segment, matches, now, actor)
    elif action == "remove":
        removed = _close_matching(session, segment, matches, now, actor)
        if removed:
            _notify_left(session, segment, now, actor)
    else:
        added, removed = _apply_diff(session, actor, segment, matches, now)
    queued = _finish(
        session, actor, segment, f"segment.{action}", now, added=added, removed=removed
    )
    return MembershipChange(added, removed, tuple(queued))


def add_profiles_where(
    session: Session, actor: Actor, segment: Segment, profile_filter: Any
) -> int:
    """Add every profile matching `profile_filter` (SQL over `profile`); members stay as is."""
    return change_members_where(session, actor, segment, "add", profile_filter).added


@audit.operation("segment.add", "segment")
def add_profiles(
    session: Session, actor: Actor, segment: Segment, profile_ids: Iterable[int]
) -> int:
    """Add the profiles with these ids; ids already in the segment are no-ops."""
    _require_static(actor, segment, "add profiles to")
    _lock(session, segment)
    now = utcnow()
    added = 0
    for chunk in _chunks(profile_ids):
        added += _open(session, segment, profile_table.c.id.in_(chunk), now, actor)
    _finish(session, actor, segment, "segment.add", now, added=added, removed=0)
    return added


def remove_profiles_where(
    session: Session, actor: Actor, segment: Segment, profile_filter: Any
) -> int:
    """Remove the members matching `profile_filter`; non-members are no-ops."""
    return change_members_where(session, actor, segment, "remove", profile_filter).removed


@audit.operation("segment.remove", "segment")
def remove_profiles(
    session: Session, actor: Actor, segment: Segment, profile_ids: Iterable[int]
) -> int:
    """Remove the members with these ids; ids not in the segment are no-ops."""
    _require_static(actor, segment, "remove profiles from")
    _lock(session, segment)
    now = utcnow()
    removed = 0
    for chunk in _chunks(profile_ids):
        removed += _close_matching(session, segment, profile_table.c.id.in_(chunk), now, actor)
    if removed:
        _notify_left(session, segment, now, actor)
    _finish(session, actor, segment, "segment.remove", now, added=0, removed=removed)
    return removed


def replace_profiles_where(
    session: Session, actor: Actor, segment: Segment, profile_filter: Any
) -> tuple[int, int]:
    """Make the members exactly the profiles matching `profile_filter`: (added, removed)."""
    change = change_members_where(session, actor, segment, "replace", profile_filter)
    return change.added, change.removed


# --------------------------------------------------------------------------- dynamic refresh


@audit.operation("segment.refresh", "segment")
def refresh(session: Session, actor: Actor, segment: Segment) -> RefreshResult:
    """Recompute a dynamic segment from its rule with a set-based diff.

    Leavers are closed by one UPDATE and newcomers opened by one INSERT … SELECT, both
    stamped with the same time. Only profiles of the segment's database are considered.
    """
    actor.require_write("refresh a segment")
    started = time.perf_counter()
    if segment.kind != "dynamic":
        raise InvalidStateError(
            f"segment {segment.name!r} is static: its members change only by import or "
            "explicit add/remove, so there is nothing to refresh"
        )
    if segment.database_id is None or not segment.rule:
        raise InvalidStateError(f"dynamic segment {segment.name!r} has no database or rule")
    _lock(session, segment)
    matches = sa.and_(
        profile_table.c.database_id == segment.database_id,
        _compile_for(session, segment.database_id, segment.rule),
    )
    now = utcnow()
    entered, left = _apply_diff(session, actor, segment, matches, now)
    segment.last_refreshed_at = now
    segment.last_refresh_entered, segment.last_refresh_left = entered, left
    session.add(segment)
    queued = _finish(session, actor, segment, "segment.refresh", now, added=entered, removed=left)
    # Issue 13 §6: how long it took (the diff, the R4 leavers, the R2c builds queued).
    segment.last_refresh_seconds = round(time.perf_counter() - started, 3)
    session.add(segment)
    session.flush()
    return RefreshResult(entered=entered, left=left, builds=tuple(queued))


# --------------------------------------------------------------------------- internals


def _require_static(actor: Actor, segment: Segment, verb: str) -> None:
    actor.require_write(f"{verb} a segment")
    if segment.kind != "static":
        raise InvalidStateError(
            f"segment {segment.name!r} is dynamic: its members follow its rule "
            f"({segment.rule}); change the rule's data or refresh it instead"
        )


def _lock(session: Session, segment: Segment) -> None:
    """Serialise membership changes of one segment (row lock on PostgreSQL; SQLite has a
    single writer anyway), so each operation's diff and its one timestamp stay exact even
    when the scheduler refreshes while an operator edits."""
    session.execute(sa.select(Segment.id).where(Segment.id == segment.id).with_for_update())


def _as_filter(profile_filter: Any) -> sa.ColumnElement[bool]:
    if isinstance(profile_filter, str):
        return sa.text(profile_filter)
    return profile_filter


def _chunks(profile_ids: Iterable[int]) -> Iterable[list[int]]:
    ids = sorted({int(i) for i in profile_ids})
    for start in range(0, len(ids), ID_CHUNK):
        yield ids[start : start + ID_CHUNK]


def _open_member_exists(segment_id: int) -> sa.Exists:
    return (
        sa.select(sa.literal(1))
        .select_from(member_table)
        .where(
            member_table.c.segment_id == segment_id,
            member_table.c.profile_id == profile_table.c.id,
            member_table.c.left_at.is_(None),
        )
        .exists()
    )


def _open(session: Session, segment: Segment, matches: Any, now: datetime, actor: Actor) -> int:
    """INSERT … SELECT an open interval for each matching profile not yet a member."""
    newcomers = _interval_rows(segment, profile_table.c.id, now, actor)
    return _insert_intervals(session, newcomers.where(matches, ~_open_member_exists(segment.id)))


def _open_ids(
    session: Session, segment: Segment, ids: ProfileIds, now: datetime, actor: Actor
) -> int:
    """`_open` for a ProfileIds table: drop the current members from it, insert the rest."""
    session.execute(
        sa.text(
            f"DELETE FROM {ids.table} WHERE profile_id IN (SELECT profile_id "
            "FROM segment_member WHERE segment_id = :segment AND left_at IS NULL)"
        ),
        {"segment": segment.id},
    )
    profile_id = sa.column("profile_id")
    newcomers = _interval_rows(segment, profile_id, now, actor).select_from(sa.table(ids.table))
    if is_sqlite(session):  # its key: the rowid order, for free
        newcomers = newcomers.order_by(profile_id)
    # PostgreSQL reads the table as it was filled, in id order (store.imports._collect_ids):
    # a sequential scan of a temporary table starts at its first page (no synchronised
    # scans on local buffers); its key in order would visit every row's page too (0.2 s).
    return _insert_intervals(session, newcomers)


def _interval_rows(
    segment: Segment, profile_id: sa.ColumnElement[int], now: datetime, actor: Actor
) -> sa.Select:
    """The columns of a new open interval (_insert_intervals) for each `profile_id`."""
    return sa.select(
        sa.literal(segment.id, sa.Integer),
        profile_id,
        sa.literal(now, UTCDateTime()),
        sa.literal(actor.user, sa.String),
    )


def _insert_intervals(session: Session, rows: sa.Select) -> int:
    """INSERT … SELECT the open intervals `rows` gives; returns how many."""
    insert = sa.insert(member_table).from_select(
        ["segment_id", "profile_id", "entered_at", "entered_by"], rows
    )
    # SQLAlchemy reports -1 for INSERT … SELECT on psycopg unless asked to keep the count.
    result = session.execute(insert.execution_options(preserve_rowcount=True))
    return max(result.rowcount or 0, 0)


def _close(session: Session, segment: Segment, leaving: Any, now: datetime, actor: Actor) -> int:
    """Close the open intervals of the segment whose profile_id satisfies `leaving`."""
    result = session.execute(
        sa.update(member_table)
        .where(
            member_table.c.segment_id == segment.id,
            member_table.c.left_at.is_(None),
            leaving,
        )
        .values(left_at=sa.literal(now, UTCDateTime()), left_by=actor.user)
    )
    return max(result.rowcount or 0, 0)


def _member_matches(matches: Any) -> sa.Exists:
    """EXISTS: the member's profile satisfies `matches` (a correlated semi-join)."""
    return (
        sa.select(sa.literal(1))
        .select_from(profile_table)
        .where(profile_table.c.id == member_table.c.profile_id, matches)
        .exists()
    )


def _close_matching(
    session: Session, segment: Segment, matches: Any, now: datetime, actor: Actor
) -> int:
    return _close(session, segment, _member_matches(matches), now, actor)


def _apply_diff(
    session: Session, actor: Actor, segment: Segment, matches: Any, now: datetime
) -> tuple[int, int]:
    """Close members that no longer match, then open matching non-members."""
    # NOT EXISTS, not NOT IN: PostgreSQL plans it as an anti-join whatever the size (a
    # NOT IN subquery larger than work_mem degrades to a nested loop). A filter that is
    # NULL for a profile counts as "does not match", the same as in the INSERT below.
    removed = _close(session, segment, ~_member_matches(matches), now, actor)
    if removed:
        _notify_left(session, segment, now, actor)
    added = _open(session, segment, matches, now, actor)
    return added, removed


def _finish(
    session: Session,
    actor: Actor,
    segment: Segment,
    action: str,
    now: datetime,
    *,
    added: int,
    removed: int,
) -> list[AudienceBuild]:
    """Counters, version, the newcomers' hook and the audit entry of one operation;
    returns the incremental builds queued for the newcomers (R2c)."""
    if added or removed:
        # Relative update in SQL: concurrent transactions never lose a count.
        session.execute(
            sa.update(Segment)
            .where(Segment.id == segment.id)
            .values(
                member_count=Segment.member_count + added - removed,
                version=Segment.version + 1,
            )
        )
    session.flush()
    keep_statistics_fresh(session, "segment_member", added + removed)
    session.refresh(segment)
    queued = _notify_entered(session, segment, actor) if added else []
    if not (added or removed) and actor.role == "system":
        # A scheduled refresh that found nothing to do is not worth an audit row every
        # few seconds; last_refreshed_at already says it ran.
        session.flush()
        return queued
    audit.record(
        session,
        actor,
        action,
        "segment",
        segment.id,
        segment.name,
        added=added,
        removed=removed,
        at=now.isoformat(),
        builds=[build.id for build in queued],
    )
    session.flush()
    return queued


def _notify_left(session: Session, segment: Segment, left_at: datetime, actor: Actor) -> None:
    """R4: active campaigns on the segment close the memberships of these leavers at once."""
    session.flush()
    audience.on_segment_left(session, segment, left_at, actor)


def _notify_entered(session: Session, segment: Segment, actor: Actor) -> list[AudienceBuild]:
    """R2c: active campaigns on the segment queue an incremental build of the newcomers."""
    session.flush()
    return list(audience.on_segment_entered(session, segment, actor) or [])
