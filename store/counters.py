"""Membership counters of a campaign (`Campaign.members/test_count/control_count/
cohort_size` and `CampaignStratum(members, cohort, control)`), kept by every transaction
that changes membership (builds, R4 leavers, completion), so nothing scans members to
show counts (docs/engine.md, "Cohorts and counters")."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from store.models import Campaign

# (stratum_key, group, in the campaign's current cohort, count)
CounterDelta = tuple[str, str, bool, int]


def apply_counter_deltas(session: Session, campaign_id: int, deltas: list[CounterDelta]) -> None:
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
