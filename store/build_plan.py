"""Phase 3 of an audience build, plan: the R9/R10 decisions, frozen in the checkpoint so a
resumed build decides exactly as an uninterrupted one: quotas, the surplus to trim (R6),
and per stratum the (hash, external_id) cut-off at or below which fresh newcomers go to
control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sqlalchemy as sa

from store import lcg, strata
from store.build_checkpoint import (
    ACTIVATION_SOURCE,
    DELTA_SOURCE,
    Cutoff,
    Plan,
    Source,
    Trim,
)
from store.build_sql import (
    CandidateQuery,
    StepContext,
    StoredCandidates,
    candidates,
    drop_stored,
    lock_source_segment,
    source_chunk_end,
)
from store.models import CampaignStratum
from store.states import RECALCULATING_REASONS

HASH_SPAN = 2**64
HASH_MIN = -(2**63)

# Newcomers of one candidate query per stratum: fresh ones, re-entering ones of the
# current cohort (they count in n_s), those of them coming back to control (R4), and
# every re-entering one (whatever its cohort: progress counts every profile assigned).
NEWCOMERS_PER_STRATUM = """
    SELECT k, SUM(CASE WHEN fg IS NULL THEN 1 ELSE 0 END),
              SUM(CASE WHEN fg IS NOT NULL AND fc = :cur THEN 1 ELSE 0 END),
              SUM(CASE WHEN fg = 'control' AND fc = :cur THEN 1 ELSE 0 END),
              SUM(CASE WHEN fg IS NOT NULL THEN 1 ELSE 0 END)
    FROM ({candidates} {fence}) cand GROUP BY k"""

# The surplus-th largest (hash, external_id) among a stratum's control members (R6).
SURPLUS_CUT = """
    SELECT m.assignment_hash, p.external_id
    FROM campaign_member m JOIN profile p ON p.id = m.profile_id
    WHERE m.campaign_id = :cid AND m.left_at IS NULL
      AND m."group" = 'control' AND m.stratum_key = :k
    ORDER BY m.assignment_hash DESC, {external_id} DESC
    LIMIT 1 OFFSET :off"""


@dataclass
class Newcomers:
    """Per stratum key: fresh newcomers, re-entering cohort members, re-entering control;
    and how many re-entering profiles there are in all (any cohort)."""

    fresh: dict[str, int] = field(default_factory=dict)
    reentering: dict[str, int] = field(default_factory=dict)
    reentering_control: dict[str, int] = field(default_factory=dict)
    reentering_any: int = 0


def phase_plan(ctx: StepContext, chunk: int) -> bool:
    cp = ctx.checkpoint
    if cp.sources and cp.sources[0].kind == DELTA_SOURCE:
        ctx.prefer_index_joins()  # newcomers of an active campaign: delta-sized
        if cp.phases[cp.phase_index + 1 :] == ["assign"] and _fits_one_chunk(ctx, chunk):
            _store_candidates(ctx)
    existing = {
        r.stratum_key: r
        for r in ctx.session.scalars(
            sa.select(CampaignStratum).where(CampaignStratum.campaign_id == ctx.campaign.id)
        )
    }
    newcomers = _count_newcomers(ctx)
    cp.total = cp.total_base + sum(newcomers.fresh.values()) + newcomers.reentering_any
    cp.plan = Plan()
    if not cp.lcg.enabled:
        return True
    sizes = {k: r.cohort for k, r in existing.items() if r.cohort > 0}
    control = {k: r.control for k, r in existing.items() if r.control}
    for k in set(newcomers.fresh) | set(newcomers.reentering):
        sizes[k] = sizes.get(k, 0) + newcomers.fresh.get(k, 0) + newcomers.reentering.get(k, 0)
        control[k] = control.get(k, 0) + newcomers.reentering_control.get(k, 0)
    sizes = {k: v for k, v in sizes.items() if v > 0}
    n = sum(sizes.values())
    target = lcg.target_total(cp.lcg.percent_bp, n, cp.lcg.limit)
    quotas = lcg.apportion(target, sizes)
    existing_control = {k: r.control for k, r in existing.items()}
    trims, projected = _plan_trims(ctx, quotas, control, existing_control)
    reentry_capped, reentry_cutoff = _plan_reentry(ctx, projected, newcomers.reentering_control)
    picks = _plan_picks(quotas, projected, newcomers.fresh, cp.lcg.limit)
    cutoffs = _cutoffs(ctx, picks, newcomers.fresh)
    for key, k in picks.items():
        projected[key] = projected.get(key, 0) + k
    labels = {k: strata.label(k, cp.lcg.strata) for k in sizes}
    cp.plan = Plan(
        warnings=lcg.stratification_warnings(
            cp.lcg.percent_bp, cp.lcg.limit, sizes, projected, labels
        ),
        quotas=quotas,
        trims=trims,
        cutoffs=cutoffs,
        picks=picks,
        cohort_size=n,
        target=target,
        unlimited_target=lcg.unlimited_target(cp.lcg.percent_bp, n),
        reentry_capped=reentry_capped,
        reentry_cutoff=reentry_cutoff,
    )
    return True


def _fits_one_chunk(ctx: StepContext, chunk: int) -> bool:
    """Whether every source of this (delta) build is one assign chunk."""
    cp = ctx.checkpoint
    return all(
        source_chunk_end(ctx, source, cp.watermark if source.kind == DELTA_SOURCE else 0, chunk)
        is None
        for source in cp.sources
    )


def _store_candidates(ctx: StepContext) -> None:
    """A delta build that fits in one chunk is planned and assigned in this step (see
    build_steps.run_step): its candidates are read once, into a temporary table, instead
    of once by each of the plan's passes and again by the assign's insert (each read looks
    up every candidate's profile and membership). The source segments are locked first,
    as the assign locks them, so no profile leaves them before the insert."""
    for i, source in enumerate(ctx.checkpoint.sources):
        lock_source_segment(ctx, source)
        query = candidates(ctx, source)
        table = f"cc_build_candidates_{i}"
        drop_stored(ctx, table)
        ctx.execute(f"CREATE TEMP TABLE {table} AS {query.rows(ctx.fence)}", query.params)
        ctx.stored[i] = StoredCandidates(source, table)


def _candidates(ctx: StepContext, i: int, source: Source) -> CandidateQuery | StoredCandidates:
    return ctx.stored.get(i) or candidates(ctx, source)


def _count_newcomers(ctx: StepContext) -> Newcomers:
    out = Newcomers()
    for i, source in enumerate(ctx.checkpoint.sources):
        query = _candidates(ctx, i, source)
        # Fenced where fg/fc are lookups: merged into the sums, PostgreSQL ran the lookup
        # once per use (five per candidate) instead of once per candidate.
        fence = ctx.fence if source.kind != ACTIVATION_SOURCE else ""
        rows = ctx.execute(
            NEWCOMERS_PER_STRATUM.format(candidates=query.select(), fence=fence),
            {**query.params, "cur": ctx.checkpoint.lcg.cohort},
        ).all()
        for k, fresh, reentering, reentering_control, reentering_any in rows:
            out.reentering_any += int(reentering_any or 0)
            for counts, value in (
                (out.fresh, fresh),
                (out.reentering, reentering),
                (out.reentering_control, reentering_control),
            ):
                counts[k] = counts.get(k, 0) + int(value or 0)
    return out


def _plan_trims(
    ctx: StepContext,
    quotas: dict[str, int],
    control: dict[str, int],
    existing_control: dict[str, int],
) -> tuple[list[Trim], dict[str, int]]:
    """R6: a trimming build moves each stratum's surplus (control above quota, among the
    members already in control) to test. Returns the trims and the control counts after."""
    projected = dict(control)
    trims: list[Trim] = []
    if ctx.checkpoint.reason not in RECALCULATING_REASONS:
        return trims, projected
    for key in sorted(quotas):
        have = control.get(key, 0)
        surplus = min(have - quotas[key], existing_control.get(key, 0))
        if surplus <= 0:
            continue
        h, ext = ctx.execute(
            SURPLUS_CUT.format(external_id=ctx.collate("p.external_id")),
            {**ctx.ids, "k": key, "off": surplus - 1},
        ).one()
        trims.append(Trim(key, int(h), ext, surplus))
        projected[key] = have - surplus
    return trims, projected


# Re-entering former control members of the current cohort, in R9 order (R4).
RETURNING_CONTROL = """
    SELECT k, h, ext FROM ({candidates}) cand WHERE fg = 'control' AND fc = :cur"""


def _plan_reentry(
    ctx: StepContext, projected: dict[str, int], reentering_control: dict[str, int]
) -> tuple[bool, Cutoff | None]:
    """R4: the limit is a hard maximum, also for re-entering members. When the former
    control members coming back find less room under the limit than they are, only the
    ones with the smallest (hash, external_id) fill it; the others go to test.

    Returns (capped, cut-off of the last one who returns, None when none does), and
    lowers `projected` by those who go to test."""
    limit = ctx.checkpoint.lcg.limit
    returning = sum(reentering_control.values())
    if limit is None or returning == 0:
        return False, None
    room = max(0, limit - (sum(projected.values()) - returning))
    if returning <= room:
        return False, None
    rows: list[tuple[int, str, str]] = []
    for i, source in enumerate(ctx.checkpoint.sources):
        query = _candidates(ctx, i, source)
        rows += [
            (int(h), ext, k)
            for k, h, ext in ctx.execute(
                RETURNING_CONTROL.format(candidates=query.select(with_hash=True)),
                {**query.params, "cur": ctx.checkpoint.lcg.cohort},
            ).all()
        ]
    rows.sort()
    for _h, _ext, key in rows[room:]:
        projected[key] -= 1
    return True, (Cutoff(rows[room - 1][0], rows[room - 1][1]) if room else None)


def _plan_picks(
    quotas: dict[str, int],
    projected: dict[str, int],
    fresh: dict[str, int],
    limit: int | None,
) -> dict[str, int]:
    """R9: per stratum min(q_s − c_s, fresh newcomers) go to control; R4/R10: the limit
    caps the whole control group, so strata with a surplus kept by incremental builds
    leave less room for the others' deficits (largest picks first, then key order)."""
    picks: dict[str, int] = {}
    for key in sorted(quotas):
        wanted = min(max(quotas[key] - projected.get(key, 0), 0), fresh.get(key, 0))
        if wanted > 0:
            picks[key] = wanted
    if limit is None:
        return picks
    room = max(0, limit - sum(projected.values()))
    for key in sorted(picks, key=lambda k: (-picks[k], k)):
        picks[key] = min(picks[key], room)
        room -= picks[key]
    return {k: v for k, v in picks.items() if v > 0}


def _cutoffs(ctx: StepContext, picks: dict[str, int], fresh: dict[str, int]) -> dict[str, Cutoff]:
    """Per stratum the picks-th smallest (hash, external_id) among its fresh newcomers.

    Exact, without sorting everyone: rank only newcomers whose hash is below a cut that
    should hold enough of them (the hash is uniform over 64 bits), in SQL, so memory does
    not grow with the audience; a stratum that comes up short is ranked again with a
    doubled cut, up to the whole range.
    """
    out: dict[str, Cutoff] = {}
    todo = dict(picks)
    frac = min(1.0, max((_generous_share(k, fresh[key]) for key, k in todo.items()), default=0))
    while todo:
        found = _ranked_fresh(ctx, frac, todo, every_stratum=len(todo) == len(picks))
        out.update(found)
        todo = {key: k for key, k in todo.items() if key not in found}
        if frac >= 1.0 and todo:
            raise RuntimeError(f"not enough newcomers for strata {sorted(todo)}")
        frac = min(1.0, frac * 2)
    return out


def _generous_share(picks: int, fresh: int) -> float:
    """The share of the hash range below which a stratum's `fresh` newcomers hold at least
    `picks` unless the hashes are unlucky by four standard deviations (their count below
    the cut is binomial, its spread about the square root of `picks`). With 25 % more
    than `picks` alone, a delta of 10,000 newcomers came up short in some stratum in most
    builds, and ranking again cost as much as the first pass."""
    return (picks + 4 * math.sqrt(picks) + 8) / fresh


def _ranked_fresh(
    ctx: StepContext, frac: float, todo: dict[str, int], *, every_stratum: bool
) -> dict[str, Cutoff]:
    """The todo[k]-th smallest (hash, external_id) of stratum k's fresh newcomers, for the
    strata with that many in the lowest `frac` of the hash range. Ranked in SQL: one row
    per stratum from a single source; from several, each source's todo[k] smallest,
    merged here."""
    sources = ctx.checkpoint.sources
    keys = sorted(todo)
    found: dict[str, list[tuple[int, str]]] = {key: [] for key in keys}
    for i, source in enumerate(sources):
        query = _candidates(ctx, i, source)
        params = dict(query.params)
        conditions = ["fg IS NULL"]
        if frac < 1.0:
            conditions.append("h < :cut")
            params["cut"] = HASH_MIN + int(frac * HASH_SPAN)
        if not every_stratum:
            conditions.append(f"k IN ({', '.join(f':k{i}' for i in range(len(keys)))})")
        params.update({f"k{i}": k for i, k in enumerate(keys)})
        params.update({f"n{i}": todo[k] for i, k in enumerate(keys)})
        wanted = " ".join(f"WHEN :k{i} THEN :n{i}" for i in range(len(keys)))
        rank = "=" if len(sources) == 1 else "<="
        rows = ctx.execute(
            f"""SELECT k, h, ext FROM (
                    SELECT k, h, ext, ROW_NUMBER() OVER (
                        PARTITION BY k ORDER BY h, {ctx.collate("ext")}) AS rn
                    FROM ({query.select(with_hash=True)}) cand
                    WHERE {" AND ".join(conditions)}) ranked
                WHERE rn {rank} (CASE k {wanted} ELSE 0 END)""",
            params,
        ).all()
        for k, h, ext in rows:
            if k in found:
                found[k].append((int(h), ext))
    if len(sources) == 1:
        return {key: Cutoff(*values[0]) for key, values in found.items() if values}
    return {
        key: Cutoff(*sorted(values)[todo[key] - 1])
        for key, values in found.items()
        if len(values) >= todo[key]
    }
