"""Audience builds (R2–R11): queue, claim, run in resumable chunks.

Every build, whatever its reason, reconciles the campaign with its settings in phases;
each phase runs in chunks, and every chunk is one transaction that commits its rows,
events and counters together with `processed`, `heartbeat_at` and the checkpoint:

1. rekey   (recalculation, lcg_disable) recompute the open members' stratum keys for the
           current strata fields, then rebuild the per-stratum counters from the rows.
2. demote  (all) control members outside the current LCG cohort, or all of them when the
           LCG is off, move to test with `moved_to_test` (R7; cohort ended).
3. stage   (all) newcomers into `build_candidate`, with stratum key and R9 hash computed
           once, set-based: activation takes every open segment member (R3); the others
           only segment rows above the campaign's watermark with no open membership
           (R2c), and an expansion build also the mailing's own segment (R11). R1 scope.
           Re-entering profiles carry the group of their latest closed membership (R4).
4. plan    (one transaction) T, quotas (R9 largest remainder), surplus thresholds (R6),
           and the control picks: in each stratum the min(q_s − c_s, newcomers) newcomers
           with the smallest (assignment_hash, external_id) are marked control. The plan
           and the marks are committed with the checkpoint, so a resumed build uses
           exactly the same decisions as an uninterrupted one.
5. trim    (recalculation, lcg_disable) surplus control members with the largest
           (hash, external_id) move to test with `moved_to_test` (R6). Incremental and
           expansion builds never trim: they only fill deficits.
6. assign  (all) copy the candidates into campaign_member (INSERT … SELECT) by profile id
           range; leavers that left meanwhile are skipped.
7. finish  R3 `left_campaign` events (activation), watermark, quotas, R10 warnings.

Events carry the build id; the unique index on (build, profile, kind, campaign) and the
chunk-with-checkpoint commits mean a resumed build never writes an event twice (R12).
Builds that change LCG membership pause the campaign's scheduled mailings while they run
(R5/R6) and resume them at the end, whatever the outcome.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store import audit, lcg, mailings, strata
from store.actors import Actor
from store.audience import apply_counter_deltas, r1_scope_sql
from store.db import transaction
from store.errors import InvalidStateError
from store.models import (
    BUILD_REASONS,
    AudienceBuild,
    BuildCandidate,
    Campaign,
    CampaignStratum,
    Mailing,
    Segment,
    UTCDateTime,
    utcnow,
)
from store.profiles import database_fields

CHUNK_SIZE = 50_000
MOVE_CHUNK = 20_000  # members moved to test per transaction (events are batched inserts)
REASON_RANK = {
    "incremental": 0,
    "expansion": 0,
    "recalculation": 1,
    "lcg_disable": 2,
    "activation": 3,
}
TRIMMING_REASONS = ("recalculation", "lcg_disable")
PAUSING_REASONS = ("recalculation", "lcg_disable")


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------- queueing


def queue_build(
    session: Session,
    campaign: Campaign,
    reason: str,
    actor: Actor,
    *,
    mailing: Mailing | None = None,
) -> AudienceBuild:
    """R2: queue a build, or merge into a queued one of the campaign that has not started.

    Every build reads the campaign's settings when it starts and always takes the segment
    newcomers, so an incremental request merges into any not-yet-started build; other
    requests merge into one of the same kind (same mailing for expansions), keeping the
    strongest reason and pausing mailings if either asked for it.
    """
    if reason not in BUILD_REASONS:
        raise ValueError(f"unknown build reason {reason!r}")
    if campaign.status == "completed":
        raise InvalidStateError(f"campaign {campaign.name!r} is completed and read-only (R8)")
    if campaign.status != "active" and reason != "activation":
        raise InvalidStateError(
            f"campaign {campaign.name!r} is a draft: no build before activation"
        )
    if reason == "expansion" and mailing is None:
        raise ValueError("an expansion build needs its mailing")
    pauses = reason in PAUSING_REASONS or (reason == "activation" and campaign.lcg_enabled)
    mailing_id = mailing.id if mailing is not None else None
    query = sa.select(AudienceBuild).where(
        AudienceBuild.campaign_id == campaign.id,
        AudienceBuild.status == "queued",
        AudienceBuild.started_at.is_(None),
    )
    if reason != "incremental":
        query = query.where(
            AudienceBuild.mailing_id.is_(None)
            if mailing_id is None
            else AudienceBuild.mailing_id == mailing_id
        )
    existing = session.scalar(query.order_by(AudienceBuild.id).limit(1))
    if existing is not None:
        if REASON_RANK[reason] > REASON_RANK[existing.reason] and existing.mailing_id is None:
            existing.reason = reason
        existing.pauses_mailings = existing.pauses_mailings or pauses
        session.add(existing)
        session.flush()
        return existing
    build = AudienceBuild(
        campaign_id=campaign.id,
        reason=reason,
        requested_by=actor.user,
        requested_at=utcnow(),
        mailing_id=mailing_id,
        pauses_mailings=pauses,
    )
    session.add(build)
    session.flush()
    return build


def cancel_build(session: Session, actor: Actor, build: AudienceBuild) -> None:
    actor.require_write("cancel an audience build")
    if build.status not in ("queued", "running"):
        raise InvalidStateError(f"build #{build.id} is {build.status}; nothing to cancel")
    _end(session, build, "cancelled")
    audit.record(session, actor, "build.cancel", "build", build.id, f"#{build.id}")


def _end(session: Session, build: AudienceBuild, status: str, error: str | None = None) -> None:
    build.status = status
    build.finished_at = utcnow()
    build.worker = None if status == "queued" else build.worker
    if error is not None:
        build.error = error[:2000]
    session.add(build)
    session.execute(sa.delete(BuildCandidate).where(BuildCandidate.build_id == build.id))
    mailings.resume_after_build(session, build)
    session.flush()


# --------------------------------------------------------------------------- claiming


def _running_exists(campaign_id: Any) -> sa.Exists:
    other = AudienceBuild.__table__.alias("other")
    return (
        sa.select(other.c.id)
        .where(other.c.campaign_id == campaign_id, other.c.status == "running")
        .exists()
    )


def claim_next_build(engine: Engine, worker: str, exclude_campaign_ids=()) -> int | None:
    """Mark the oldest claimable queued build running (never two per campaign: a partial
    unique index backs the check) and pause mailings when it pauses them (R5/R6)."""
    with Session(engine) as session:
        query = sa.select(AudienceBuild.id, AudienceBuild.campaign_id).where(
            AudienceBuild.status == "queued", ~_running_exists(AudienceBuild.campaign_id)
        )
        if exclude_campaign_ids:
            query = query.where(AudienceBuild.campaign_id.not_in(list(exclude_campaign_ids)))
        candidates = session.execute(
            query.order_by(AudienceBuild.requested_at, AudienceBuild.id).limit(20)
        ).all()
    for build_id, campaign_id in candidates:
        try:
            with transaction(engine) as session:
                if engine.dialect.name == "postgresql":
                    session.execute(
                        sa.select(Campaign.id).where(Campaign.id == campaign_id).with_for_update()
                    )
                now = utcnow()
                result = session.execute(
                    sa.update(AudienceBuild)
                    .where(
                        AudienceBuild.id == build_id,
                        AudienceBuild.status == "queued",
                        ~_running_exists(campaign_id),
                    )
                    .values(
                        status="running",
                        worker=worker,
                        started_at=sa.func.coalesce(
                            AudienceBuild.started_at, sa.literal(now, UTCDateTime())
                        ),
                        heartbeat_at=now,
                    )
                )
                if result.rowcount != 1:
                    continue
                build = session.get(AudienceBuild, build_id)
                session.refresh(build)
                if build.pauses_mailings:
                    mailings.pause_for_build(session, build)
            return build_id
        except sa.exc.IntegrityError:
            continue
    return None


def requeue_abandoned(engine: Engine, stale_after: timedelta) -> list[int]:
    """Crash recovery: running builds whose heartbeat is older than `stale_after` go back to
    `queued` with their checkpoint; mailings they paused stay paused until they end."""
    cutoff = utcnow() - stale_after
    with transaction(engine) as session:
        ids = list(
            session.scalars(
                sa.select(AudienceBuild.id).where(
                    AudienceBuild.status == "running", AudienceBuild.heartbeat_at < cutoff
                )
            )
        )
        if ids:
            session.execute(
                sa.update(AudienceBuild)
                .where(AudienceBuild.id.in_(ids), AudienceBuild.status == "running")
                .values(status="queued", worker=None)
            )
    return ids


# --------------------------------------------------------------------------- running


class _Lost(Exception):
    """The build is no longer ours (cancelled, completed campaign, requeued elsewhere)."""


def run_build(
    engine: Engine,
    build_id: int,
    *,
    worker: str,
    should_stop: Callable[[], bool] = lambda: False,
    chunk_size: int = CHUNK_SIZE,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> str:
    """Run (or resume) a claimed build chunk by chunk. Returns done | failed | cancelled,
    or interrupted when should_stop() turned true between chunks (back to queued)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    while True:
        try:
            with transaction(engine) as session:
                outcome, processed, total = _step(session, build_id, worker, chunk_size)
        except _Lost:
            with Session(engine) as session:
                status = session.scalar(
                    sa.select(AudienceBuild.status).where(AudienceBuild.id == build_id)
                )
            return "cancelled" if status in ("cancelled", None) else "interrupted"
        except Exception as exc:  # the chunk rolled back; record why and end the build
            _fail(engine, build_id, worker, f"{type(exc).__name__}: {exc}")
            return "failed"
        if on_progress is not None:
            on_progress(build_id, processed, total)
        if outcome != "more":
            return outcome
        if should_stop():
            with transaction(engine) as session:
                session.execute(
                    sa.update(AudienceBuild)
                    .where(
                        AudienceBuild.id == build_id,
                        AudienceBuild.status == "running",
                        AudienceBuild.worker == worker,
                    )
                    .values(status="queued", worker=None, heartbeat_at=utcnow())
                )
            return "interrupted"


def run_pending(
    engine: Engine,
    worker: str = "inline",
    on_progress: Callable[[int, int, int], None] | None = None,
) -> list[int]:
    """Claim and run queued builds until none is left (CLI --wait, demo, tests)."""
    ran: list[int] = []
    while True:
        build_id = claim_next_build(engine, worker)
        if build_id is None:
            return ran
        run_build(engine, build_id, worker=worker, on_progress=on_progress)
        ran.append(build_id)


def _fail(engine: Engine, build_id: int, worker: str, error: str) -> None:
    with transaction(engine) as session:
        build = session.get(AudienceBuild, build_id)
        if build is not None and build.status == "running" and build.worker == worker:
            _end(session, build, "failed", error)


# --------------------------------------------------------------------------- one step


class _Ctx:
    def __init__(self, session: Session, build: AudienceBuild, campaign: Campaign, cp: dict):
        self.s = session
        self.build = build
        self.c = campaign
        self.cp = cp
        self.pg = session.get_bind().dialect.name == "postgresql"
        self.now = utcnow()
        self.actor = build.requested_by or "system"

    def collate(self, expr: str) -> str:
        return f'{expr} COLLATE "C"' if self.pg else expr

    def exec(self, sql: str, params: dict | list | None = None, times: tuple[str, ...] = ()):
        stmt = sa.text(sql)
        if times:
            stmt = stmt.bindparams(*(sa.bindparam(t, type_=UTCDateTime()) for t in times))
        return self.s.execute(stmt, params or {})

    @property
    def base(self) -> dict[str, Any]:
        return {"cid": self.c.id, "db": self.c.database_id, "b": self.build.id}


def _step(session: Session, build_id: int, worker: str, chunk: int) -> tuple[str, int, int]:
    query = sa.select(AudienceBuild).where(AudienceBuild.id == build_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    build = session.scalar(query)
    if build is None or build.status != "running" or build.worker != worker:
        raise _Lost()
    campaign = session.get(Campaign, build.campaign_id)
    if campaign.status == "completed":
        _end(session, build, "cancelled")
        return "cancelled", build.processed, build.total
    if campaign.status != "active":
        raise InvalidStateError(f"campaign {campaign.name!r} is not active")
    cp = dict(build.checkpoint or {})
    ctx = _Ctx(session, build, campaign, cp)
    if not cp:
        _init(ctx)
    phase = cp["phases"][cp["i"]]
    done = PHASES[phase](ctx, chunk)
    if done:
        cp["i"] += 1
        cp["cursor"] = None
    if cp["i"] == len(cp["phases"]):
        _finish(ctx)
        outcome = "done"
    else:
        outcome = "more"
    result = session.execute(
        sa.update(AudienceBuild)
        .where(
            AudienceBuild.id == build_id,
            AudienceBuild.status == "running",
            AudienceBuild.worker == worker,
        )
        .values(
            checkpoint=dict(cp),
            heartbeat_at=utcnow(),
            processed=min(cp["processed"], cp["total"]) if outcome == "more" else cp["total"],
            total=cp["total"],
            **(
                {"status": "done", "finished_at": utcnow(), "warnings": cp["plan"]["warnings"]}
                if outcome == "done"
                else {}
            ),
        )
    )
    if result.rowcount != 1:
        raise _Lost()
    if outcome == "done":
        mailings.resume_after_build(session, build)
    return outcome, cp["processed"], cp["total"]


def _init(ctx: _Ctx) -> None:
    """Freeze what the build looks at: settings, segment bound, sources, estimates."""
    s, c, b = ctx.s, ctx.c, ctx.build
    max_sm = s.scalar(sa.text("SELECT COALESCE(MAX(id), 0) FROM segment_member")) or 0
    fields = database_fields(s, c.database_id)
    names = list(c.lcg_strata or [])
    by_name = {f.name: f for f in fields}
    strata_fields = [by_name[n] for n in names if n in by_name]
    activation = b.reason == "activation"
    sources: list[dict[str, Any]] = []
    if activation:
        sources.append({"kind": "all", "segment": c.segment_id})
    else:
        sources.append({"kind": "delta", "segment": c.segment_id})
    if b.mailing_id is not None:
        mailing = s.get(Mailing, b.mailing_id)
        if mailing is not None and mailing.segment_id is not None and mailing.status != "stopped":
            sources.append({"kind": "expansion", "segment": mailing.segment_id})
    estimate = 0
    for src in sources:
        if src["kind"] == "delta":
            n = s.scalar(
                sa.text(
                    "SELECT COUNT(*) FROM segment_member WHERE id > :wm AND id <= :mx "
                    "AND segment_id = :seg"
                ),
                {"wm": c.segment_watermark, "mx": max_sm, "seg": src["segment"]},
            )
        else:
            n = s.scalar(sa.select(Segment.member_count).where(Segment.id == src["segment"]))
        estimate += int(n or 0)
    trimming = b.reason in TRIMMING_REASONS
    phases = (["rekey"] if trimming else []) + ["demote", "stage", "plan"]
    phases += (["trim"] if trimming else []) + ["assign"]
    ctx.cp.update(
        {
            "version": 1,
            "reason": b.reason,
            "max_sm": int(max_sm),
            "enabled": bool(c.lcg_enabled),
            "cohort": c.lcg_cohort,
            "percent_bp": c.lcg_percent_bp,
            "limit": c.lcg_limit,
            "strata": names,
            "key_sql": strata.key_sql(strata_fields),
            "seed": int(c.seed),
            "sources": sources,
            "src": 0,
            "phases": phases,
            "i": 0,
            "cursor": None,
            "processed": 0,
            "total": (c.members if trimming else 0) + 2 * estimate,
            "plan": {"warnings": []},
        }
    )


def _bound(ctx: _Ctx, sql: str, params: dict, chunk: int) -> Any:
    """The key of the chunk-th row after the cursor (None: the rest fits in this chunk)."""
    return ctx.exec(sql + " LIMIT 1 OFFSET :off", {**params, "off": chunk - 1}).scalar()


def _range_sql(col: str, hi: Any) -> str:
    return f"{col} > :lo" + (f" AND {col} <= :hi" if hi is not None else "")


# ---- phase 1: rekey


def _phase_rekey(ctx: _Ctx, chunk: int) -> bool:
    lo = ctx.cp["cursor"] or 0
    open_m = "campaign_id = :cid AND left_at IS NULL"
    hi = _bound(
        ctx,
        f"SELECT profile_id FROM campaign_member WHERE {open_m} AND profile_id > :lo "
        "ORDER BY profile_id",
        {**ctx.base, "lo": lo},
        chunk,
    )
    res = ctx.exec(
        f"""UPDATE campaign_member SET stratum_key =
                (SELECT {ctx.cp["key_sql"]} FROM profile p WHERE p.id = campaign_member.profile_id)
            WHERE {open_m} AND {_range_sql("profile_id", hi)}""",
        {**ctx.base, "lo": lo, "hi": hi},
    )
    ctx.cp["processed"] += max(res.rowcount or 0, 0)
    if hi is not None:
        ctx.cp["cursor"] = hi
        return False
    _recount(ctx)
    return True


def _recount(ctx: _Ctx) -> None:
    """Rebuild the campaign's counters from its open member rows (after a rekey)."""
    cur = ctx.c.lcg_cohort
    ctx.exec("DELETE FROM campaign_stratum WHERE campaign_id = :cid", ctx.base)
    ctx.exec(
        """INSERT INTO campaign_stratum (campaign_id, stratum_key, members, cohort, control, quota)
           SELECT :cid, stratum_key, COUNT(*),
                  SUM(CASE WHEN cohort = :cur THEN 1 ELSE 0 END),
                  SUM(CASE WHEN "group" = 'control' THEN 1 ELSE 0 END), 0
           FROM campaign_member WHERE campaign_id = :cid AND left_at IS NULL
           GROUP BY stratum_key""",
        {**ctx.base, "cur": cur},
    )
    row = ctx.exec(
        """SELECT COALESCE(SUM(members), 0), COALESCE(SUM(control), 0), COALESCE(SUM(cohort), 0)
           FROM campaign_stratum WHERE campaign_id = :cid""",
        ctx.base,
    ).one()
    members, control, cohort = (int(x) for x in row)
    ctx.s.execute(
        sa.update(Campaign)
        .where(Campaign.id == ctx.c.id)
        .values(
            members=members,
            control_count=control,
            test_count=members - control,
            cohort_size=cohort,
        )
    )


# ---- phases 2 and 5: moves to test


def _move_to_test(ctx: _Ctx, where: str, params: dict, limit: int) -> int:
    """Move up to `limit` open control members matching `where` (over alias m) to test,
    with one `moved_to_test` event each (R6, R7). Returns how many moved."""
    rows = ctx.exec(
        f"""UPDATE campaign_member SET "group" = 'test'
            WHERE id IN (SELECT m.id FROM campaign_member m
                         WHERE m.campaign_id = :cid AND m.left_at IS NULL
                           AND m."group" = 'control' AND {where}
                         ORDER BY m.id LIMIT :lim)
            RETURNING profile_id, stratum_key, cohort""",
        {**ctx.base, **params, "lim": limit},
    ).all()
    if not rows:
        return 0
    ctx.exec(
        """INSERT INTO profile_event (at, profile_id, kind, campaign_id, "group", build_id, actor)
           VALUES (:now, :pid, 'moved_to_test', :cid, 'test', :b, :actor)""",
        [{**ctx.base, "now": ctx.now, "pid": r[0], "actor": ctx.actor} for r in rows],
        times=("now",),
    )
    cur = ctx.c.lcg_cohort
    deltas: list[tuple[str, str, bool, int]] = []
    for _pid, key, cohort in rows:
        deltas.append((key, "control", cohort == cur, -1))
        deltas.append((key, "test", cohort == cur, 1))
    apply_counter_deltas(ctx.s, ctx.c.id, deltas)
    ctx.cp["processed"] += len(rows)
    return len(rows)


def _phase_demote(ctx: _Ctx, chunk: int) -> bool:
    # R7 (LCG off: every control member) and ended cohorts (R9: only the current cohort
    # can hold control members).
    if ctx.cp["enabled"]:
        where, params = "(m.cohort IS NULL OR m.cohort <> :cur)", {"cur": ctx.cp["cohort"]}
    else:
        where, params = "1 = 1", {}
    limit = min(chunk, MOVE_CHUNK)
    moved = _move_to_test(ctx, where, params, limit)
    return moved < limit


# ---- phase 3: stage


def _phase_stage(ctx: _Ctx, chunk: int) -> bool:
    cp = ctx.cp
    src = cp["sources"][cp["src"]]
    lo = cp["cursor"] or 0
    kind = src["kind"]
    params = {
        **ctx.base,
        "seg": src["segment"],
        "mx": cp["max_sm"],
        "lo": lo,
        "seed": cp["seed"],
        "wm": ctx.c.segment_watermark,
    }
    if kind == "delta":
        key_col = "sm.id"
        hi = _bound(
            ctx,
            "SELECT id FROM segment_member WHERE id > :lo AND id <= :mx ORDER BY id",
            params,
            chunk,
        )
        extra = "AND sm.id > :wm"
    else:
        key_col = "sm.profile_id"
        hi = _bound(
            ctx,
            "SELECT profile_id FROM segment_member WHERE segment_id = :seg AND left_at IS NULL "
            "AND profile_id > :lo ORDER BY profile_id",
            params,
            chunk,
        )
        extra = ""
    if kind == "all":  # activation: a draft has no memberships yet (R3)
        former = "NULL, NULL"
        not_member = ""
    else:
        latest = (
            "FROM campaign_member f WHERE f.campaign_id = :cid AND f.profile_id = p.id "
            "AND f.left_at IS NOT NULL ORDER BY f.id DESC LIMIT 1"
        )
        former = f'(SELECT f."group" {latest}), (SELECT f.cohort {latest})'
        not_member = (
            "AND NOT EXISTS (SELECT 1 FROM campaign_member o WHERE o.campaign_id = :cid "
            "AND o.profile_id = p.id AND o.left_at IS NULL) "
            "AND NOT EXISTS (SELECT 1 FROM build_candidate x WHERE x.build_id = :b "
            "AND x.profile_id = p.id)"
        )
    res = ctx.exec(
        f"""INSERT INTO build_candidate (build_id, profile_id, segment_member_id, external_id,
                stratum_key, assignment_hash, former_group, former_cohort)
            SELECT :b, p.id, sm.id, p.external_id, {cp["key_sql"]},
                   cc_assignment_hash(:seed, p.external_id), {former}
            FROM segment_member sm JOIN profile p ON p.id = sm.profile_id
            WHERE sm.segment_id = :seg AND sm.left_at IS NULL AND sm.id <= :mx {extra}
              AND {_range_sql(key_col, hi)} AND {r1_scope_sql("p")} {not_member}""",
        {**params, "hi": hi},
    )
    del res
    if hi is not None:
        cp["processed"] += chunk
        cp["cursor"] = hi
        return False
    cp["src"] += 1
    cp["cursor"] = None
    if cp["src"] < len(cp["sources"]):
        return False
    cp["processed"] = max(cp["processed"], cp["total"] // 2)
    return True


# ---- phase 4: plan


def _phase_plan(ctx: _Ctx, chunk: int) -> bool:
    cp = ctx.cp
    enabled, cur = cp["enabled"], cp["cohort"]
    names = cp["strata"]
    counters = {
        r.stratum_key: r
        for r in ctx.s.scalars(
            sa.select(CampaignStratum).where(CampaignStratum.campaign_id == ctx.c.id)
        )
    }
    staged = ctx.exec(
        """SELECT stratum_key,
                  SUM(CASE WHEN former_group IS NULL THEN 1 ELSE 0 END),
                  SUM(CASE WHEN former_group IS NOT NULL AND former_cohort = :cur THEN 1 ELSE 0 END),
                  SUM(CASE WHEN former_group = 'control' AND former_cohort = :cur THEN 1 ELSE 0 END)
           FROM build_candidate WHERE build_id = :b GROUP BY stratum_key""",
        {**ctx.base, "cur": cur},
    ).all()
    fresh = {k: int(f) for k, f, _r, _rc in staged}
    plan: dict[str, Any] = {"warnings": [], "quotas": {}, "trim": [], "picks": {}}
    if enabled:
        sizes: dict[str, int] = {k: r.cohort for k, r in counters.items() if r.cohort > 0}
        control: dict[str, int] = {k: r.control for k, r in counters.items() if r.control}
        for k, f, r_in, r_ctl in staged:
            sizes[k] = sizes.get(k, 0) + int(f) + int(r_in)
            control[k] = control.get(k, 0) + int(r_ctl)
        sizes = {k: v for k, v in sizes.items() if v > 0}
        n = sum(sizes.values())
        total = lcg.target_total(cp["percent_bp"], n, cp["limit"])
        quotas = lcg.apportion(total, sizes)
        projected = dict(control)
        trimming = cp["reason"] in TRIMMING_REASONS
        for key in sorted(quotas):
            q = quotas[key]
            have = control.get(key, 0)
            existing = counters[key].control if key in counters else 0
            if trimming and have > q:
                surplus = min(have - q, existing)
                if surplus > 0:
                    th = ctx.exec(
                        f"""SELECT m.assignment_hash, p.external_id
                            FROM campaign_member m JOIN profile p ON p.id = m.profile_id
                            WHERE m.campaign_id = :cid AND m.left_at IS NULL
                              AND m."group" = 'control' AND m.stratum_key = :k
                            ORDER BY m.assignment_hash DESC, {ctx.collate("p.external_id")} DESC
                            LIMIT 1 OFFSET :off""",
                        {**ctx.base, "k": key, "off": surplus - 1},
                    ).one()
                    plan["trim"].append([key, int(th[0]), th[1], surplus])
                    projected[key] = have - surplus
            deficit = q - projected.get(key, 0)
            picks = min(max(deficit, 0), fresh.get(key, 0))
            if picks > 0:
                th = ctx.exec(
                    f"""SELECT assignment_hash, external_id FROM build_candidate
                        WHERE build_id = :b AND stratum_key = :k AND former_group IS NULL
                        ORDER BY assignment_hash, {ctx.collate("external_id")}
                        LIMIT 1 OFFSET :off""",
                    {**ctx.base, "k": key, "off": picks - 1},
                ).one()
                ctx.exec(
                    f"""UPDATE build_candidate SET "group" = 'control'
                        WHERE build_id = :b AND stratum_key = :k AND former_group IS NULL
                          AND (assignment_hash < :h OR (assignment_hash = :h
                               AND {ctx.collate("external_id")} <= :e))""",
                    {**ctx.base, "k": key, "h": int(th[0]), "e": th[1]},
                )
                plan["picks"][key] = picks
                projected[key] = projected.get(key, 0) + picks
        if cp["limit"] is not None:
            # The limit caps the whole control group: strata with a surplus kept by
            # incremental builds leave less room for the others' deficits.
            kept = sum(projected.get(k, 0) for k in projected) - sum(plan["picks"].values())
            room = max(0, cp["limit"] - kept)
            for key in sorted(plan["picks"], key=lambda k: (-plan["picks"][k], k)):
                picks = plan["picks"][key]
                if picks <= room:
                    room -= picks
                    continue
                keep = room
                room = 0
                projected[key] -= picks - keep
                _unpick(ctx, key, keep)
                plan["picks"][key] = keep
        labels = {k: strata.label(k, names) for k in sizes}
        plan.update(
            {
                "cohort_size": n,
                "target": total,
                "unlimited_target": lcg.unlimited_target(cp["percent_bp"], n),
                "quotas": quotas,
                "warnings": lcg.stratification_warnings(
                    cp["percent_bp"], cp["limit"], sizes, projected, labels
                ),
            }
        )
    cp["plan"] = plan
    return True


def _unpick(ctx: _Ctx, key: str, keep: int) -> None:
    """Keep only the `keep` smallest-hash control picks of stratum `key` (limit room)."""
    if keep <= 0:
        ctx.exec(
            """UPDATE build_candidate SET "group" = NULL
               WHERE build_id = :b AND stratum_key = :k AND "group" = 'control'""",
            {**ctx.base, "k": key},
        )
        return
    th = ctx.exec(
        f"""SELECT assignment_hash, external_id FROM build_candidate
            WHERE build_id = :b AND stratum_key = :k AND "group" = 'control'
            ORDER BY assignment_hash, {ctx.collate("external_id")} LIMIT 1 OFFSET :off""",
        {**ctx.base, "k": key, "off": keep - 1},
    ).one()
    ctx.exec(
        f"""UPDATE build_candidate SET "group" = NULL
            WHERE build_id = :b AND stratum_key = :k AND "group" = 'control'
              AND (assignment_hash > :h OR (assignment_hash = :h
                   AND {ctx.collate("external_id")} > :e))""",
        {**ctx.base, "k": key, "h": int(th[0]), "e": th[1]},
    )


def _phase_trim(ctx: _Ctx, chunk: int) -> bool:
    """R6: surplus control members with the largest (hash, external_id) move to test."""
    cp = ctx.cp
    items = cp["plan"]["trim"]
    idx = cp["cursor"] or 0
    budget = min(chunk, MOVE_CHUNK)
    while idx < len(items) and budget > 0:
        key, h, e, _n = items[idx]
        where = f"""m.stratum_key = :k AND (m.assignment_hash > :h OR (m.assignment_hash = :h
                    AND (SELECT {ctx.collate("p.external_id")} FROM profile p
                         WHERE p.id = m.profile_id) >= :e))"""
        moved = _move_to_test(ctx, where, {"k": key, "h": h, "e": e}, budget)
        budget -= moved
        if moved == 0 or budget > 0:
            idx += 1
    cp["cursor"] = idx
    return idx >= len(items)


# ---- phase 6: assign


def _phase_assign(ctx: _Ctx, chunk: int) -> bool:
    cp = ctx.cp
    lo = cp["cursor"] or 0
    hi = _bound(
        ctx,
        "SELECT profile_id FROM build_candidate WHERE build_id = :b AND profile_id > :lo "
        "ORDER BY profile_id",
        {**ctx.base, "lo": lo},
        chunk,
    )
    enabled, cur = cp["enabled"], cp["cohort"]
    if enabled:
        group = (
            "CASE WHEN c.\"group\" = 'control' THEN 'control' "
            "WHEN c.former_group = 'control' AND c.former_cohort = :cur THEN 'control' "
            "ELSE 'test' END"
        )
        cohort = "CASE WHEN c.former_group IS NOT NULL THEN c.former_cohort ELSE :cur END"
    else:
        group = "'test'"
        cohort = "CASE WHEN c.former_group IS NOT NULL THEN c.former_cohort ELSE NULL END"
    activation = cp["reason"] == "activation"
    joined_at = ctx.c.activated_at if activation and ctx.c.activated_at else ctx.now
    source = "CASE WHEN sm.segment_id = :seg THEN :segsrc ELSE 'expansion' END"
    params = {
        **ctx.base,
        "lo": lo,
        "hi": hi,
        "cur": cur,
        "seg": ctx.c.segment_id,
        "segsrc": "activation" if activation else "segment",
        "now": joined_at,
        "actor": ctx.actor,
    }
    rng = _range_sql("c.profile_id", hi)
    ctx.exec(
        f"""INSERT INTO campaign_member (campaign_id, profile_id, "group", joined_group, source,
                stratum_key, assignment_hash, cohort, joined_at, joined_build_id, joined_by)
            SELECT :cid, c.profile_id, {group}, {group}, {source}, c.stratum_key,
                   c.assignment_hash, {cohort}, :now, :b, :actor
            FROM build_candidate c
            JOIN segment_member sm ON sm.id = c.segment_member_id AND sm.left_at IS NULL
            WHERE c.build_id = :b AND {rng}""",
        params,
        times=("now",),
    )
    rows = ctx.exec(
        f"""SELECT stratum_key, "group", CASE WHEN cohort = :curc THEN 1 ELSE 0 END, COUNT(*)
            FROM campaign_member
            WHERE campaign_id = :cid AND joined_build_id = :b AND left_at IS NULL
              AND {_range_sql("profile_id", hi)}
            GROUP BY stratum_key, "group", CASE WHEN cohort = :curc THEN 1 ELSE 0 END""",
        {**params, "curc": ctx.c.lcg_cohort},
    ).all()
    apply_counter_deltas(ctx.s, ctx.c.id, [(k, g, bool(x), int(n)) for k, g, x, n in rows])
    ctx.exec(
        f"DELETE FROM build_candidate WHERE build_id = :b AND {_range_sql('profile_id', hi)}",
        params,
    )
    if hi is not None:
        cp["cursor"] = hi
        cp["processed"] += chunk
        return False
    return True


# ---- phase 7: finish


def _finish(ctx: _Ctx) -> None:
    cp, c = ctx.cp, ctx.c
    if cp["reason"] == "activation" and c.activated_at is not None:
        # R3: in the pending audience when the draft was created, not entered at activation.
        ctx.exec(
            f"""INSERT INTO profile_event (at, profile_id, kind, campaign_id, build_id, actor)
                SELECT :at, q.profile_id, 'left_campaign', :cid, :b, :actor FROM (
                    SELECT DISTINCT sm.profile_id FROM segment_member sm
                    JOIN profile p ON p.id = sm.profile_id
                    WHERE sm.segment_id = :seg AND sm.entered_at <= :created
                      AND (sm.left_at IS NULL OR sm.left_at > :created)
                      AND {r1_scope_sql("p")}
                      AND NOT EXISTS (SELECT 1 FROM campaign_member m
                                      WHERE m.profile_id = sm.profile_id
                                        AND m.campaign_id = :cid AND m.joined_build_id = :b)
                ) q""",
            {
                **ctx.base,
                "at": c.activated_at,
                "created": c.created_at,
                "seg": c.segment_id,
                "actor": ctx.actor,
            },
            times=("at", "created"),
        )
    plan = cp["plan"]
    ctx.exec("UPDATE campaign_stratum SET quota = 0 WHERE campaign_id = :cid", ctx.base)
    quotas = plan.get("quotas") or {}
    if quotas:
        ctx.exec(
            """INSERT INTO campaign_stratum (campaign_id, stratum_key, members, cohort, control, quota)
               VALUES (:cid, :k, 0, 0, 0, :q)
               ON CONFLICT (campaign_id, stratum_key) DO UPDATE SET quota = excluded.quota""",
            [{**ctx.base, "k": k, "q": q} for k, q in sorted(quotas.items())],
        )
    ctx.exec(
        "DELETE FROM campaign_stratum WHERE campaign_id = :cid AND members = 0 AND quota = 0 "
        "AND control = 0 AND cohort = 0",
        ctx.base,
    )
    ctx.s.execute(
        sa.update(Campaign)
        .where(Campaign.id == c.id)
        .values(
            segment_watermark=sa.func.max(Campaign.segment_watermark, cp["max_sm"])
            if not ctx.pg
            else sa.func.greatest(Campaign.segment_watermark, cp["max_sm"]),
            warnings=plan["warnings"],
        )
    )
    ctx.s.execute(sa.delete(BuildCandidate).where(BuildCandidate.build_id == ctx.build.id))


PHASES: dict[str, Callable[[_Ctx, int], bool]] = {
    "rekey": _phase_rekey,
    "demote": _phase_demote,
    "stage": _phase_stage,
    "plan": _phase_plan,
    "trim": _phase_trim,
    "assign": _phase_assign,
}


def build_progress(session: Session, build_id: int) -> tuple[int, int]:
    build = session.get(AudienceBuild, build_id)
    return (build.processed, build.total) if build else (0, 0)
