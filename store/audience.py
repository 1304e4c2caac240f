"""Audience scope (R1) and the hooks segment changes call in their own transaction (R3, R4).

* `r1_scope_sql`: the SQL condition every build and count uses for "a profile this
  campaign may reach": the campaign's database only, and not in the database's global
  control group unless the campaign is on its exception list (`gcg_exception`).
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

from store.actors import Actor
from store.models import AudienceBuild, Campaign, Segment, UTCDateTime


def r1_scope_sql(alias: str = "p") -> str:
    """R1: profile `alias` is in the campaign's database and, unless the campaign is on the
    database's GCG exception list, not in its global control group. Binds :db and :cid."""
    return (
        f"{alias}.database_id = :db AND (NOT {alias}.in_gcg OR EXISTS ("
        "SELECT 1 FROM gcg_exception g WHERE g.database_id = :db AND g.campaign_id = :cid))"
    )


def _active_campaigns(session: Session, segment: Segment) -> list[Campaign]:
    return list(
        session.scalars(
            sa.select(Campaign)
            .where(Campaign.segment_id == segment.id, Campaign.status == "active")
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


def apply_counter_deltas(
    session: Session, campaign_id: int, deltas: list[tuple[str, str, bool, int]]
) -> None:
    """Add (stratum_key, group, in_current_cohort, count) deltas to the campaign and
    campaign_stratum counters, relative in SQL so concurrent writers never lose counts."""
    per_key: dict[str, list[int]] = {}
    tot = [0, 0, 0, 0]  # members, test, control, cohort
    for key, group, in_cohort, n in deltas:
        row = per_key.setdefault(key, [0, 0, 0])
        row[0] += n
        row[2] += n if group == "control" else 0
        row[1] += n if in_cohort else 0
        tot[0] += n
        tot[1] += n if group == "test" else 0
        tot[2] += n if group == "control" else 0
        tot[3] += n if in_cohort else 0
    if per_key:
        session.execute(
            sa.text(
                """INSERT INTO campaign_stratum
                       (campaign_id, stratum_key, members, cohort, control, quota)
                   VALUES (:cid, :key, :m, :n, :c, 0)
                   ON CONFLICT (campaign_id, stratum_key) DO UPDATE SET
                       members = campaign_stratum.members + excluded.members,
                       cohort = campaign_stratum.cohort + excluded.cohort,
                       control = campaign_stratum.control + excluded.control"""
            ),
            [
                {"cid": campaign_id, "key": k, "m": v[0], "n": v[1], "c": v[2]}
                for k, v in sorted(per_key.items())
            ],
        )
    session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(
            members=Campaign.members + tot[0],
            test_count=Campaign.test_count + tot[1],
            control_count=Campaign.control_count + tot[2],
            cohort_size=Campaign.cohort_size + tot[3],
        )
    )


def on_segment_entered(session: Session, segment: Segment, actor: Actor) -> list[AudienceBuild]:
    """R2c: an incremental build (merged into a queued one when possible) per active campaign."""
    from store import builds

    return [
        builds.queue_build(session, campaign, "incremental", actor)
        for campaign in _active_campaigns(session, segment)
    ]
