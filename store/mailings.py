"""Mailings: creation, manual pause/resume, and the build-driven pause of R5/R6.

Paused state lives here, in the database; the scheduler only mirrors it into jobs.
A mailing is paused while `manual_paused` (an operator's pause) or `paused_by_build_id`
(an LCG build running, R5/R6) is set. Ending a build clears only its own pause, so a
manual pause survives any build.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from store import audit
from store.actors import Actor
from store.errors import InvalidStateError, NotFoundError, ValidationError
from store.models import MAILING_KINDS, AudienceBuild, Campaign, Mailing, Segment

SCHEDULED_KINDS = ("broadcast", "regular")  # R5: trigger mailings are never paused


def get_mailing(session: Session, name: str) -> Mailing:
    mailing = session.scalar(sa.select(Mailing).where(Mailing.name == name))
    if mailing is None:
        raise NotFoundError(f"no mailing named {name!r}")
    return mailing


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
) -> Mailing:
    actor.require_write("create a mailing")
    if campaign.status == "completed":
        raise InvalidStateError(f"campaign {campaign.name!r} is completed and read-only (R8)")
    if kind not in MAILING_KINDS:
        raise ValidationError(
            f"mailing kind must be one of {', '.join(MAILING_KINDS)}, not {kind!r}"
        )
    if kind == "broadcast" and (send_at is None or cron):
        raise ValidationError("a broadcast mailing needs --at DATETIME and no cron")
    if kind == "regular":
        if not cron or send_at is not None:
            raise ValidationError("a regular mailing needs --cron EXPR and no --at")
        validate_cron(cron)
    if kind == "trigger" and (send_at is not None or cron):
        raise ValidationError("a trigger mailing is event-driven: give neither --at nor --cron")
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
    )
    # A mailing created while an LCG build runs starts paused like its siblings (R5).
    running = running_pausing_build(session, campaign.id)
    if running is not None and kind in SCHEDULED_KINDS:
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
    )
    return mailing


def validate_cron(expr: str) -> None:
    from apscheduler.triggers.cron import CronTrigger  # validation only; no scheduler here

    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise ValidationError(f"bad cron expression {expr!r}: {exc}") from exc


def running_pausing_build(session: Session, campaign_id: int) -> AudienceBuild | None:
    return session.scalar(
        sa.select(AudienceBuild).where(
            AudienceBuild.campaign_id == campaign_id,
            AudienceBuild.status == "running",
            AudienceBuild.pauses_mailings.is_(True),
        )
    )


def set_manual_pause(session: Session, actor: Actor, mailing: Mailing, paused: bool) -> Mailing:
    """An operator's pause or resume. A build ending never undoes a manual pause."""
    verb = "pause" if paused else "resume"
    actor.require_write(f"{verb} a mailing")
    campaign = session.get(Campaign, mailing.campaign_id)
    if campaign is not None and campaign.status == "completed":
        raise InvalidStateError(f"campaign {campaign.name!r} is completed and read-only (R8)")
    if mailing.status != "active":
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


def pause_for_build(session: Session, build: AudienceBuild) -> int:
    """R5/R6: pause the campaign's broadcast and regular mailings while `build` runs."""
    result = session.execute(
        sa.update(Mailing)
        .where(
            Mailing.campaign_id == build.campaign_id,
            Mailing.kind.in_(SCHEDULED_KINDS),
            Mailing.status == "active",
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
