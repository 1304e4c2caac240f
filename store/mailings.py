"""Mailings: creation, manual pause/resume, and the build-driven pause of R5/R6.

Paused state lives here, in the database; the scheduler only mirrors it into jobs.
A mailing is paused while `manual_paused` (an operator's pause) or `paused_by_build_id`
(an LCG build running, R5/R6) is set. Ending a build clears only its own pause, so a
manual pause survives any build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import audit
from store.actors import Actor
from store.errors import InvalidStateError, NotFoundError, ValidationError
from store.models import (
    AudienceBuild,
    Campaign,
    Mailing,
    MailingRun,
    Segment,
    utcnow,
)
from store.names import check_name
from store.states import (
    SCHEDULED_MAILING_KINDS,
    BuildStatus,
    CampaignStatus,
    MailingKind,
    MailingRunStatus,
    MailingStatus,
    check_not_completed,
)


def get_mailing(session: Session, name: str) -> Mailing:
    mailing = session.scalar(sa.select(Mailing).where(Mailing.name == name))
    if mailing is None:
        raise NotFoundError(f"no mailing named {name!r}")
    return mailing


@audit.operation("mailing.create", "mailing")
def create_mailing(
    session: Session,
    actor: Actor,
    name: str,
    campaign: Campaign,
    kind: str,
    send_at: datetime | None = None,
    cron: str | None = None,
    segment: Segment | None = None,
    expand_audience: bool = False,
    event: str | None = None,
) -> Mailing:
    """A mailing of `campaign`. A trigger mailing names the event it fires on (R11b)."""
    actor.require_write("create a mailing")
    name = check_name("mailing", name)
    check_not_completed(campaign)
    if kind not in list(MailingKind):
        raise ValidationError(f"mailing kind must be one of {', '.join(MailingKind)}, not {kind!r}")
    if kind == MailingKind.BROADCAST and (send_at is None or cron):
        raise ValidationError("a broadcast mailing needs --at DATETIME and no cron")
    if kind == MailingKind.REGULAR:
        if not cron or send_at is not None:
            raise ValidationError("a regular mailing needs --cron EXPR and no --at")
        validate_cron(cron)
    if kind == MailingKind.TRIGGER:
        if send_at is not None or cron:
            raise ValidationError("a trigger mailing is event-driven: give neither --at nor --cron")
        if event is None:
            raise ValidationError("a trigger mailing needs --on EVENT: the event it fires on")
        event = check_name("trigger event", event)
    elif event is not None:
        raise ValidationError(f"only a trigger mailing fires on an event, not a {kind} mailing")
    if session.scalar(sa.select(Mailing.id).where(Mailing.name == name)):
        raise ValidationError(f"mailing {name!r} already exists")
    mailing = Mailing(
        name=name,
        campaign_id=campaign.id,
        kind=kind,
        send_at=send_at,
        cron=cron,
        segment_id=segment.id if segment else None,
        expand_audience=expand_audience,
        trigger_event=event,
    )
    # A mailing created while an LCG build runs starts paused like its siblings (R5).
    running = running_pausing_build(session, campaign.id)
    if running is not None and kind in SCHEDULED_MAILING_KINDS:
        mailing.paused_by_build_id = running.id
    session.add(mailing)
    session.flush()
    audit.record(
        session,
        actor,
        "mailing.create",
        "mailing",
        mailing.id,
        name,
        campaign=campaign.name,
        kind=kind,
        cron=cron,
        send_at=send_at.isoformat() if send_at else None,
        event=event,
    )
    return mailing


CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab 0..6 (7 = sun)


def crontab_fields(expr: str) -> dict[str, str]:
    """A standard 5-field crontab expression as APScheduler `CronTrigger` fields.

    APScheduler 3 numbers weekdays from 0 = Monday, crontab from 0 = Sunday
    (`CronTrigger.from_crontab` keeps APScheduler's numbering: "0 10 * * 1" would fire on
    Tuesdays). The weekday field is therefore translated to day names with crontab's
    meaning (0 and 7 = Sunday). Classic cron fires when *either* a restricted day of
    month or a restricted weekday matches, APScheduler only when both do, so an
    expression restricting both is refused rather than run with a surprising meaning.
    Raises ValueError with the reason.
    """
    values = expr.split()
    if len(values) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(values)}")
    minute, hour, day, month, weekday = values
    if day != "*" and weekday != "*":
        raise ValueError(
            "restrict either the day of month or the weekday, not both "
            "(cron would fire when either matches; give two mailings instead)"
        )
    return {
        "minute": minute,
        "hour": hour,
        "day": day,
        "month": month,
        "day_of_week": _crontab_weekdays(weekday),
    }


def _crontab_weekdays(field: str) -> str:
    if field == "*":
        return "*"
    days: set[int] = set()
    for token in field.lower().split(","):
        span, _, step_text = token.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"bad weekday step in {token!r}")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first_text, _, last_text = span.partition("-")
            first, last = _crontab_weekday(first_text), _crontab_weekday(last_text, end=True)
            if last < first:
                raise ValueError(f"weekday range {span!r} runs backwards")
        else:
            first = _crontab_weekday(span)
            last = 6 if step else first
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    if days == set(range(7)):
        return "*"
    return ",".join(CRONTAB_WEEKDAYS[d] for d in sorted(days))


def _crontab_weekday(text: str, end: bool = False) -> int:
    if text in CRONTAB_WEEKDAYS:
        return CRONTAB_WEEKDAYS.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        number = int(text)
        return number if end or number < 7 else 0  # 7 is Sunday; "5-7" ends on Sunday
    raise ValueError(f"bad weekday {text!r} (use 0-7 or sun..sat)")


CRON_RANGES = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12)}
CRON_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
CRON_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def _cron_value(field: str, text: str) -> int:
    low, high = CRON_RANGES[field]
    if field == "month" and text in CRON_MONTHS:
        return CRON_MONTHS.index(text) + 1
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"bad {field} {text!r} (use {low}-{high})")
    return int(text)


def _check_cron_field(field: str, value: str) -> None:
    """One crontab field: `*`, `N`, `N-M`, each with an optional `/STEP`, comma-separated
    (the grammar APScheduler's CronTrigger accepts for these fields)."""
    for item in value.lower().split(","):
        match = CRON_ITEM.match(item)
        if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
            raise ValueError(f"bad {field} field {value!r}")
        if match.group(1) == "*":
            continue
        first, _, last = match.group(1).partition("-")
        if last and _cron_value(field, last) < _cron_value(field, first):
            raise ValueError(f"{field} range {match.group(1)!r} runs backwards")
        _cron_value(field, first)


def validate_cron(expr: str) -> None:
    """Refuse a cron expression the scheduler could not run or would run surprisingly.
    Pure Python: the store does not import APScheduler (scheduler/mailings.py builds the
    CronTrigger from `crontab_fields`)."""
    try:
        fields = crontab_fields(expr)
        for field in CRON_RANGES:
            _check_cron_field(field, fields[field])
    except ValueError as exc:
        raise ValidationError(f"bad cron expression {expr!r}: {exc}") from exc


# --------------------------------------------------------------------------- next fire time


def _cron_values(field: str, value: str) -> frozenset[int]:
    """The values one crontab field allows (the grammar `_check_cron_field` accepts)."""
    low, high = CRON_RANGES[field]
    allowed: set[int] = set()
    for item in value.lower().split(","):
        match = CRON_ITEM.match(item)
        if match is None:
            raise ValueError(f"bad {field} field {value!r}")
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            first, last = low, high
        else:
            first_text, _, last_text = span.partition("-")
            first = _cron_value(field, first_text)
            last = (
                _cron_value(field, last_text) if last_text else (high if match.group(2) else first)
            )
        allowed.update(range(first, last + 1, step))
    return frozenset(allowed)


def next_cron_time(expr: str, after: datetime) -> datetime | None:
    """The first time strictly after `after` (UTC, to the minute) that the crontab
    expression fires, as the scheduler's CronTrigger (scheduler/mailings.py `cron_trigger`,
    built from the same `crontab_fields`) would fire it; None when it never fires within
    five years (e.g. "0 0 31 2 *"). Pure Python: the store does not import APScheduler."""
    fields = crontab_fields(expr)
    minutes = _cron_values("minute", fields["minute"])
    hours = _cron_values("hour", fields["hour"])
    days = _cron_values("day", fields["day"])
    months = _cron_values("month", fields["month"])
    weekdays = (
        frozenset(range(7))
        if fields["day_of_week"] == "*"
        else frozenset(  # Python's weekday(): Monday is 0
            (CRONTAB_WEEKDAYS.index(name) - 1) % 7 for name in fields["day_of_week"].split(",")
        )
    )
    moment = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = moment + timedelta(days=366 * 5)
    while moment < limit:
        if moment.month not in months:
            year, month = divmod(moment.month, 12)  # the first day of the next month
            moment = moment.replace(
                year=moment.year + year, month=month + 1, day=1, hour=0, minute=0
            )
        elif moment.day not in days or moment.weekday() not in weekdays:
            moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
        elif moment.hour not in hours:
            moment = (moment + timedelta(hours=1)).replace(minute=0)
        elif moment.minute not in minutes:
            moment += timedelta(minutes=1)
        else:
            return moment
    return None


def running_pausing_build(session: Session, campaign_id: int) -> AudienceBuild | None:
    return session.scalar(
        sa.select(AudienceBuild).where(
            AudienceBuild.campaign_id == campaign_id,
            AudienceBuild.status == BuildStatus.RUNNING,
            AudienceBuild.pauses_mailings.is_(True),
        )
    )


def _pause_action(mailing: Mailing, paused: bool | None = None, **kwargs: Any) -> str:
    return "mailing.pause" if kwargs.get("paused", paused) else "mailing.resume"


@audit.operation(_pause_action, "mailing")
def set_manual_pause(session: Session, actor: Actor, mailing: Mailing, paused: bool) -> Mailing:
    """An operator's pause or resume. A build ending never undoes a manual pause."""
    verb = "pause" if paused else "resume"
    actor.require_write(f"{verb} a mailing")
    campaign = session.get(Campaign, mailing.campaign_id)
    if campaign is not None:
        check_not_completed(campaign)
    if mailing.status != MailingStatus.ACTIVE:
        raise InvalidStateError(f"mailing {mailing.name!r} is {mailing.status}; nothing to {verb}")
    if mailing.manual_paused == paused:
        raise InvalidStateError(
            f"mailing {mailing.name!r} is already {'paused' if paused else 'running'}"
            + (f" ({mailing.paused_reason})" if mailing.paused and not paused else "")
        )
    mailing.manual_paused = paused
    mailing.manual_paused_by = actor.user if paused else None
    mailing.version += 1
    session.add(mailing)
    audit.record(session, actor, f"mailing.{verb}", "mailing", mailing.id, mailing.name)
    session.flush()
    return mailing


@audit.operation("mailing.reschedule", "mailing")
def reschedule(
    session: Session,
    actor: Actor,
    mailing: Mailing,
    *,
    send_at: datetime | None = None,
    cron: str | None = None,
) -> Mailing:
    """Move a broadcast to another time or give a regular mailing another cron.

    The scheduler follows within seconds; a broadcast moved into the past fires at once
    (if it has not fired yet), a regular mailing continues at the new expression's next
    occurrence.
    """
    actor.require_write("reschedule a mailing")
    _require_changeable(session, mailing, "reschedule")
    if mailing.kind == MailingKind.BROADCAST:
        if send_at is None or cron is not None:
            raise ValidationError("a broadcast is rescheduled with --at DATETIME only")
        if send_at.tzinfo is None:
            raise ValidationError("give the broadcast time with a timezone, e.g. 2026-03-01T09:00Z")
        before, mailing.send_at = mailing.send_at, send_at
    elif mailing.kind == MailingKind.REGULAR:
        if not cron or send_at is not None:
            raise ValidationError("a regular mailing is rescheduled with --cron EXPR only")
        validate_cron(cron)
        before, mailing.cron = mailing.cron, cron
    else:
        raise InvalidStateError(f"mailing {mailing.name!r} is a trigger mailing: no schedule")
    mailing.version += 1
    session.add(mailing)
    audit.record(
        session,
        actor,
        "mailing.reschedule",
        "mailing",
        mailing.id,
        mailing.name,
        before=before.isoformat() if isinstance(before, datetime) else before,
        after=send_at.isoformat() if send_at else cron,
    )
    session.flush()
    return mailing


@audit.operation("mailing.stop", "mailing")
def stop_mailing(session: Session, actor: Actor, mailing: Mailing) -> Mailing:
    """Stop a mailing for good (status "stopped"): it never fires again."""
    actor.require_write("stop a mailing")
    _require_changeable(session, mailing, "stop")
    mailing.status = MailingStatus.STOPPED
    mailing.next_run_at = None
    mailing.version += 1
    session.add(mailing)
    audit.record(session, actor, "mailing.stop", "mailing", mailing.id, mailing.name)
    session.flush()
    return mailing


def _require_changeable(session: Session, mailing: Mailing, verb: str) -> None:
    campaign = session.get(Campaign, mailing.campaign_id)
    if campaign is not None:
        check_not_completed(campaign)
    if mailing.status != MailingStatus.ACTIVE:
        raise InvalidStateError(f"mailing {mailing.name!r} is {mailing.status}; cannot {verb} it")


def pause_for_build(session: Session, build: AudienceBuild) -> int:
    """R5/R6: pause the campaign's broadcast and regular mailings while `build` runs."""
    result = session.execute(
        sa.update(Mailing)
        .where(
            Mailing.campaign_id == build.campaign_id,
            Mailing.kind.in_(SCHEDULED_MAILING_KINDS),
            Mailing.status == MailingStatus.ACTIVE,
            Mailing.paused_by_build_id.is_(None),
        )
        .values(paused_by_build_id=build.id, version=Mailing.version + 1)
    )
    return result.rowcount


def resume_after_build(session: Session, build: AudienceBuild) -> int:
    """R5: resume what `build` paused, whatever its outcome. Manual pauses stay."""
    result = session.execute(
        sa.update(Mailing)
        .where(Mailing.paused_by_build_id == build.id)
        .values(paused_by_build_id=None, version=Mailing.version + 1)
    )
    return result.rowcount


# --------------------------------------------------------------------------- runs
#
# A run is one firing of a mailing at one scheduled time. `mailing_run` is unique per
# (mailing, scheduled_for), so a fire is never doubled, even by two schedulers or a
# restarted one. A run is claimed (status "running") in its own transaction before any
# audience expansion; deliveries and the run's completion are one later transaction, so a
# crash leaves a "running" run without deliveries, which the next scheduler finishes.


def sendable_clause():
    """SQL condition over `mailing`: active, not paused, of an active campaign (R5, R8)."""
    campaign = Campaign.__table__
    return sa.and_(
        Mailing.status == MailingStatus.ACTIVE,
        Mailing.kind.in_(SCHEDULED_MAILING_KINDS),
        Mailing.manual_paused.is_(False),
        Mailing.paused_by_build_id.is_(None),
        sa.exists().where(
            campaign.c.id == Mailing.campaign_id, campaign.c.status == CampaignStatus.ACTIVE
        ),
    )


def lock_if_sendable(session: Session, mailing_id: int) -> str | None:
    """Lock the mailing row when it may send now and return None; else say why not.

    The no-op UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) before the
    check, so an LCG build cannot pause the mailing between the check and the deliveries.
    """
    locked = session.execute(
        sa.update(Mailing)
        .where(Mailing.id == mailing_id, sendable_clause())
        .values(version=Mailing.version)
    ).rowcount
    if locked:
        return None
    mailing = session.get(Mailing, mailing_id, populate_existing=True)
    if mailing is None:
        return "the mailing no longer exists"
    campaign = session.get(Campaign, mailing.campaign_id, populate_existing=True)
    if campaign is None or campaign.status != CampaignStatus.ACTIVE:
        status = campaign.status if campaign else "gone"
        return f"campaign is {status}" + (
            " (R8: completed campaigns never send)" if status == CampaignStatus.COMPLETED else ""
        )
    if mailing.status != MailingStatus.ACTIVE:
        return f"mailing is {mailing.status}"
    if mailing.paused:
        return mailing.paused_reason
    return f"a {mailing.kind} mailing is not time-scheduled"


def begin_run(session: Session, mailing_id: int, scheduled_for: datetime) -> MailingRun:
    """Claim the firing of `mailing_id` at `scheduled_for` (status "running").

    Raises InvalidStateError (nothing written) when the mailing may not send now or this
    time was already fired; the caller's commit can still fail on the unique
    (mailing, scheduled_for) when another process claimed the same firing.
    """
    reason = lock_if_sendable(session, mailing_id)
    if reason is not None:
        raise InvalidStateError(f"mailing #{mailing_id} not sent: {reason}")
    existing = session.scalar(
        sa.select(MailingRun).where(
            MailingRun.mailing_id == mailing_id, MailingRun.scheduled_for == scheduled_for
        )
    )
    if existing is not None:
        raise InvalidStateError(
            f"mailing #{mailing_id} already fired for {scheduled_for.isoformat()} "
            f"(run #{existing.id}, {existing.status})"
        )
    run = MailingRun(mailing_id=mailing_id, scheduled_for=scheduled_for, started_at=utcnow())
    session.add(run)
    session.flush()
    return run


def complete_run(
    session: Session, actor: Actor, run: MailingRun, mailing: Mailing, recipients: int
) -> MailingRun:
    """Mark `run` done with its recipient count; a broadcast becomes "sent"."""
    now = utcnow()
    run.status = MailingRunStatus.DONE
    run.recipients = recipients
    run.finished_at = now
    mailing.last_run_at = run.scheduled_for
    if mailing.kind == MailingKind.BROADCAST:
        mailing.status = MailingStatus.SENT
        mailing.next_run_at = None
        mailing.version += 1
    session.add_all([run, mailing])
    audit.record(
        session,
        actor,
        "mailing.send",
        "mailing",
        mailing.id,
        mailing.name,
        run=run.id,
        scheduled_for=run.scheduled_for.isoformat(),
        recipients=recipients,
    )
    session.flush()
    return run


def abandon_run(session: Session, actor: Actor, run: MailingRun, reason: str) -> None:
    """A claimed run that may not send after all (paused or completed meanwhile).

    Misfire policy: a broadcast's claim is withdrawn so it fires once when it may send
    again (on resume); a regular mailing's occurrence is skipped, recorded as "skipped".
    """
    mailing = session.get(Mailing, run.mailing_id)
    if mailing is not None and mailing.kind == MailingKind.BROADCAST:
        session.delete(run)
    else:
        run.status = MailingRunStatus.SKIPPED
        run.finished_at = utcnow()
        session.add(run)
    audit.record(
        session,
        actor,
        "mailing.skip",
        "mailing",
        run.mailing_id,
        mailing.name if mailing else None,
        scheduled_for=run.scheduled_for.isoformat(),
        reason=reason,
    )
    session.flush()


def unfinished_runs(session: Session, claimed_before: datetime | None = None) -> list[MailingRun]:
    """Runs claimed by a scheduler that stopped before sending (crash recovery); with
    `claimed_before`, only the runs claimed before then: the ones a scheduler now acting
    claims are its own, still under way (their expansion build can take a while)."""
    query = sa.select(MailingRun).where(MailingRun.status == MailingRunStatus.RUNNING)
    if claimed_before is not None:
        query = query.where(MailingRun.started_at < claimed_before)
    return list(session.scalars(query.order_by(MailingRun.id)))


def set_next_run_at(session: Session, mailing_id: int, next_run_at: datetime | None) -> None:
    """The scheduler's own bookkeeping: no version bump, no audit (nothing desired changed)."""
    session.execute(
        sa.update(Mailing).where(Mailing.id == mailing_id).values(next_run_at=next_run_at)
    )


@dataclass(frozen=True)
class MailingSchedule:
    """What the scheduler needs to know of one mailing to keep its job in line."""

    mailing_id: int
    name: str
    kind: str
    status: str
    campaign_status: str
    send_at: datetime | None
    cron: str | None
    manual_paused: bool
    paused_by_build_id: int | None
    version: int
    next_run_at: datetime | None
    fired: bool  # a broadcast with a run at its send_at (running, done or skipped)

    @property
    def paused(self) -> bool:
        return self.manual_paused or self.paused_by_build_id is not None


def mailing_schedules(session: Session) -> list[MailingSchedule]:
    """Every time-scheduled mailing (broadcast, regular) with its campaign's status."""
    campaign = Campaign.__table__
    mailing = Mailing.__table__
    run = MailingRun.__table__
    fired = (
        sa.exists()
        .where(run.c.mailing_id == mailing.c.id, run.c.scheduled_for == mailing.c.send_at)
        .label("fired")
    )
    rows = session.execute(
        sa.select(
            mailing.c.id,
            mailing.c.name,
            mailing.c.kind,
            mailing.c.status,
            campaign.c.status,
            mailing.c.send_at,
            mailing.c.cron,
            mailing.c.manual_paused,
            mailing.c.paused_by_build_id,
            mailing.c.version,
            mailing.c.next_run_at,
            fired,
        )
        .join(campaign, campaign.c.id == mailing.c.campaign_id)
        .where(
            mailing.c.kind.in_(SCHEDULED_MAILING_KINDS),
            # Sent and stopped mailings matter only until their next_run_at is cleared.
            sa.or_(mailing.c.status == MailingStatus.ACTIVE, mailing.c.next_run_at.is_not(None)),
        )
        .order_by(mailing.c.id)
    )
    return [MailingSchedule(*row) for row in rows]
