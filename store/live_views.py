"""Read models the live console polls: one snapshot per screen, from counters only.

The scheduler's health and the builds monitor come from store/monitor.py (scheduler
engineer); this module adds what only the console shows. Every function here is a
handful of indexed queries whose cost does not grow with the
number of profiles or members (counters on `campaign`, `campaign_stratum`,
`audience_build`, `segment`), so a 1,000,000-profile workspace stays instant. The values
are plain data (dicts, tuples, strings) so the console can compare two snapshots cell by
cell and repaint only what changed. No writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store.models import (
    STRATIFIABLE_TYPES,
    AudienceBuild,
    AuditEntry,
    Campaign,
    Mailing,
    ProfileDatabase,
    ProfileField,
    Segment,
    utcnow,
)
from store.monitor import BuildProgress, progress_row
from store.states import OPEN_BUILD_STATUSES, BuildStatus, MailingKind, MailingStatus
from store.validity import StratumValidity, campaign_validity
from store.views import lcg_summary


def percent_of(part: int, whole: int) -> str:
    """One decimal, but never rounds a non-empty group to 0.0 % or a partial one to 100.0 %."""
    if not whole:
        return "–"
    share = 100 * part / whole
    if 0 < share < 0.1:
        return "<0.1%"
    if 99.9 < share < 100:
        return ">99.9%"
    return f"{share:.1f}%"


# --------------------------------------------------------------------------- builds


# --------------------------------------------------------------------------- campaign list


def campaign_rows(session: Session) -> list[dict[str, Any]]:
    """The campaign list screen: one dict per campaign, counters only."""
    paused = (
        sa.select(Mailing.campaign_id, sa.func.count().label("paused"))
        .where(
            Mailing.status == MailingStatus.ACTIVE,
            sa.or_(Mailing.manual_paused.is_(True), Mailing.paused_by_build_id.is_not(None)),
        )
        .group_by(Mailing.campaign_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(Campaign, ProfileDatabase.name, Segment.name, Segment.kind, paused.c.paused)
        .join(ProfileDatabase, ProfileDatabase.id == Campaign.database_id)
        .join(Segment, Segment.id == Campaign.segment_id)
        .outerjoin(paused, paused.c.campaign_id == Campaign.id)
        .order_by(Campaign.name)
    ).all()
    active = session.execute(
        sa.select(AudienceBuild)
        .where(AudienceBuild.status.in_(OPEN_BUILD_STATUSES))
        .order_by(AudienceBuild.id)
    ).scalars()
    progress: dict[int, str] = {}
    for build in active:
        if build.status == BuildStatus.RUNNING:
            share = f"{100 * build.processed / build.total:.0f}%" if build.total else "0%"
            progress[build.campaign_id] = f"{build.reason} {share}"
        else:
            progress.setdefault(build.campaign_id, f"{build.reason} queued")
    return [
        {
            "name": c.name,
            "version": c.version,
            "status": c.status,
            "database": database,
            "segment": segment,
            "segment_kind": kind,
            "members": c.members,
            "test": c.test_count,
            "control": c.control_count,
            "test_pct": percent_of(c.test_count, c.members),
            "control_pct": percent_of(c.control_count, c.members),
            "lcg": lcg_summary(c),
            "lcg_enabled": c.lcg_enabled,
            "lcg_percent_bp": c.lcg_percent_bp,
            "warnings": len(c.warnings),
            "build": progress.get(c.id, ""),
            "paused_mailings": paused_count or 0,
        }
        for c, database, segment, kind, paused_count in rows
    ]


# --------------------------------------------------------------------------- campaign detail


@dataclass(frozen=True)
class MailingRow:
    id: int
    name: str
    kind: str
    status: str
    schedule: str
    next_run_at: datetime | None
    paused: bool
    manual_paused: bool
    paused_reason: str | None
    version: int


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    origin: str
    action: str
    outcome: str
    details: str


@dataclass(frozen=True)
class CampaignDetail:
    id: int
    name: str
    version: int
    status: str
    database: str
    database_id: int
    segment: str
    segment_kind: str
    segment_rule: str | None
    members: int
    test: int
    control: int
    cohort_size: int
    lcg_enabled: bool
    lcg_percent_bp: int
    lcg_limit: int | None
    lcg_strata: tuple[str, ...]
    lcg_summary: str
    target: int
    deficit: int
    warnings: tuple[str, ...]
    srm_p_value: float | None
    srm_flagged: bool
    created_at: datetime
    activated_at: datetime | None
    completed_at: datetime | None
    strata: list[StratumValidity] = field(default_factory=list)
    mailings: list[MailingRow] = field(default_factory=list)
    builds: list[BuildProgress] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)


def _schedule(mailing: Mailing) -> str:
    if mailing.kind == MailingKind.REGULAR:
        return f"cron {mailing.cron}"
    if mailing.kind == MailingKind.BROADCAST and mailing.send_at is not None:
        return f"at {mailing.send_at:%Y-%m-%d %H:%M}"
    return "on event"


def _audit_details(details: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in details.items() if v not in (None, "", [], {}))


def campaign_detail(session: Session, name: str, *, audit_limit: int = 8) -> CampaignDetail | None:
    """Everything the campaign screen shows; None when the campaign does not exist."""
    row = session.execute(
        sa.select(Campaign, ProfileDatabase.name, Segment)
        .join(ProfileDatabase, ProfileDatabase.id == Campaign.database_id)
        .join(Segment, Segment.id == Campaign.segment_id)
        .where(Campaign.name == name)
    ).first()
    if row is None:
        return None
    campaign, database, segment = row
    # Target, per-stratum quotas, deficit (R6) and SRM: the one computation the CLI and the
    # engine use too (store/validity.py, from counters).
    validity = campaign_validity(session, campaign)
    strata = validity.strata
    mailings = [
        MailingRow(
            id=m.id,
            name=m.name,
            kind=m.kind,
            status=m.status,
            schedule=_schedule(m),
            next_run_at=m.next_run_at,
            paused=m.paused,
            manual_paused=m.manual_paused,
            paused_reason=m.paused_reason,
            version=m.version,
        )
        for m in session.scalars(
            sa.select(Mailing).where(Mailing.campaign_id == campaign.id).order_by(Mailing.name)
        )
    ]
    now = utcnow()
    builds = [
        progress_row(build, campaign.name, now)
        for build in session.scalars(
            sa.select(AudienceBuild)
            .where(AudienceBuild.campaign_id == campaign.id)
            .order_by(AudienceBuild.id.desc())
            .limit(5)
        )
    ]
    audit = [
        AuditRow(
            at=a.at,
            actor=a.actor,
            origin=a.origin,
            action=a.action,
            outcome=a.outcome,
            details=_audit_details(a.details or {}),
        )
        for a in session.scalars(
            sa.select(AuditEntry)
            .where(AuditEntry.target_type == "campaign", AuditEntry.target_id == campaign.id)
            .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            .limit(audit_limit)
        )
    ]
    return CampaignDetail(
        id=campaign.id,
        name=campaign.name,
        version=campaign.version,
        status=campaign.status,
        database=database,
        database_id=campaign.database_id,
        segment=segment.name,
        segment_kind=segment.kind,
        segment_rule=segment.rule,
        members=campaign.members,
        test=campaign.test_count,
        control=campaign.control_count,
        cohort_size=campaign.cohort_size,
        lcg_enabled=campaign.lcg_enabled,
        lcg_percent_bp=campaign.lcg_percent_bp,
        lcg_limit=campaign.lcg_limit,
        lcg_strata=tuple(campaign.lcg_strata or ()),
        lcg_summary=lcg_summary(campaign),
        target=validity.target,
        deficit=validity.deficit,
        warnings=tuple(str(w.get("message") or w.get("code") or w) for w in campaign.warnings),
        srm_p_value=validity.srm_p_value,
        srm_flagged=validity.srm_flagged,
        created_at=campaign.created_at,
        activated_at=campaign.activated_at,
        completed_at=campaign.completed_at,
        strata=strata,
        mailings=mailings,
        builds=builds,
        audit=audit,
    )


# --------------------------------------------------------------------------- small look-ups


def stratifiable_fields(session: Session, database_id: int) -> list[str]:
    """Field names the LCG form offers as strata (floats are continuous: none)."""
    return list(
        session.scalars(
            sa.select(ProfileField.name)
            .where(
                ProfileField.database_id == database_id,
                ProfileField.type.in_(STRATIFIABLE_TYPES),
            )
            .order_by(ProfileField.position)
        )
    )


def database_names(session: Session) -> list[str]:
    return list(session.scalars(sa.select(ProfileDatabase.name).order_by(ProfileDatabase.name)))
