"""Read models shared by the console and the CLI. Counts come from counters only."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store.models import Campaign, Mailing, ProfileDatabase, Segment


def lcg_summary(campaign: Campaign) -> str:
    if not campaign.lcg_enabled:
        return "off"
    percent = f"{campaign.lcg_percent_bp / 100:g}%"
    parts = [percent]
    if campaign.lcg_limit is not None:
        parts.append(f"≤{campaign.lcg_limit}")
    if campaign.lcg_strata:
        parts.append("by " + ",".join(campaign.lcg_strata))
    return " ".join(parts)


def campaign_list(session: Session) -> list[dict[str, Any]]:
    """One row per campaign, for the list screen and `campaign list`."""
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
        .order_by(Campaign.name)
    ).all()
    return [
        {
            "name": c.name,
            "status": c.status,
            "database": database,
            "segment": segment,
            "members": c.members,
            "test": c.test_count,
            "control": c.control_count,
            "lcg": lcg_summary(c),
            "warnings": len(c.warnings),
            "paused_mailings": paused_count or 0,
        }
        for c, database, segment, paused_count in rows
    ]
