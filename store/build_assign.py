"""Phase 5 of an audience build, assign: one chunk of newcomers of one source per
transaction (R2c, R3, R4, R9, R11), never visible half-done. Fresh newcomers are inserted
with their hash computed once in SQL and their group decided on the way in (control at or
below their stratum's cut-off, frozen by the plan), re-entering profiles get their former
group (R4), and the counters follow from a GROUP BY over the chunk's rows.
"""

from __future__ import annotations

from store.build_checkpoint import ACTIVATION_SOURCE, DELTA_SOURCE
from store.build_sql import (
    MEMBER_INSERT,
    CandidateQuery,
    StepContext,
    StoredCandidates,
    candidates,
    key_range,
    lock_source_segment,
    source_chunk_end,
)
from store.counters import apply_counter_deltas
from store.states import BuildReason, MemberSource

# This chunk's new member rows: ids above the largest id before the chunk's inserts.
CHUNK_ROWS = "id > :before AND +campaign_id = :cid AND joined_build_id = :b"


def phase_assign(ctx: StepContext, chunk: int) -> bool:
    """One chunk of newcomers of the current source, in one transaction, never visible
    half-done: fresh newcomers inserted in their group (control at or below their
    stratum's cut-off), re-entering profiles with their former group (R4), then the
    counters from a GROUP BY over the chunk's rows."""
    cp = ctx.checkpoint
    if cp.source_index >= len(cp.sources):
        return True
    source = cp.sources[cp.source_index]
    lo = cp.cursor
    if lo is None:
        lo = cp.watermark if source.kind == DELTA_SOURCE else 0
    lock_source_segment(ctx, source)
    if source.kind == DELTA_SOURCE:
        ctx.prefer_index_joins()
    live = candidates(ctx, source)
    query: CandidateQuery | StoredCandidates
    if cp.source_index in ctx.stored:
        # The whole source in one chunk: exactly the candidates the plan of this step
        # stored, counted and ranked (its range was one chunk when the plan read it).
        hi = None
        query = ctx.stored[cp.source_index]
    else:
        hi = source_chunk_end(ctx, source, lo, chunk)
        query = live.where(key_range(live.keyset_column, hi))
        if live.keyset_column == "sm.profile_id":
            # The same range on the profile side (p.id = sm.profile_id): PostgreSQL then
            # reads only the chunk's profiles, not all of them for every chunk (quadratic).
            query = query.where(key_range("p.id", hi))
    activation = cp.reason == BuildReason.ACTIVATION
    params = {
        **live.params,
        "lo": lo,
        "hi": hi,
        "cur": cp.lcg.cohort if cp.lcg.enabled else None,
        "segsrc": MemberSource.ACTIVATION if activation else MemberSource.SEGMENT,
        "now": ctx.campaign.activated_at if activation and ctx.campaign.activated_at else ctx.now,
        "actor": ctx.actor,
    }
    cp.processed += _insert_newcomers(ctx, query, params)
    if hi is not None:
        cp.cursor = hi
        return False
    cp.source_index += 1
    cp.cursor = None
    return cp.source_index >= len(cp.sources)


def _insert_newcomers(
    ctx: StepContext, query: CandidateQuery | StoredCandidates, params: dict
) -> None:
    """The chunk's newcomers in one pass, each row's hash and former membership read once
    (a fenced subquery, StepContext.fence), each group decided as the row is inserted:

    * fresh newcomers (no earlier membership): control at or below their stratum's
      cut-off in (hash, external_id) order (R9, frozen by the plan), else test;
    * re-entering profiles (R4): the group of their latest closed membership, with its
      cohort (never for an activation: a draft has no memberships, R3).

    Then the counters of what it inserted (`_count_chunk`); returns how many rows."""
    params = dict(params)
    fresh = _fresh_group(ctx, params)
    if query.source.kind == ACTIVATION_SOURCE:
        group, cohort = fresh, "CAST(:cur AS INTEGER)"
    else:
        group = f"CASE WHEN c.fg IS NULL THEN {fresh} ELSE {_reentry_group(ctx, params)} END"
        cohort = "CASE WHEN c.fg IS NULL THEN CAST(:cur AS INTEGER) ELSE c.fc END"
    insert = f"""{MEMBER_INSERT}
            SELECT :cid, c.pid, {group}, {group},
                   CASE WHEN c.segid = :cseg THEN :segsrc ELSE 'expansion' END, c.k, c.h,
                   {cohort}, :now, :b, :actor, c.left_at, c.left_by
            FROM ({query.rows(ctx.fence)}) c"""
    if ctx.is_postgres:
        # The rows the INSERT returns are counted in the same statement: no second read of
        # the chunk's rows through the table (0.07 s per 50,000 rows).
        returning = 'RETURNING stratum_key, "group", cohort, left_at'
        return _count_chunk(ctx, f"WITH r AS ({insert} {returning})", "r", params, ("now",))
    params["before"] = ctx.execute("SELECT COALESCE(MAX(id), 0) FROM campaign_member").scalar()
    ctx.execute(insert, params, times=("now",))
    return _count_chunk(ctx, "", f"campaign_member WHERE {CHUNK_ROWS}", params)


def _fresh_group(ctx: StepContext, params: dict) -> str:
    """R9: control at or below the stratum's cut-off. Most rows hash above every cut-off
    and are test after one comparison; only the few below the largest look up their
    stratum's cut-off (a join or a lookup for every row cost more than the rest of the
    row). Adds the cut-offs to `params`."""
    cutoffs = sorted(ctx.checkpoint.plan.cutoffs.items())
    if not cutoffs:
        return "'test'"
    ext = ctx.collate("c.ext")
    at_or_below = " ".join(
        f"WHEN :tk{i} THEN (c.h < :th{i} OR (c.h = :th{i} AND {ext} <= :te{i}))"
        for i in range(len(cutoffs))
    )
    for i, (key, cut) in enumerate(cutoffs):
        params.update({f"tk{i}": key, f"th{i}": cut.hash, f"te{i}": cut.external_id})
    params["top"] = max(cut.hash for _key, cut in cutoffs)
    return f"""CASE WHEN c.h > :top THEN 'test'
                    WHEN (CASE c.k {at_or_below} ELSE (1 = 0) END) THEN 'control'
                    ELSE 'test' END"""


def _reentry_group(ctx: StepContext, params: dict) -> str:
    """R4: a re-entering profile's former group; control only while the LCG is on, the
    membership is of the current cohort and the limit leaves room (the plan's re-entry
    cut-off). Adds the cut-off to `params`."""
    plan = ctx.checkpoint.plan
    cut = plan.reentry_cutoff
    if not ctx.checkpoint.lcg.enabled or (plan.reentry_capped and cut is None):
        return "'test'"
    if not plan.reentry_capped:
        return "CASE WHEN c.fg = 'control' AND c.fc = :cur THEN 'control' ELSE 'test' END"
    params.update(rh=cut.hash, re=cut.external_id)
    return f"""CASE WHEN c.fg = 'control' AND c.fc = :cur AND (c.h < :rh
                    OR (c.h = :rh AND {ctx.collate("c.ext")} <= :re))
                THEN 'control' ELSE 'test' END"""


def _count_chunk(
    ctx: StepContext, prefix: str, rows: str, params: dict, times: tuple[str, ...] = ()
) -> int:
    """Counters from a GROUP BY over the chunk's new open rows (`prefix` SELECT … FROM
    `rows`; R4a: a snapshot member that left after activation is inserted closed and
    counts nowhere); returns how many rows the chunk assigned, open or not (progress)."""
    in_cohort = "CASE WHEN cohort = :curc THEN 1 ELSE 0 END"
    is_open = "CASE WHEN left_at IS NULL THEN 1 ELSE 0 END"
    counts = ctx.execute(
        f"""{prefix} SELECT stratum_key, "group", {in_cohort}, {is_open}, COUNT(*)
            FROM {rows} GROUP BY stratum_key, "group", {in_cohort}, {is_open}""",
        {**params, **ctx.ids, "curc": ctx.campaign.lcg_cohort},
        times,
    ).all()
    apply_counter_deltas(
        ctx.session,
        ctx.campaign.id,
        [(k, g, bool(x), int(n)) for k, g, x, still_open, n in counts if still_open],
    )
    return sum(int(r[4]) for r in counts)
