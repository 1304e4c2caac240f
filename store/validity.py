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
from store.build_checkpoint import Checkpoint
from store.models import AudienceBuild, Campaign, CampaignStratum, ProfileField
from store.states import RECALCULATING_REASONS, BuildStatus, CampaignStatus


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
    """Figures of the live cohort, all from one computation so they agree (issue 11):
    quotas are apportioned from the live per-stratum cohort counts (what the next build
    would use), they sum to the target, and the deficit is what newcomers may still fill:
    the strata's shortfalls, but never more than the room left under the target (with a
    limit, a stratum's surplus kept by incremental builds takes that room). Strata with no
    open member are not shown; a completed campaign (R8) shows no live figures at all."""
    rows = [
        r
        for r in session.scalars(
            sa.select(CampaignStratum)
            .where(CampaignStratum.campaign_id == campaign.id)
            .order_by(CampaignStratum.stratum_key)
        )
        if r.members > 0
    ]
    # Issue 15.4: the counters are read with the strata (and field types) they were keyed
    # with, which during a re-key are not yet the campaign's new settings.
    names = counter_strata(session, campaign)
    types = dict(
        session.execute(
            sa.select(ProfileField.name, ProfileField.type).where(
                ProfileField.database_id == campaign.database_id
            )
        ).all()
    )
    enabled = campaign.lcg_enabled and campaign.status == CampaignStatus.ACTIVE
    sizes = {r.stratum_key: r.cohort for r in rows if r.cohort > 0} if enabled else {}
    n = sum(sizes.values())
    bp = campaign.lcg_percent_bp
    target = lcg.target_total(bp, n, campaign.lcg_limit) if enabled else 0
    quotas = lcg.apportion(target, sizes)
    actual = sum(r.control for r in rows)
    shortfall = sum(max(0, quotas.get(r.stratum_key, 0) - r.control) for r in rows)
    deficit = min(shortfall, max(0, target - actual)) if enabled else 0
    surplus = sum(max(0, r.control - quotas.get(r.stratum_key, 0)) for r in rows) if enabled else 0
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
                values=strata.decode(r.stratum_key, names, types),
                label=strata.label(r.stratum_key, names, types),
                members=r.members,
                cohort=r.cohort,
                control=r.control,
                quota=quotas.get(r.stratum_key, 0),
                ideal=float(round(lcg.ideal_share(target, sizes.get(r.stratum_key, 0), n), 4)),
            )
            for r in rows
        ],
    )


def counter_strata(session: Session, campaign: Campaign) -> list[str]:
    """The strata fields the campaign's counters (campaign_stratum) are keyed with.

    An LCG edit stores the new strata at once, but the counters are re-keyed only when the
    recalculation's rekey phase ends (store/build_steps.py `_recount`, in the same commit
    as the phase change). Until then they are keyed with the strata of the latest build
    whose keys took effect: a recalculation past its rekey phase, or any other build that
    started (it keys newcomers with the strata frozen in its checkpoint). Read from the
    builds' checkpoints, so no key is ever read with the wrong fields or types (15.4)."""
    rows = session.execute(
        sa.select(AudienceBuild.reason, AudienceBuild.status, AudienceBuild.checkpoint)
        .where(AudienceBuild.campaign_id == campaign.id, AudienceBuild.checkpoint.is_not(None))
        .order_by(AudienceBuild.id.desc())
    )
    for reason, status, data in rows:
        if not isinstance(data, dict):  # JSON null: never started
            continue
        try:
            checkpoint = Checkpoint.from_json(data)
        except (KeyError, TypeError, ValueError):
            continue
        if reason in RECALCULATING_REASONS and "rekey" in checkpoint.phases:
            rekeyed = status == BuildStatus.DONE or (
                checkpoint.phase_index > checkpoint.phases.index("rekey")
            )
            if not rekeyed:
                continue  # its re-key has not taken effect: older keys still count
        return list(checkpoint.lcg.strata)
    return list(campaign.lcg_strata or [])
