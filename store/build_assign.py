"""Phase 5 of an audience build, assign: one chunk of newcomers of one source per
transaction (R2c, R3, R4, R9, R11), never visible half-done. Fresh newcomers are inserted
as test with their hash computed once in SQL, the ones at or below their stratum's
cut-off (frozen by the plan) are flipped to control in the same transaction, re-entering
profiles get their former group (R4), and the counters follow from a GROUP BY over the
chunk's rows.
"""

from __future__ import annotations

from typing import Any

from store.build_checkpoint import ACTIVATION_SOURCE, DELTA_SOURCE, Source
from store.build_sql import (
    ENTRY_SOURCE,
    HAS_CLOSED_MEMBERSHIP,
    MEMBER_INSERT,
    CandidateQuery,
    StepContext,
    candidates,
    key_range,
    source_chunk_end,
)
from store.counters import apply_counter_deltas
from store.states import BuildReason, MemberSource

# This chunk's new member rows: ids above the largest id before the chunk's inserts.
CHUNK_ROWS = "id > :before AND +campaign_id = :cid AND joined_build_id = :b"
# At or below a stratum's cut-off in (hash, external_id) order (R9), for the member row.
_MEMBER_EXTERNAL_ID = (
    "(SELECT p.external_id FROM profile p WHERE p.id = campaign_member.profile_id)"
)


def phase_assign(ctx: StepContext, chunk: int) -> bool:
    """One chunk of newcomers of the current source, in one transaction, never visible
    half-done: fresh newcomers inserted as test, the ones at or below their stratum's
    cut-off flipped to control, re-entering profiles inserted with their former group
    (R4), then the counters from a GROUP BY over the chunk's rows."""
    cp = ctx.checkpoint
    if cp.source_index >= len(cp.sources):
        return True
    source = cp.sources[cp.source_index]
    lo = cp.cursor
    if lo is None:
        lo = cp.watermark if source.kind == DELTA_SOURCE else 0
    if ctx.is_postgres:
        # Serialise with membership changes of the source segment (store.segments locks
        # the segment row FOR UPDATE): a profile leaving while this chunk inserts it would
        # otherwise miss the R4 close that on_segment_left applies.
        ctx.execute("SELECT id FROM segment WHERE id = :seg FOR SHARE", {"seg": source.segment_id})
    hi = source_chunk_end(ctx, source, lo, chunk)
    query = candidates(ctx, source)
    query = query.where(key_range(query.keyset_column, hi))
    activation = cp.reason == BuildReason.ACTIVATION
    params = {
        **query.params,
        "lo": lo,
        "hi": hi,
        "cur": cp.lcg.cohort if cp.lcg.enabled else None,
        "segsrc": MemberSource.ACTIVATION if activation else MemberSource.SEGMENT,
        "now": ctx.campaign.activated_at if activation and ctx.campaign.activated_at else ctx.now,
        "actor": ctx.actor,
    }
    before = ctx.execute("SELECT COALESCE(MAX(id), 0) FROM campaign_member").scalar()
    _insert_fresh(ctx, query, params)
    _flip_to_control(ctx, source, before)
    if source.kind != ACTIVATION_SOURCE:
        _insert_reentering(ctx, query, params)
    cp.processed += _count_chunk(ctx, before)
    if hi is not None:
        cp.cursor = hi
        return False
    cp.source_index += 1
    cp.cursor = None
    return cp.source_index >= len(cp.sources)


def _insert_fresh(ctx: StepContext, query: CandidateQuery, params: dict) -> None:
    """Fresh newcomers (no earlier membership) as test, hash computed once per row."""
    if query.source.kind != ACTIVATION_SOURCE:
        query = query.where(f"NOT {HAS_CLOSED_MEMBERSHIP}")
    ctx.execute(
        f"""{MEMBER_INSERT}
            SELECT :cid, p.id, 'test', 'test', {ENTRY_SOURCE}, {query.key_sql},
                   {query.hash_sql}, CAST(:cur AS INTEGER), :now, :b, :actor,
                   sm.left_at, sm.left_by
            {query.from_where}""",
        params,
        times=("now",),
    )


def _flip_to_control(ctx: StepContext, source: Source, before: int) -> None:
    """This chunk's fresh rows at or below their stratum's cut-off become control (the
    joined group too): they were never visible as test."""
    cutoffs = sorted(ctx.checkpoint.plan.cutoffs.items())
    if not cutoffs:
        return
    external_id = ctx.collate(_MEMBER_EXTERNAL_ID)
    if source.kind == ACTIVATION_SOURCE:
        # Per stratum, an index range on (campaign, 'test', stratum, hash) that only meets
        # this chunk's picks (earlier chunks' picks are control already).
        for key, cut in cutoffs:
            ctx.execute(
                f"""UPDATE campaign_member SET "group" = 'control', joined_group = 'control'
                    WHERE campaign_id = :cid AND "group" = 'test' AND stratum_key = :k
                      AND assignment_hash <= :h AND id > :before AND joined_build_id = :b
                      AND (assignment_hash < :h OR {external_id} <= :e)""",
                {**ctx.ids, "k": key, "h": cut.hash, "e": cut.external_id, "before": before},
            )
        return
    # Newcomers of an active campaign: scan only this chunk's rows (id range).
    values = ", ".join(
        f"(CAST(:tk{i} AS TEXT), CAST(:th{i} AS BIGINT), CAST(:te{i} AS TEXT))"
        for i in range(len(cutoffs))
    )
    params: dict[str, Any] = {**ctx.ids, "before": before}
    for i, (key, cut) in enumerate(cutoffs):
        params.update({f"tk{i}": key, f"th{i}": cut.hash, f"te{i}": cut.external_id})
    ctx.execute(
        f"""WITH t(tk, th, te) AS (VALUES {values})
            UPDATE campaign_member SET "group" = 'control', joined_group = 'control'
            WHERE {CHUNK_ROWS}
              AND EXISTS (SELECT 1 FROM t WHERE t.tk = campaign_member.stratum_key
                  AND campaign_member.assignment_hash <= t.th
                  AND (campaign_member.assignment_hash < t.th OR {external_id} <= t.te))""",
        params,
    )


def _insert_reentering(ctx: StepContext, query: CandidateQuery, params: dict) -> None:
    """R4: re-entering profiles get the group of their latest closed membership; control
    only while the LCG is on, the membership is of the current cohort and the limit
    leaves room (the plan's re-entry cut-off)."""
    plan = ctx.checkpoint.plan
    cut = plan.reentry_cutoff
    params = dict(params)
    if not ctx.checkpoint.lcg.enabled or (plan.reentry_capped and cut is None):
        group = "'test'"
    elif not plan.reentry_capped:
        group = "CASE WHEN c.fg = 'control' AND c.fc = :cur THEN 'control' ELSE 'test' END"
    else:  # R4: the limit leaves room only for those at or below the cut-off
        group = f"""CASE WHEN c.fg = 'control' AND c.fc = :cur AND (c.h < :rh
                        OR (c.h = :rh AND {ctx.collate("c.ext")} <= :re))
                    THEN 'control' ELSE 'test' END"""
        params.update(rh=cut.hash, re=cut.external_id)
    ctx.execute(
        f"""{MEMBER_INSERT}
            SELECT :cid, c.pid, {group}, {group},
                   CASE WHEN c.segid = :cseg THEN :segsrc ELSE 'expansion' END,
                   c.k, c.h, c.fc, :now, :b, :actor, NULL, NULL
            FROM ({query.select(with_hash=True)}) c WHERE c.fg IS NOT NULL""",
        params,
        times=("now",),
    )


def _count_chunk(ctx: StepContext, before: int) -> int:
    """Counters from a GROUP BY over the chunk's new open rows (R4a: a snapshot member
    that left after activation is inserted closed and counts nowhere); returns how many
    rows the chunk assigned, open or not (progress)."""
    in_cohort = "CASE WHEN cohort = :curc THEN 1 ELSE 0 END"
    is_open = "CASE WHEN left_at IS NULL THEN 1 ELSE 0 END"
    rows = ctx.execute(
        f"""SELECT stratum_key, "group", {in_cohort}, {is_open}, COUNT(*) FROM campaign_member
            WHERE {CHUNK_ROWS} GROUP BY stratum_key, "group", {in_cohort}, {is_open}""",
        {**ctx.ids, "before": before, "curc": ctx.campaign.lcg_cohort},
    ).all()
    apply_counter_deltas(
        ctx.session,
        ctx.campaign.id,
        [(k, g, bool(x), int(n)) for k, g, x, still_open, n in rows if still_open],
    )
    return sum(int(r[4]) for r in rows)
