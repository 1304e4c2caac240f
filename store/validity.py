"""Experiment validity figures (issue 3 item 6), from counters only (no member scans).

Per campaign and stratum: members, cohort (n_s), control (c_s), quota (q_s) and the
ideal share T × n_s / N; the target T, the actual control size, the deficit waiting for
newcomers; and a sample-ratio-mismatch check: chi-square with 1 degree of freedom of the
cohort's control/test split against the configured share (the effective share T/N when a
limit binds), p = erfc(sqrt(chi2 / 2)), flagged when p < 0.001 and both expected counts
are at least 8 (store.lcg.srm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Session

from store import lcg, strata
from store.models import Campaign, CampaignStratum


@dataclass
class StratumValidity:
    key: str
    values: dict[str, str | None]
    label: str
    members: int
    cohort: int
    control: int
    quota: int
    ideal: float


@dataclass
class Validity:
    campaign: str
    enabled: bool
    percent_bp: int
    limit: int | None
    cohort_size: int
    target: int
    actual: int
    deficit: int
    surplus: int
    limit_binds: bool
    srm_p_value: float | None
    srm_flagged: bool
    strata: list[StratumValidity] = field(default_factory=list)


def campaign_validity(session: Session, campaign: Campaign) -> Validity:
    rows = list(
        session.scalars(
            sa.select(CampaignStratum)
            .where(CampaignStratum.campaign_id == campaign.id)
            .order_by(CampaignStratum.stratum_key)
        )
    )
    names = list(campaign.lcg_strata or [])
    enabled = campaign.lcg_enabled and campaign.status == "active"
    n = sum(r.cohort for r in rows) if enabled else 0
    bp = campaign.lcg_percent_bp
    target = lcg.target_total(bp, n, campaign.lcg_limit) if enabled else 0
    actual = sum(r.control for r in rows)
    deficit = sum(max(0, r.quota - r.control) for r in rows) if enabled else 0
    surplus = sum(max(0, r.control - r.quota) for r in rows) if enabled else 0
    binds = enabled and lcg.limit_binds(bp, n, campaign.lcg_limit)
    if enabled and n:
        share = Decimal(target) / Decimal(n) if binds else None
        p_value, flagged = lcg.srm(actual, n, bp, share)
    else:
        p_value, flagged = None, False
    return Validity(
        campaign=campaign.name,
        enabled=enabled,
        percent_bp=bp,
        limit=campaign.lcg_limit,
        cohort_size=n,
        target=target,
        actual=actual,
        deficit=deficit,
        surplus=surplus,
        limit_binds=binds,
        srm_p_value=p_value,
        srm_flagged=flagged,
        strata=[
            StratumValidity(
                key=r.stratum_key,
                values=strata.decode(r.stratum_key, names),
                label=strata.label(r.stratum_key, names),
                members=r.members,
                cohort=r.cohort,
                control=r.control,
                quota=r.quota,
                ideal=float(round(lcg.ideal_share(target, r.cohort, n), 4)),
            )
            for r in rows
        ],
    )
