"""Read models shared by the console and the CLI. Counts come from counters only.

Each function returns plain dicts in the JSON shapes of the CLI contract (docs/cli.md):
times are ISO 8601 strings with a timezone, the LCG percent is a decimal string
("5.25"), never a float. Nothing here writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import lcg, validity
from store.errors import ValidationError
from store.models import (
    AudienceBuild,
    Campaign,
    Mailing,
    ProfileDatabase,
    ProfileField,
    Segment,
)

MAX_LIST_ROWS = 10_000  # docs/cli.md: ranges of numeric arguments
ACTIVE_BUILD_STATUSES = ("queued", "running")


def by_name(session: Session, column: Any) -> Any:
    """Order text bytewise on both backends (PostgreSQL would use its locale otherwise)."""
    return column.collate("C") if session.get_bind().dialect.name == "postgresql" else column


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset, e.g. 2026-11-29T06:25:51.987591+00:00."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def percent_text(percent_bp: int) -> str | None:
    """Basis points as a decimal string: 525 -> "5.25", 1500 -> "15"; 0 (never set) -> None."""
    return lcg.format_percent(percent_bp) if percent_bp else None


def lcg_summary(campaign: Campaign) -> str:
    if not campaign.lcg_enabled:
        return "off"
    percent = f"{percent_text(campaign.lcg_percent_bp)}%"
    parts = [percent]
    if campaign.lcg_limit is not None:
        parts.append(f"≤{campaign.lcg_limit}")
    if campaign.lcg_strata:
        parts.append("by " + ",".join(campaign.lcg_strata))
    return " ".join(parts)


def lcg_settings(campaign: Campaign) -> dict[str, Any]:
    return {
        "enabled": bool(campaign.lcg_enabled),
        "percent": percent_text(campaign.lcg_percent_bp),
        "limit": campaign.lcg_limit,
        "strata": list(campaign.lcg_strata or []),
    }


def audience(campaign: Campaign) -> dict[str, int]:
    return {
        "members": campaign.members,
        "test": campaign.test_count,
        "control": campaign.control_count,
    }


def campaign_list(session: Session) -> list[dict[str, Any]]:
    """One brief row per campaign (`campaign list --json`), ordered by name.

    Keys are a subset of `campaign_show` with the same meaning, plus
    `paused_mailings` (how many of its mailings are paused) and `lcg_summary` (text).
    """
    paused = (
        sa.select(Mailing.campaign_id, sa.func.count().label("paused"))
        .where(sa.or_(Mailing.manual_paused.is_(True), Mailing.paused_by_build_id.is_not(None)))
        .group_by(Mailing.campaign_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(Campaign, ProfileDatabase.name, Segment.name, paused.c.paused)
        .join(ProfileDatabase, ProfileDatabase.id == Campaign.database_id)
        .join(Segment, Segment.id == Campaign.segment_id)
        .outerjoin(paused, paused.c.campaign_id == Campaign.id)
        .order_by(by_name(session, Campaign.name))
    ).all()
    return [
        {
            "name": c.name,
            "status": c.status,
            "database": database,
            "segment": segment,
            "lcg": lcg_settings(c),
            "lcg_summary": lcg_summary(c),
            "audience": audience(c),
            "warnings": list(c.warnings or []),
            "paused_mailings": paused_count or 0,
        }
        for c, database, segment, paused_count in rows
    ]


def campaign_validity(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Target, per-stratum split (R9/R10) and SRM, from store.validity (counters only).

    `strata[].ideal` is the stratum's exact share of the target, T × n_s / N, over the
    LCG cohort; `key` holds each strata field's value (int fields as numbers).
    """
    figures = validity.campaign_validity(session, campaign)
    types = {
        f.name: f.type
        for f in session.scalars(
            sa.select(ProfileField).where(ProfileField.database_id == campaign.database_id)
        )
    }
    return {
        "cohort": figures.cohort_size,
        "target": figures.target,
        "deficit": figures.deficit,
        "strata": [
            {
                "key": _typed_key(row.values, types),
                "label": row.label,
                "members": row.members,
                "cohort": row.cohort,
                "control": row.control,
                "quota": row.quota,
                "ideal": row.ideal,
            }
            for row in figures.strata
        ],
        "srm": {"p_value": figures.srm_p_value, "flagged": bool(figures.srm_flagged)},
    }


def _typed_key(key: dict[str, str | None], types: dict[str, str]) -> dict[str, Any]:
    """Stratum key values as JSON of their field's type: int fields as numbers."""
    return {
        name: int(value) if value is not None and types.get(name) == "int" else value
        for name, value in key.items()
    }


def mailing_row(mailing: Mailing) -> dict[str, Any]:
    return {
        "name": mailing.name,
        "kind": mailing.kind,
        "status": mailing.status,
        "paused": mailing.paused,
        "paused_reason": mailing.paused_reason,
        "send_at": iso(mailing.send_at),
        "cron": mailing.cron,
        "expand_audience": bool(mailing.expand_audience),
        "last_run": iso(mailing.last_run_at),
        "next_run": iso(mailing.next_run_at),
    }


def build_row(build: AudienceBuild, campaign_name: str) -> dict[str, Any]:
    return {
        "id": build.id,
        "campaign": campaign_name,
        "reason": build.reason,
        "status": build.status,
        "processed": build.processed,
        "total": build.total,
        "requested_by": build.requested_by,
        "requested_at": iso(build.requested_at),
        "started_at": iso(build.started_at),
        "finished_at": iso(build.finished_at),
        "error": build.error,
    }


def builds(
    session: Session, *, campaign: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Queued and running builds first (oldest first), then the latest finished ones."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_ROWS:
        raise ValidationError(f"--limit must be a whole number from 1 to {MAX_LIST_ROWS:,}")
    base = sa.select(AudienceBuild, Campaign.name).join(
        Campaign, Campaign.id == AudienceBuild.campaign_id
    )
    if campaign is not None:
        base = base.where(Campaign.name == campaign)
    active = session.execute(
        base.where(AudienceBuild.status.in_(ACTIVE_BUILD_STATUSES)).order_by(AudienceBuild.id)
    ).all()
    finished = session.execute(
        base.where(AudienceBuild.status.not_in(ACTIVE_BUILD_STATUSES))
        .order_by(AudienceBuild.id.desc())
        .limit(max(limit - len(active), 0))
    ).all()
    return [build_row(b, name) for b, name in [*active, *finished]]


def campaign_show(session: Session, name: str, *, build_limit: int = 10) -> dict[str, Any]:
    """Everything `campaign show --json` prints. NotFoundError when there is no such campaign."""
    # Imported here: store.campaigns brings the whole write side (builds, mailings, audit),
    # which read-only commands such as `campaign list` never need (CLI start-up, issue 14).
    from store.campaigns import get_campaign

    campaign = get_campaign(session, name)
    database = session.get(ProfileDatabase, campaign.database_id)
    segment = session.get(Segment, campaign.segment_id)
    mailings = session.scalars(
        sa.select(Mailing)
        .where(Mailing.campaign_id == campaign.id)
        .order_by(by_name(session, Mailing.name))
    ).all()
    figures = campaign_validity(session, campaign)
    return {
        "name": campaign.name,
        "status": campaign.status,
        "database": database.name if database else None,
        "segment": segment.name if segment else None,
        "segment_kind": segment.kind if segment else None,
        "seed": campaign.seed,
        "version": campaign.version,
        "created_at": iso(campaign.created_at),
        "activated_at": iso(campaign.activated_at),
        "completed_at": iso(campaign.completed_at),
        "lcg": lcg_settings(campaign),
        "audience": audience(campaign),
        "cohort": figures["cohort"],
        "target": figures["target"],
        "deficit": figures["deficit"],
        "strata": figures["strata"],
        "warnings": list(campaign.warnings or []),
        "srm": figures["srm"],
        "mailings": [mailing_row(m) for m in mailings],
        "builds": builds(session, campaign=campaign.name, limit=build_limit),
    }


def profile_show(session: Session, database: str, external_id: str) -> dict[str, Any]:
    """A profile's card (R12) for `profile show --json`. NotFoundError when unknown."""
    from store import history

    card = history.profile_card(session, database, external_id)
    return {
        "external_id": card.external_id,
        "database": card.database,
        "in_gcg": bool(card.in_gcg),
        "segments": list(getattr(card, "segments", [])),
        "fields": {k: _json_value(v) for k, v in card.fields.items()},
        "memberships": [
            {
                "campaign": m.campaign,
                "group": m.group,
                "joined_at": iso(m.joined_at),
                "left_at": iso(m.left_at),
                "source": m.source,
            }
            for m in card.memberships
        ],
        "events": [
            {
                "at": iso(e.at),
                "kind": e.kind,
                "campaign": e.campaign,
                "segment": e.segment,
                "group": e.group,
                "build": e.build,
                "actor": e.actor,
                "mailing": getattr(e, "mailing", None),
            }
            for e in card.events
        ],
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if hasattr(value, "isoformat"):  # date
        return value.isoformat()
    return value
