"""Who a campaign's segment reaches, and what a draft's activation would do now
(issue 13 §3 and §5).

* `excluded_gcg`: profiles of the segment and of the campaign's database that the GCG
  holds out of the campaign (R1, R11a); 0 for a campaign on the exception list.
* `other_database`: segment profiles of other databases, never processed (R1).
* For a draft, `pending`: the pending audience (open segment members in R1 scope, R3)
  and `preview`: the split activation would produce now (target, per-stratum quotas,
  the R10 stratification warning), from `store.campaigns.preview_lcg`, the same code
  the LCG form previews with (its quotas are what the activation build's plan computes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import lcg
from store.audience import r1_scope_sql
from store.campaigns import LcgPreview, get_campaign, preview_lcg
from store.models import Campaign, GcgException


@dataclass(frozen=True)
class AudienceScope:
    campaign: str
    status: str
    excluded_gcg: int
    other_database: int
    pending: int | None  # drafts only: the pending audience (R3)
    preview: LcgPreview | None  # drafts with the LCG on: what activation would do now

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "excluded_gcg": self.excluded_gcg,
            "other_database": self.other_database,
        }
        if self.pending is not None:
            p = self.preview
            out["pending"] = {
                "members": self.pending,
                "target": p.target if p else 0,
                "limit_binds": bool(p.limit_binds) if p else False,
                "strata": [
                    {
                        "key": r.values,
                        "label": r.label,
                        "members": r.members,
                        "quota": r.quota,
                        "ideal": r.ideal,
                    }
                    for r in (p.rows if p else [])
                ],
                "warnings": list(p.warnings) if p else [],
            }
        return out


def audience_scope(session: Session, campaign: Campaign | str) -> AudienceScope:
    if isinstance(campaign, str):
        campaign = get_campaign(session, campaign)
    params = {"seg": campaign.segment_id, "db": campaign.database_id, "cid": campaign.id}
    excepted = session.get(GcgException, (campaign.database_id, campaign.id)) is not None
    counts = session.execute(
        sa.text(
            """SELECT COALESCE(SUM(CASE WHEN p.database_id = :db AND p.in_gcg THEN 1 ELSE 0 END), 0),
                      COALESCE(SUM(CASE WHEN p.database_id <> :db THEN 1 ELSE 0 END), 0)
               FROM segment_member sm JOIN profile p ON p.id = sm.profile_id
               WHERE sm.segment_id = :seg AND sm.left_at IS NULL"""
        ),
        params,
    ).one()
    excluded = 0 if excepted else int(counts[0])
    pending = preview = None
    if campaign.status == "draft":
        pending = int(
            session.scalar(
                sa.text(
                    "SELECT COUNT(*) FROM segment_member sm JOIN profile p ON p.id = sm.profile_id "
                    f"WHERE sm.segment_id = :seg AND sm.left_at IS NULL AND {r1_scope_sql('p')}"
                ),
                params,
            )
            or 0
        )
        if campaign.lcg_enabled and campaign.lcg_percent_bp:
            preview = preview_lcg(
                session,
                campaign,
                percent=lcg.format_percent(campaign.lcg_percent_bp),
                limit=campaign.lcg_limit,
                strata=list(campaign.lcg_strata or []),
            )
    return AudienceScope(campaign.name, campaign.status, excluded, int(counts[1]), pending, preview)
