"""Audience scope (R1) and the hooks segment changes call in their own transaction (R3, R4).

* `r1_scope_sql` (defined in store/scope.py, re-exported here): the R1 condition.
* `on_segment_left`: R4 — an active campaign closes the memberships of the profiles that
  just left its segment (the segment code stamps all leavers of one operation with the
  same time, `left_at`), and its counters follow, in the same transaction. Draft campaigns
  get nothing (R3: resolved at activation), completed ones are never touched (R8).
* `on_segment_entered`: R2c — queue (or merge into) an incremental build for each active
  campaign on the segment; the build reads only segment rows above the campaign's
  watermark, so its cost follows the newcomers.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from store import builds
from store.actors import Actor
from store.counters import apply_counter_deltas
from store.models import AudienceBuild, Campaign, Segment, UTCDateTime
from store.scope import r1_scope_sql
from store.states import BuildReason, CampaignStatus

__all__ = [
    "apply_counter_deltas",
    "close_leavers",
    "on_segment_entered",
    "on_segment_left",
    "r1_scope_sql",
]


def _active_campaigns(session: Session, segment: Segment) -> list[Campaign]:
    return list(
        session.scalars(
            sa.select(Campaign)
            .where(Campaign.segment_id == segment.id, Campaign.status == CampaignStatus.ACTIVE)
            .order_by(Campaign.id)
        )
    )


def on_segment_left(session: Session, segment: Segment, left_at: datetime, actor: Actor) -> int:
    """R4: close the open memberships of profiles whose interval closed at `left_at`."""
    closed = 0
    for campaign in _active_campaigns(session, segment):
        closed += close_leavers(session, campaign, segment.id, left_at, actor)
    return closed


LEAVERS = """
    campaign_member.campaign_id = :cid AND campaign_member.left_at IS NULL
    AND campaign_member.profile_id IN (
        SELECT sm.profile_id FROM segment_member sm
        WHERE sm.segment_id = :seg AND sm.left_at = :left_at)
"""


def close_leavers(
    session: Session, campaign: Campaign, segment_id: int, left_at: datetime, actor: Actor
) -> int:
    params = {"cid": campaign.id, "seg": segment_id, "left_at": left_at}
    when = sa.bindparam("left_at", type_=UTCDateTime())
    rows = session.execute(
        sa.text(
            f"""SELECT stratum_key, "group", CASE WHEN cohort = :cur THEN 1 ELSE 0 END, COUNT(*)
                FROM campaign_member WHERE {LEAVERS}
                GROUP BY stratum_key, "group", CASE WHEN cohort = :cur THEN 1 ELSE 0 END"""
        ).bindparams(when),
        {**params, "cur": campaign.lcg_cohort},
    ).all()
    if not rows:
        return 0
    session.execute(
        sa.text(
            f"UPDATE campaign_member SET left_at = :left_at, left_by = :by WHERE {LEAVERS}"
        ).bindparams(when),
        {**params, "by": actor.user},
    )
    apply_counter_deltas(session, campaign.id, [(k, g, bool(c), -n) for k, g, c, n in rows])
    return sum(n for *_x, n in rows)


def on_segment_entered(session: Session, segment: Segment, actor: Actor) -> list[AudienceBuild]:
    """R2c: an incremental build (merged into a queued one when possible) per active campaign."""
    return [
        builds.queue_build(session, campaign, BuildReason.INCREMENTAL, actor)
        for campaign in _active_campaigns(session, segment)
    ]
