"""One step of an audience build: the phases of store/builds.py's docstring, each chunk
one transaction (rekey, demote, plan, trim, assign, finish) over a frozen checkpoint.

store/builds.py queues, claims and drives builds; this module does the work of a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import lcg, mailings, strata
from store.audience import apply_counter_deltas, r1_scope_sql
from store.db import keep_statistics_fresh
from store.errors import InvalidStateError
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignStratum,
    Mailing,
    Segment,
    UTCDateTime,
    utcnow,
)
from store.profiles import database_fields

SQLITE_CACHE_KB = 65_536
MOVE_CHUNK = 20_000  # members moved to test per transaction (events are batched inserts)
TRIMMING_REASONS = ("recalculation", "lcg_disable")


class LostClaim(Exception):
    """The build is no longer ours (cancelled, completed campaign, requeued elsewhere)."""


def end_build(
    session: Session, build: AudienceBuild, status: str, error: str | None = None
) -> None:
    build.status = status
    build.finished_at = utcnow()
    build.worker = None if status == "queued" else build.worker
    if error is not None:
        build.error = error[:2000]
    session.add(build)
    mailings.resume_after_build(session, build)
    session.flush()


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


def run_step(session: Session, build_id: int, worker: str, chunk: int) -> tuple[str, int, int]:
    query = sa.select(AudienceBuild).where(AudienceBuild.id == build_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    if session.get_bind().dialect.name == "sqlite":
        # Member indexes are keyed by random hashes: a larger page cache keeps a million
        # random index inserts in memory (per connection; ~64 MB at most).
        session.execute(sa.text(f"PRAGMA cache_size = -{SQLITE_CACHE_KB}"))
    build = session.scalar(query)
    if build is None or build.status != "running" or build.worker != worker:
        raise LostClaim()
    campaign = session.get(Campaign, build.campaign_id)
    if campaign.status == "completed":
        end_build(session, build, "cancelled")
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
        raise LostClaim()
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
    phases = (["rekey"] if trimming else []) + ["demote", "plan"]
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
            "watermark": int(c.segment_watermark),
            "total_base": c.members if trimming else 0,
            "total": (c.members if trimming else 0) + estimate,
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


# ---- candidates (R1, R2c, R3, R4, R11)

HASH_SPAN = 2**64
HASH_MIN = -(2**63)


def _candidates(ctx: _Ctx, src: dict[str, Any], *, with_hash: bool) -> tuple[str, dict]:
    """SELECT list and FROM/WHERE of the newcomers of one source, over sm ⋈ p.

    Columns: pid, smid, ext, k (stratum key), [h (R9 hash)], fg/fc (group and cohort of
    the latest closed membership: R4 re-entry), segid. Frozen by the checkpoint's max_sm
    (segment rows above it are left to the next build) and the watermark (delta).
    """
    cp = ctx.cp
    kind = src["kind"]
    params = {
        **ctx.base,
        "seg": src["segment"],
        "cseg": ctx.c.segment_id,
        "mx": cp["max_sm"],
        "wm": cp["watermark"],
        "seed": cp["seed"],
    }
    where = [
        "sm.segment_id = :seg",
        "sm.left_at IS NULL",
        "sm.id <= :mx",
        r1_scope_sql("p"),
    ]
    if kind == "all":  # activation: a draft has no memberships yet (R3)
        former = "CAST(NULL AS TEXT) AS fg, CAST(NULL AS INTEGER) AS fc"
    else:
        latest = (
            "FROM campaign_member f WHERE f.campaign_id = :cid AND f.profile_id = p.id "
            "AND f.left_at IS NOT NULL ORDER BY f.id DESC LIMIT 1"
        )
        former = f'(SELECT f."group" {latest}) AS fg, (SELECT f.cohort {latest}) AS fc'
        where.append(
            "NOT EXISTS (SELECT 1 FROM campaign_member o WHERE o.campaign_id = :cid "
            "AND o.profile_id = p.id AND o.left_at IS NULL)"
        )
    if kind == "delta":
        where.append("sm.id > :wm")
    if kind == "expansion":  # R11; profiles also arriving through the segment delta count once
        where.append(
            "NOT EXISTS (SELECT 1 FROM segment_member d WHERE d.segment_id = :cseg "
            "AND d.profile_id = p.id AND d.left_at IS NULL AND d.id > :wm AND d.id <= :mx)"
        )
    hash_col = ", cc_assignment_hash(:seed, p.external_id) AS h" if with_hash else ""
    sql = (
        f"SELECT p.id AS pid, sm.id AS smid, p.external_id AS ext, {cp['key_sql']} AS k"
        f"{hash_col}, {former}, sm.segment_id AS segid "
        "FROM segment_member sm JOIN profile p ON p.id = sm.profile_id "
        f"WHERE {' AND '.join(where)}"
    )
    return sql, params


def _source_key(src: dict[str, Any]) -> str:
    return "sm.id" if src["kind"] == "delta" else "sm.profile_id"


def _source_bound(ctx: _Ctx, src: dict[str, Any], lo: int, chunk: int) -> Any:
    if src["kind"] == "delta":
        sql = "SELECT id FROM segment_member WHERE id > :lo AND id <= :mx ORDER BY id"
    else:
        sql = (
            "SELECT profile_id FROM segment_member WHERE segment_id = :seg "
            "AND left_at IS NULL AND profile_id > :lo ORDER BY profile_id"
        )
    return _bound(ctx, sql, {"lo": lo, "mx": ctx.cp["max_sm"], "seg": src["segment"]}, chunk)


# ---- phase 3: plan


def _phase_plan(ctx: _Ctx, chunk: int) -> bool:
    """R9/R10 decisions, frozen in the checkpoint: quotas, surplus to trim (R6), and per
    stratum the (hash, external_id) cut-off below which fresh newcomers go to control."""
    cp = ctx.cp
    enabled, cur = cp["enabled"], cp["cohort"]
    names = cp["strata"]
    counters = {
        r.stratum_key: r
        for r in ctx.s.scalars(
            sa.select(CampaignStratum).where(CampaignStratum.campaign_id == ctx.c.id)
        )
    }
    fresh: dict[str, int] = {}
    r_in: dict[str, int] = {}
    r_ctl: dict[str, int] = {}
    for src in cp["sources"]:
        sql, params = _candidates(ctx, src, with_hash=False)
        rows = ctx.exec(
            f"""SELECT k, SUM(CASE WHEN fg IS NULL THEN 1 ELSE 0 END),
                       SUM(CASE WHEN fg IS NOT NULL AND fc = :cur THEN 1 ELSE 0 END),
                       SUM(CASE WHEN fg = 'control' AND fc = :cur THEN 1 ELSE 0 END)
                FROM ({sql}) cand GROUP BY k""",
            {**params, "cur": cur},
        ).all()
        for k, f, ri, rc in rows:
            fresh[k] = fresh.get(k, 0) + int(f or 0)
            r_in[k] = r_in.get(k, 0) + int(ri or 0)
            r_ctl[k] = r_ctl.get(k, 0) + int(rc or 0)
    plan: dict[str, Any] = {"warnings": [], "quotas": {}, "trim": [], "cut": {}}
    cp["total"] = cp["total_base"] + sum(fresh.values()) + sum(v for k, v in r_in.items())
    if not enabled:
        cp["plan"] = plan
        return True
    sizes: dict[str, int] = {k: r.cohort for k, r in counters.items() if r.cohort > 0}
    control: dict[str, int] = {k: r.control for k, r in counters.items() if r.control}
    for k in set(fresh) | set(r_in):
        sizes[k] = sizes.get(k, 0) + fresh.get(k, 0) + r_in.get(k, 0)
        control[k] = control.get(k, 0) + r_ctl.get(k, 0)
    sizes = {k: v for k, v in sizes.items() if v > 0}
    n = sum(sizes.values())
    total = lcg.target_total(cp["percent_bp"], n, cp["limit"])
    quotas = lcg.apportion(total, sizes)
    projected = dict(control)
    picks: dict[str, int] = {}
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
        wanted = min(max(q - projected.get(key, 0), 0), fresh.get(key, 0))
        if wanted > 0:
            picks[key] = wanted
    if cp["limit"] is not None:
        # The limit caps the whole control group: strata with a surplus kept by
        # incremental builds leave less room for the others' deficits.
        room = max(0, cp["limit"] - sum(projected.values()))
        for key in sorted(picks, key=lambda k: (-picks[k], k)):
            picks[key] = min(picks[key], room)
            room -= picks[key]
        picks = {k: v for k, v in picks.items() if v > 0}
    plan["cut"] = _cutoffs(ctx, picks, fresh)
    for key, k in picks.items():
        projected[key] = projected.get(key, 0) + k
    labels = {k: strata.label(k, names) for k in sizes}
    plan.update(
        {
            "cohort_size": n,
            "target": total,
            "unlimited_target": lcg.unlimited_target(cp["percent_bp"], n),
            "quotas": quotas,
            "picks": picks,
            "warnings": lcg.stratification_warnings(
                cp["percent_bp"], cp["limit"], sizes, projected, labels
            ),
        }
    )
    cp["plan"] = plan
    return True


def _cutoffs(ctx: _Ctx, picks: dict[str, int], fresh: dict[str, int]) -> dict[str, list]:
    """Per stratum the picks-th smallest (hash, external_id) among its fresh newcomers.

    Exact, without sorting everyone: fetch only newcomers whose hash is below a cut that
    should hold enough of them (the hash is uniform over 64 bits); a stratum that comes
    up short is fetched again with a doubled cut, up to the whole range.
    """
    out: dict[str, list] = {}
    todo = dict(picks)
    frac = max((k / fresh[key] for key, k in todo.items()), default=0.0)
    frac = min(1.0, frac * 1.25 + 0.002)
    while todo:
        found: dict[str, list[tuple[int, str]]] = {key: [] for key in todo}
        for src in ctx.cp["sources"]:
            sql, params = _candidates(ctx, src, with_hash=True)
            cond = ""
            if frac < 1.0:
                cond = " AND h < :cut"
                params["cut"] = HASH_MIN + int(frac * HASH_SPAN)
            if len(todo) < len(picks):
                keys = sorted(todo)
                cond += f" AND k IN ({', '.join(f':k{i}' for i in range(len(keys)))})"
                params.update({f"k{i}": k for i, k in enumerate(keys)})
            rows = ctx.exec(
                f"SELECT k, h, ext FROM ({sql}) cand WHERE fg IS NULL{cond}", params
            ).all()
            for k, h, ext in rows:
                if k in found:
                    found[k].append((int(h), ext))
        for key in list(todo):
            vals = found[key]
            if len(vals) >= todo[key]:
                vals.sort()
                h, ext = vals[todo[key] - 1]
                out[key] = [h, ext]
                del todo[key]
        if frac >= 1.0 and todo:
            raise RuntimeError(f"not enough newcomers for strata {sorted(todo)}")
        frac = min(1.0, frac * 2)
    return out


def _phase_trim(ctx: _Ctx, chunk: int) -> bool:
    """R6: surplus control members with the largest (hash, external_id) move to test."""
    cp = ctx.cp
    items = cp["plan"]["trim"]
    idx = cp["cursor"] or 0
    budget = min(chunk, MOVE_CHUNK)
    while idx < len(items) and budget > 0:
        key, h, e, _n = items[idx]
        where = f"""m.stratum_key = :k AND m.assignment_hash >= :h AND (m.assignment_hash > :h
                    OR (SELECT {ctx.collate("p.external_id")} FROM profile p
                        WHERE p.id = m.profile_id) >= :e)"""
        moved = _move_to_test(ctx, where, {"k": key, "h": h, "e": e}, budget)
        budget -= moved
        if moved == 0 or budget > 0:
            idx += 1
    cp["cursor"] = idx
    return idx >= len(items)


# ---- phase 5: assign


def _phase_assign(ctx: _Ctx, chunk: int) -> bool:
    """One chunk of newcomers, in one transaction, never visible half-done:

    1. INSERT … SELECT the fresh newcomers as test (hash computed once per row);
    2. UPDATE the ones at or below their stratum's cut-off to control (joined_group too):
       they are found by id > the max id before the insert, so only this chunk's rows;
    3. INSERT … SELECT the re-entering profiles with their former group (R4);
    4. counters from a GROUP BY over the chunk's rows.
    """
    cp = ctx.cp
    if cp["src"] >= len(cp["sources"]):
        return True
    src = cp["sources"][cp["src"]]
    lo = cp["cursor"]
    if lo is None:
        lo = cp["watermark"] if src["kind"] == "delta" else 0
    if ctx.pg:
        # Serialise with membership changes of the source segment (store.segments locks
        # the segment row FOR UPDATE): a profile leaving while this chunk inserts it would
        # otherwise miss the R4 close that on_segment_left applies.
        ctx.exec("SELECT id FROM segment WHERE id = :seg FOR SHARE", {"seg": src["segment"]})
    hi = _source_bound(ctx, src, lo, chunk)
    sql, params = _candidates(ctx, src, with_hash=False)
    sql += f" AND {_range_sql(_source_key(src), hi)}"
    enabled, cur = cp["enabled"], cp["cohort"]
    activation = cp["reason"] == "activation"
    joined_at = ctx.c.activated_at if activation and ctx.c.activated_at else ctx.now
    params.update(
        {
            "lo": lo,
            "hi": hi,
            "cur": cur if enabled else None,
            "segsrc": "activation" if activation else "segment",
            "now": joined_at,
            "actor": ctx.actor,
        }
    )
    before = ctx.exec("SELECT COALESCE(MAX(id), 0) FROM campaign_member").scalar()
    columns = """INSERT INTO campaign_member (campaign_id, profile_id, "group", joined_group,
                     source, stratum_key, assignment_hash, cohort, joined_at, joined_build_id,
                     joined_by)"""
    source = "CASE WHEN sm.segment_id = :cseg THEN :segsrc ELSE 'expansion' END"
    fresh_sql = sql.replace(
        sql[: sql.index(" FROM segment_member sm")],
        f"SELECT :cid, p.id, 'test', 'test', {source}, {cp['key_sql']}, "
        "cc_assignment_hash(:seed, p.external_id), CAST(:cur AS INTEGER), :now, :b, :actor",
        1,
    )
    if src["kind"] != "all":
        fresh_sql += (
            " AND NOT EXISTS (SELECT 1 FROM campaign_member f WHERE f.campaign_id = :cid "
            "AND f.profile_id = p.id AND f.left_at IS NOT NULL)"
        )
    ctx.exec(f"{columns} {fresh_sql}", params, times=("now",))
    cuts = cp["plan"].get("cut") or {}
    if cuts and src["kind"] == "all":
        # Activation: per stratum, an index range on (campaign, 'test', stratum, hash) that
        # only meets this chunk's picks (earlier chunks' picks are control already).
        ext = ctx.collate(
            "(SELECT p.external_id FROM profile p WHERE p.id = campaign_member.profile_id)"
        )
        for key, (h, e) in sorted(cuts.items()):
            ctx.exec(
                f"""UPDATE campaign_member SET "group" = 'control', joined_group = 'control'
                    WHERE campaign_id = :cid AND "group" = 'test' AND stratum_key = :k
                      AND assignment_hash <= :h AND id > :before AND joined_build_id = :b
                      AND (assignment_hash < :h OR {ext} <= :e)""",
                {**ctx.base, "k": key, "h": h, "e": e, "before": before},
            )
    elif cuts:
        # Newcomers of an active campaign: scan only this chunk's rows (id range).
        values = ", ".join(
            f"(CAST(:tk{i} AS TEXT), CAST(:th{i} AS BIGINT), CAST(:te{i} AS TEXT))"
            for i in range(len(cuts))
        )
        cut_params = {"cid": ctx.c.id, "b": ctx.build.id, "before": before}
        for i, (key, (h, e)) in enumerate(sorted(cuts.items())):
            cut_params.update({f"tk{i}": key, f"th{i}": h, f"te{i}": e})
        ext = ctx.collate(
            "(SELECT p.external_id FROM profile p WHERE p.id = campaign_member.profile_id)"
        )
        ctx.exec(
            f"""WITH t(tk, th, te) AS (VALUES {values})
                UPDATE campaign_member SET "group" = 'control', joined_group = 'control'
                WHERE id > :before AND +campaign_id = :cid AND joined_build_id = :b
                  AND EXISTS (SELECT 1 FROM t WHERE t.tk = campaign_member.stratum_key
                      AND campaign_member.assignment_hash <= t.th
                      AND (campaign_member.assignment_hash < t.th OR {ext} <= t.te))""",
            cut_params,
        )
    if src["kind"] != "all":
        # R4: re-entering profiles get the group of their latest closed membership;
        # control only while the LCG is on and the membership is of the current cohort.
        if enabled:
            group = "CASE WHEN c.fg = 'control' AND c.fc = :cur THEN 'control' ELSE 'test' END"
        else:
            group = "'test'"
        re_sql, re_params = _candidates(ctx, src, with_hash=True)
        re_sql += f" AND {_range_sql(_source_key(src), hi)}"
        ctx.exec(
            f"""{columns}
                SELECT :cid, c.pid, {group}, {group},
                       CASE WHEN c.segid = :cseg THEN :segsrc ELSE 'expansion' END,
                       c.k, c.h, c.fc, :now, :b, :actor
                FROM ({re_sql}) c WHERE c.fg IS NOT NULL""",
            {**re_params, **params},
            times=("now",),
        )
    rows = ctx.exec(
        """SELECT stratum_key, "group", CASE WHEN cohort = :curc THEN 1 ELSE 0 END, COUNT(*)
           FROM campaign_member
           WHERE id > :before AND +campaign_id = :cid AND joined_build_id = :b
           GROUP BY stratum_key, "group", CASE WHEN cohort = :curc THEN 1 ELSE 0 END""",
        {**ctx.base, "before": before, "curc": ctx.c.lcg_cohort},
    ).all()
    apply_counter_deltas(ctx.s, ctx.c.id, [(k, g, bool(x), int(n)) for k, g, x, n in rows])
    cp["processed"] += sum(int(r[3]) for r in rows)
    if hi is not None:
        cp["cursor"] = hi
        return False
    cp["src"] += 1
    cp["cursor"] = None
    return cp["src"] >= len(cp["sources"])


# ---- phase 7: finish


def _finish(ctx: _Ctx) -> None:
    cp, c = ctx.cp, ctx.c
    if cp["reason"] == "activation" and c.activated_at is not None:
        # R3: in the pending audience when the draft was created, not entered at activation.
        # Only intervals closed since the creation can qualify (an open one is a member).
        ctx.exec(
            f"""INSERT INTO profile_event (at, profile_id, kind, campaign_id, build_id, actor)
                SELECT :at, q.profile_id, 'left_campaign', :cid, :b, :actor FROM (
                    SELECT DISTINCT sm.profile_id FROM segment_member sm
                    JOIN profile p ON p.id = sm.profile_id
                    WHERE sm.segment_id = :seg AND sm.left_at > :created
                      AND sm.entered_at <= :created
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
    keep_statistics_fresh(ctx.s, "campaign_member", cp["processed"])
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


PHASES: dict[str, Callable[[_Ctx, int], bool]] = {
    "rekey": _phase_rekey,
    "demote": _phase_demote,
    "plan": _phase_plan,
    "trim": _phase_trim,
    "assign": _phase_assign,
}
