"""One step of an audience build: the phases of store/builds.py's docstring, each chunk
one transaction (rekey, demote, plan, trim, assign, finish) over a frozen checkpoint
(store/build_checkpoint.py).

store/builds.py queues, claims and drives builds; this module does the work of a step,
store/build_plan.py the plan phase, store/build_assign.py the assign phase and
store/build_sql.py the context and the candidate query they share.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import mailings, strata
from store.build_assign import phase_assign
from store.build_checkpoint import (
    ACTIVATION_SOURCE,
    DELTA_SOURCE,
    EXPANSION_SOURCE,
    Checkpoint,
    LcgSettings,
    Source,
)
from store.build_plan import phase_plan
from store.build_sql import StepContext, drop_stored, key_range
from store.counters import CounterDelta, apply_counter_deltas
from store.db import keep_statistics_fresh
from store.errors import InvalidStateError
from store.locations import is_postgres
from store.models import AudienceBuild, Campaign, Mailing, Segment, utcnow
from store.profiles import database_fields
from store.scope import r1_scope_sql
from store.states import (
    ENDED_BUILD_STATUSES,
    RECALCULATING_REASONS,
    BuildReason,
    BuildStatus,
    CampaignStatus,
    MailingStatus,
    ProfileEventKind,
)

__all__ = ["LostClaim", "end_build", "run_step"]

SQLITE_CACHE_KB = 16_384
MOVE_CHUNK = 20_000  # members moved to test per transaction (events are batched inserts)


class LostClaim(Exception):
    """The build is no longer ours (cancelled, completed campaign, requeued elsewhere)."""


def end_build(
    session: Session,
    build: AudienceBuild,
    status: BuildStatus,
    error: str | None = None,
    *,
    at: datetime | None = None,
) -> None:
    """The one way a build ends (done, failed or cancelled): it records how and when and
    resumes the mailings it paused, whatever the outcome (R5)."""
    if status not in ENDED_BUILD_STATUSES:
        raise ValueError(f"a build ends as one of {', '.join(ENDED_BUILD_STATUSES)}, not {status}")
    build.status = status
    build.finished_at = at or utcnow()
    if error is not None:
        build.error = error[:2000]
    session.add(build)
    mailings.resume_after_build(session, build)
    session.flush()


def run_step(session: Session, build_id: int, worker: str, chunk: int) -> tuple[str, int, int]:
    """Run one chunk of the build's current phase; returns (outcome, processed, total)
    with outcome "more", "done" or "cancelled" (the campaign was completed, R8)."""
    build = _claimed_build(session, build_id, worker)
    campaign = session.get(Campaign, build.campaign_id)
    if campaign.status == CampaignStatus.COMPLETED:
        end_build(session, build, BuildStatus.CANCELLED)
        return "cancelled", build.processed, build.total
    if campaign.status != CampaignStatus.ACTIVE:
        raise InvalidStateError(f"campaign {campaign.name!r} is not active")
    checkpoint = Checkpoint.from_json(build.checkpoint) if build.checkpoint else None
    ctx = StepContext(session, build, campaign, checkpoint)
    if checkpoint is None:
        ctx.checkpoint = _start(ctx)
    cp = ctx.checkpoint
    if PHASES[cp.phase](ctx, chunk):
        cp.next_phase()
    # A delta that fits in one chunk (build_plan._store_candidates): its assign runs in
    # this step too, from the candidates the plan stored, one source per call.
    while ctx.stored and not cp.finished:
        if PHASES[cp.phase](ctx, chunk):
            cp.next_phase()
    for stored in ctx.stored.values():
        drop_stored(ctx, stored.table)
    if cp.finished:
        _finish(ctx)
    _save_step(ctx, worker)
    if cp.finished:
        end_build(session, build, BuildStatus.DONE)
        return "done", cp.processed, cp.total
    return "more", cp.processed, cp.total


def _claimed_build(session: Session, build_id: int, worker: str) -> AudienceBuild:
    query = sa.select(AudienceBuild).where(AudienceBuild.id == build_id)
    if is_postgres(session):
        query = query.with_for_update()
    else:
        # A larger page cache keeps the member indexes' hot pages and the candidate scans
        # in memory (per connection; ~16 MB at most: the indexes fill nearly in order).
        session.execute(sa.text(f"PRAGMA cache_size = -{SQLITE_CACHE_KB}"))
    build = session.scalar(query)
    if build is None or build.status != BuildStatus.RUNNING or build.worker != worker:
        raise LostClaim()
    return build


def _save_step(ctx: StepContext, worker: str) -> None:
    """Commit point of the step: checkpoint, heartbeat and progress, only if still ours."""
    cp = ctx.checkpoint
    values: dict[str, Any] = {
        "checkpoint": cp.to_json(),
        "heartbeat_at": utcnow(),
        "processed": cp.total if cp.finished else min(cp.processed, cp.total),
        "total": cp.total,
    }
    if cp.finished:
        values["warnings"] = cp.plan.warnings  # then end_build marks it done
    result = ctx.session.execute(
        sa.update(AudienceBuild)
        .where(
            AudienceBuild.id == ctx.build.id,
            AudienceBuild.status == BuildStatus.RUNNING,
            AudienceBuild.worker == worker,
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise LostClaim()


def _start(ctx: StepContext) -> Checkpoint:
    """Freeze what the build looks at: settings, segment bound, sources, estimates."""
    session, campaign, build = ctx.session, ctx.campaign, ctx.build
    segment_bound = int(
        session.scalar(sa.text("SELECT COALESCE(MAX(id), 0) FROM segment_member")) or 0
    )
    if build.reason == "activation" and campaign.segment_watermark:
        # R4a: the snapshot bound taken at activation (campaigns.activate); 0 only for a
        # campaign activated by release 1, whose activation build reads up to now.
        segment_bound = int(campaign.segment_watermark)
    names = list(campaign.lcg_strata or [])
    by_name = {f.name: f for f in database_fields(session, campaign.database_id)}
    first = ACTIVATION_SOURCE if build.reason == BuildReason.ACTIVATION else DELTA_SOURCE
    sources = [Source(first, campaign.segment_id)]
    if build.mailing_id is not None:
        mailing = session.get(Mailing, build.mailing_id)
        # R11: only a mailing that is not completed (sent or stopped) expands.
        if (
            mailing is not None
            and mailing.segment_id is not None
            and mailing.status == MailingStatus.ACTIVE
        ):
            sources.append(Source(EXPANSION_SOURCE, mailing.segment_id))
    trimming = build.reason in RECALCULATING_REASONS
    phases = (["rekey"] if trimming else []) + ["demote", "plan"]
    phases += (["trim"] if trimming else []) + ["assign"]
    total_base = campaign.members if trimming else 0
    estimate = sum(_source_estimate(ctx, s, segment_bound) for s in sources)
    return Checkpoint(
        reason=build.reason,
        segment_bound=segment_bound,
        watermark=int(campaign.segment_watermark),
        lcg=LcgSettings(
            enabled=bool(campaign.lcg_enabled),
            cohort=campaign.lcg_cohort,
            percent_bp=campaign.lcg_percent_bp,
            limit=campaign.lcg_limit,
            strata=names,
            key_sql=strata.key_sql([by_name[n] for n in names if n in by_name]),
            seed=int(campaign.seed),
        ),
        sources=sources,
        phases=phases,
        total_base=total_base,
        total=total_base + estimate,
    )


def _source_estimate(ctx: StepContext, source: Source, segment_bound: int) -> int:
    """Progress total before the plan counts exactly: the segment rows a source reads."""
    if source.kind == DELTA_SOURCE:
        count = ctx.execute(
            # A rowid range (+: not the segment's index, which holds all its rows).
            "SELECT COUNT(*) FROM segment_member WHERE id > :wm AND id <= :mx "
            "AND +segment_id = :seg",
            {"wm": ctx.campaign.segment_watermark, "mx": segment_bound, "seg": source.segment_id},
        ).scalar()
    else:
        count = ctx.session.scalar(
            sa.select(Segment.member_count).where(Segment.id == source.segment_id)
        )
    return int(count or 0)


# ---- phase 1: rekey

OPEN_MEMBER = "campaign_id = :cid AND left_at IS NULL"


def _phase_rekey(ctx: StepContext, chunk: int) -> bool:
    cp = ctx.checkpoint
    lo = cp.cursor or 0
    hi = ctx.row_after(
        f"SELECT profile_id FROM campaign_member WHERE {OPEN_MEMBER} AND profile_id > :lo "
        "ORDER BY profile_id",
        {**ctx.ids, "lo": lo},
        chunk,
    )
    res = ctx.execute(
        f"""UPDATE campaign_member SET stratum_key =
                (SELECT {cp.lcg.key_sql} FROM profile p WHERE p.id = campaign_member.profile_id)
            WHERE {OPEN_MEMBER} AND {key_range("profile_id", hi)}""",
        {**ctx.ids, "lo": lo, "hi": hi},
    )
    cp.processed += max(res.rowcount or 0, 0)
    if hi is not None:
        cp.cursor = hi
        return False
    _recount(ctx)
    return True


def _recount(ctx: StepContext) -> None:
    """Rebuild the campaign's counters from its open member rows (after a rekey)."""
    ctx.execute("DELETE FROM campaign_stratum WHERE campaign_id = :cid", ctx.ids)
    ctx.execute(
        f"""INSERT INTO campaign_stratum (campaign_id, stratum_key, members, cohort, control, quota)
           SELECT :cid, stratum_key, COUNT(*),
                  SUM(CASE WHEN cohort = :cur THEN 1 ELSE 0 END),
                  SUM(CASE WHEN "group" = 'control' THEN 1 ELSE 0 END), 0
           FROM campaign_member WHERE {OPEN_MEMBER}
           GROUP BY stratum_key""",
        {**ctx.ids, "cur": ctx.campaign.lcg_cohort},
    )
    row = ctx.execute(
        """SELECT COALESCE(SUM(members), 0), COALESCE(SUM(control), 0), COALESCE(SUM(cohort), 0)
           FROM campaign_stratum WHERE campaign_id = :cid""",
        ctx.ids,
    ).one()
    members, control, cohort = (int(x) for x in row)
    ctx.session.execute(
        sa.update(Campaign)
        .where(Campaign.id == ctx.campaign.id)
        .values(
            members=members,
            control_count=control,
            test_count=members - control,
            cohort_size=cohort,
        )
    )


# ---- phases 2 and 4: moves to test


def _move_to_test(
    ctx: StepContext, where: str, params: dict, limit: int, *, index: str | None = None
) -> int:
    """Move up to `limit` open control members matching `where` (over alias m) to test,
    with one `moved_to_test` event each (R6, R7). Returns how many moved. `index` names
    the index SQLite must use (it cannot tell which is selective without statistics)."""
    indexed_by = f" INDEXED BY {index}" if index and not ctx.is_postgres else ""
    rows = ctx.execute(
        f"""UPDATE campaign_member SET "group" = 'test'
            WHERE id IN (SELECT m.id FROM campaign_member m{indexed_by}
                         WHERE m.campaign_id = :cid AND m.left_at IS NULL
                           AND m."group" = 'control' AND {where}
                         ORDER BY m.id LIMIT :lim)
            RETURNING profile_id, stratum_key, cohort""",
        {**ctx.ids, **params, "lim": limit},
    ).all()
    if not rows:
        return 0
    ctx.execute(
        f"""INSERT INTO profile_event (at, profile_id, kind, campaign_id, "group", build_id, actor)
           VALUES (:now, :pid, '{ProfileEventKind.MOVED_TO_TEST}', :cid, 'test', :b, :actor)""",
        [{**ctx.ids, "now": ctx.now, "pid": r[0], "actor": ctx.actor} for r in rows],
        times=("now",),
    )
    current = ctx.campaign.lcg_cohort
    deltas: list[CounterDelta] = []
    for _pid, key, cohort in rows:
        deltas.append((key, "control", cohort == current, -1))
        deltas.append((key, "test", cohort == current, 1))
    apply_counter_deltas(ctx.session, ctx.campaign.id, deltas)
    ctx.checkpoint.processed += len(rows)
    return len(rows)


def _phase_demote(ctx: StepContext, chunk: int) -> bool:
    # R7 (LCG off: every control member) and ended cohorts (R9: only the current cohort
    # can hold control members).
    settings = ctx.checkpoint.lcg
    limit = min(chunk, MOVE_CHUNK)
    index = "ix_campaign_member_open_control"
    if not settings.enabled:
        return _move_to_test(ctx, "1 = 1", {}, limit, index=index) < limit
    # One range of ix_campaign_member_open_control per condition: nothing to read when no
    # member is outside the cohort (an incremental build), whatever the campaign's size.
    # Written as one OR, SQLite read every open control member of the campaign instead.
    budget = limit
    for where in ("m.cohort IS NULL", "m.cohort < :cur", "m.cohort > :cur"):
        params = {"cur": settings.cohort} if ":cur" in where else {}
        budget -= _move_to_test(ctx, where, params, budget, index=index)
        if budget == 0:
            return False
    return True


def _phase_trim(ctx: StepContext, chunk: int) -> bool:
    """R6: surplus control members with the largest (hash, external_id) move to test."""
    cp = ctx.checkpoint
    trims = cp.plan.trims
    index = cp.cursor or 0
    budget = min(chunk, MOVE_CHUNK)
    external_id = ctx.collate("p.external_id")
    while index < len(trims) and budget > 0:
        trim = trims[index]
        where = f"""m.stratum_key = :k AND m.assignment_hash >= :h AND (m.assignment_hash > :h
                    OR (SELECT {external_id} FROM profile p WHERE p.id = m.profile_id) >= :e)"""
        params = {"k": trim.stratum, "h": trim.hash, "e": trim.external_id}
        moved = _move_to_test(ctx, where, params, budget)
        budget -= moved
        if moved == 0 or budget > 0:
            index += 1
    cp.cursor = index
    return index >= len(trims)


# ---- phase 6: finish

# R3: in the pending audience when the draft was created, not entered at activation.
# Only intervals closed since the creation can qualify (an open one is a member).
R3_LEFT_CAMPAIGN = f"""
    INSERT INTO profile_event (at, profile_id, kind, campaign_id, build_id, actor)
    SELECT :at, q.profile_id, '{ProfileEventKind.LEFT_CAMPAIGN}', :cid, :b, :actor FROM (
        SELECT DISTINCT sm.profile_id FROM segment_member sm
        JOIN profile p ON p.id = sm.profile_id
        WHERE sm.segment_id = :seg AND sm.left_at > :created
          AND sm.entered_at <= :created
          AND {r1_scope_sql("p")}
          AND NOT EXISTS (SELECT 1 FROM campaign_member m
                          WHERE m.profile_id = sm.profile_id
                            AND m.campaign_id = :cid AND m.joined_build_id = :b)
    ) q"""


def _finish(ctx: StepContext) -> None:
    cp, campaign = ctx.checkpoint, ctx.campaign
    if cp.reason == BuildReason.ACTIVATION and campaign.activated_at is not None:
        ctx.execute(
            R3_LEFT_CAMPAIGN,
            {
                **ctx.ids,
                "at": campaign.activated_at,
                "created": campaign.created_at,
                "seg": campaign.segment_id,
                "actor": ctx.actor,
            },
            times=("at", "created"),
        )
    keep_statistics_fresh(ctx.session, "campaign_member", cp.processed)
    _store_quotas(ctx, cp.plan.quotas)
    greatest = sa.func.greatest if ctx.is_postgres else sa.func.max
    ctx.session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(
            segment_watermark=greatest(Campaign.segment_watermark, cp.segment_bound),
            warnings=cp.plan.warnings,
        )
    )


def _store_quotas(ctx: StepContext, quotas: dict[str, int]) -> None:
    ctx.execute("UPDATE campaign_stratum SET quota = 0 WHERE campaign_id = :cid", ctx.ids)
    if quotas:
        ctx.execute(
            """INSERT INTO campaign_stratum (campaign_id, stratum_key, members, cohort, control, quota)
               VALUES (:cid, :k, 0, 0, 0, :q)
               ON CONFLICT (campaign_id, stratum_key) DO UPDATE SET quota = excluded.quota""",
            [{**ctx.ids, "k": k, "q": q} for k, q in sorted(quotas.items())],
        )
    ctx.execute(
        "DELETE FROM campaign_stratum WHERE campaign_id = :cid AND members = 0 AND quota = 0 "
        "AND control = 0 AND cohort = 0",
        ctx.ids,
    )


PHASES: dict[str, Callable[[StepContext, int], bool]] = {
    "rekey": _phase_rekey,
    "demote": _phase_demote,
    "plan": phase_plan,
    "trim": _phase_trim,
    "assign": phase_assign,
}
