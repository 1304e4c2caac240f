"""What one step of an audience build works with: its context (session, build, campaign,
checkpoint) and the candidate query (R1, R2c, R3, R4, R11), built from named SQL
fragments rather than edited as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import hashing
from store.build_checkpoint import (
    ACTIVATION_SOURCE,
    DELTA_SOURCE,
    EXPANSION_SOURCE,
    Checkpoint,
    Source,
)
from store.locations import is_postgres
from store.models import AudienceBuild, Campaign, UTCDateTime, utcnow
from store.scope import r1_scope_sql

# ---- named fragments (alias p: profile, sm: segment_member)

# A campaign member row as a build inserts it.
MEMBER_INSERT = """INSERT INTO campaign_member (campaign_id, profile_id, "group", joined_group,
                     source, stratum_key, assignment_hash, cohort, joined_at, joined_build_id,
                     joined_by, left_at, left_by)"""
# R4a: a segment row of the activation snapshot (up to the bound) open at activation; one
# closed since then left after activation, and the member row records when.
ACTIVATED_AT = "(SELECT c.activated_at FROM campaign c WHERE c.id = :cid)"
OPEN_AT_ACTIVATION = f"(sm.left_at IS NULL OR sm.left_at > {ACTIVATED_AT})"
# The same rows for SQLite, read from the two partial indexes that hold them
# (ux_segment_member_open, and since revision 0010 ix_segment_member_segment_left): no
# index holds all of a segment's rows, and SQLite answered the OR by collecting every row
# id of the segment in memory first (24 MB per million members). PostgreSQL keeps the OR:
# it reads the segment in one pass, where the union misjudged its second half and
# scanned each chunk's range twice (a full build 5-10 % slower).
OPEN_AT_ACTIVATION_ROWS = (
    "(SELECT id, segment_id, profile_id, left_at, left_by FROM segment_member "
    "WHERE segment_id = :seg AND left_at IS NULL "
    "UNION ALL SELECT id, segment_id, profile_id, left_at, left_by FROM segment_member "
    f"WHERE segment_id = :seg AND left_at > {ACTIVATED_AT})"
)
# How a member entered: through the campaign's segment (activation or segment) or R11.
ENTRY_SOURCE = "CASE WHEN sm.segment_id = :cseg THEN :segsrc ELSE 'expansion' END"
HAS_OPEN_MEMBERSHIP = (
    "EXISTS (SELECT 1 FROM campaign_member o WHERE o.campaign_id = :cid "
    "AND o.profile_id = p.id AND o.left_at IS NULL)"
)
# R4: the group and cohort of the profile's latest closed membership (fg, fc): the
# columns, and what joins them. SQLite, which has no LATERAL, reads them with two lookups
# (its lookups cost a fifth as much) beside HAS_OPEN_MEMBERSHIP.
_LATEST_CLOSED = (
    "FROM campaign_member f WHERE f.campaign_id = :cid AND f.profile_id = p.id "
    "AND f.left_at IS NOT NULL ORDER BY f.id DESC LIMIT 1"
)
FORMER_GROUP = (
    f'(SELECT f."group" {_LATEST_CLOSED}) AS fg, (SELECT f.cohort {_LATEST_CLOSED}) AS fc',
    "",
)
# PostgreSQL reads the profile's latest membership of the campaign with one lookup (a
# lateral join), for both: a profile's intervals are appended one after the other, each
# opened only once the one before it closed (at most one is open, ux_campaign_member_open),
# so the profile has an open membership exactly when its latest one is open, and
# otherwise that latest one is its latest closed one. One lookup instead of two is a
# tenth of a 10,000-newcomer build: each of its three passes over the candidates reads it.
LATEST_MEMBERSHIP = (
    "latest.fg AS fg, latest.fc AS fc",
    'LEFT JOIN LATERAL (SELECT f."group" AS fg, f.cohort AS fc, f.left_at AS fl '
    "FROM campaign_member f WHERE f.campaign_id = :cid AND f.profile_id = p.id "
    "ORDER BY f.id DESC LIMIT 1) latest ON true",
)
LATEST_IS_OPEN = "(latest.fg IS NOT NULL AND latest.fl IS NULL)"  # group is never NULL
NO_FORMER_GROUP = ("CAST(NULL AS TEXT) AS fg, CAST(NULL AS INTEGER) AS fc", "")
# R11: a profile also arriving through the campaign segment's delta counts once (there).
IN_CAMPAIGN_SEGMENT_DELTA = (
    "EXISTS (SELECT 1 FROM segment_member d WHERE d.segment_id = :cseg "
    "AND d.profile_id = p.id AND d.left_at IS NULL AND d.id > :wm AND d.id <= :mx)"
)


class StepContext:
    """One step (one transaction) of one build."""

    def __init__(
        self,
        session: Session,
        build: AudienceBuild,
        campaign: Campaign,
        checkpoint: Checkpoint | None,
    ) -> None:
        self.session = session
        self.build = build
        self.campaign = campaign
        self._checkpoint = checkpoint
        self.is_postgres = is_postgres(session)
        self.now = utcnow()
        self.actor = build.requested_by or "system"
        # Source index -> the candidates stored for this transaction (StoredCandidates):
        # a delta that fits in one chunk is planned and assigned in one step from them.
        self.stored: dict[int, StoredCandidates] = {}

    @property
    def checkpoint(self) -> Checkpoint:
        assert self._checkpoint is not None, "the build has not been started"
        return self._checkpoint

    @checkpoint.setter
    def checkpoint(self, value: Checkpoint) -> None:
        self._checkpoint = value

    @property
    def assignment_hash(self) -> str:
        """The campaign's R9 hash over profile alias p, in SQL (store/hashing.py: the
        version the campaign was created with)."""
        return hashing.assignment_sql(self.campaign.hash_version, self.checkpoint.lcg.seed)

    @property
    def ids(self) -> dict[str, Any]:
        """:cid (campaign), :db (its profile database), :b (this build)."""
        return {"cid": self.campaign.id, "db": self.campaign.database_id, "b": self.build.id}

    @property
    def fence(self) -> str:
        """Ends a subquery in FROM that must not be merged into the outer query, so its
        columns (the R9 hash) are computed once per row, not once per use."""
        return "OFFSET 0" if self.is_postgres else "LIMIT -1 OFFSET 0"

    def prefer_index_joins(self) -> None:
        """PostgreSQL: join candidates to profiles by index lookups for the rest of this
        step's transaction. A delta's candidates are few, but misjudged (fresh segment
        rows, stale statistics) the planner hash-joins them with a scan of every profile of
        the database: a 10,000-newcomer build then grows with the database."""
        if self.is_postgres:
            self.execute("SET LOCAL enable_hashjoin = off")
            self.execute("SET LOCAL enable_mergejoin = off")

    def collate(self, expr: str) -> str:
        """Bytewise text order on both backends (R9 ties on external_id)."""
        return f'{expr} COLLATE "C"' if self.is_postgres else expr

    def execute(self, sql: str, params: dict | list | None = None, times: tuple[str, ...] = ()):
        stmt = sa.text(sql)
        if times:
            stmt = stmt.bindparams(*(sa.bindparam(t, type_=UTCDateTime()) for t in times))
        return self.session.execute(stmt, params or {})

    def row_after(self, sql: str, params: dict, chunk: int) -> Any:
        """The key of the chunk-th row of `sql` (None: the rest fits in this chunk)."""
        return self.execute(sql + " LIMIT 1 OFFSET :off", {**params, "off": chunk - 1}).scalar()


def key_range(column: str, hi: Any) -> str:
    """The keyset chunk (:lo, hi] of `column`; no upper bound when hi is None."""
    return f"{column} > :lo" + (f" AND {column} <= :hi" if hi is not None else "")


@dataclass(frozen=True)
class CandidateQuery:
    """The newcomers of one source over `segment_member sm JOIN profile p`.

    Columns of `select()`: pid, smid, ext, k (stratum key), [h (R9 hash)], fg/fc (group
    and cohort of the latest closed membership: R4 re-entry, NULL for fresh newcomers),
    segid. Frozen by the checkpoint's segment bound (rows above it are left to the next
    build) and watermark (delta).
    """

    source: Source
    key_sql: str
    former: str  # the fg, fc columns
    conditions: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    hash_sql: str = "NULL"  # the campaign's R9 hash over alias p (StepContext.assignment_hash)
    former_join: str = ""  # what the fg, fc columns read from, if a join
    segment_rows: str = "segment_member"  # what alias sm reads (OPEN_AT_ACTIVATION_ROWS)

    @property
    def keyset_column(self) -> str:
        return "sm.id" if self.source.kind == DELTA_SOURCE else "sm.profile_id"

    @property
    def from_where(self) -> str:
        # CROSS JOIN: SQLite reads the segment rows first, then each one's profile by its
        # row id, whatever its estimates (a delta's range of rows, read from the profiles
        # of the database instead, took 0.2 s for 10,000 newcomers). PostgreSQL plans it
        # as the inner join it is.
        return (
            f"FROM {self.segment_rows} sm CROSS JOIN profile p {self.former_join} "
            f"WHERE p.id = sm.profile_id AND {' AND '.join(self.conditions)}"
        )

    def where(self, *conditions: str) -> CandidateQuery:
        return replace(self, conditions=self.conditions + conditions)

    def select(self, *, with_hash: bool = False) -> str:
        hash_col = f", {self.hash_sql} AS h" if with_hash else ""
        return (
            f"SELECT p.id AS pid, sm.id AS smid, p.external_id AS ext, {self.key_sql} AS k"
            f"{hash_col}, {self.former}, sm.segment_id AS segid {self.from_where}"
        )

    def rows(self, fence: str) -> str:
        """What an assign inserts from: every column of a candidate, the hash and the
        former membership computed once per row (behind `fence`)."""
        return (
            f"SELECT p.id AS pid, p.external_id AS ext, sm.segment_id AS segid, "
            f"sm.left_at AS left_at, sm.left_by AS left_by, {self.key_sql} AS k, "
            f"{self.hash_sql} AS h, {self.former} {self.from_where} {fence}"
        )


STORED_COLUMNS = "pid, ext, segid, left_at, left_by, k, h, fg, fc"


@dataclass(frozen=True)
class StoredCandidates:
    """One source's candidates (CandidateQuery.rows) stored in a temporary table for the
    rest of the transaction: read by the plan's passes and the assign's insert instead of
    running the candidate query (its index lookups per candidate) once for each."""

    source: Source
    table: str
    params: dict[str, Any] = field(default_factory=dict)

    def select(self, *, with_hash: bool = False) -> str:
        return f"SELECT {STORED_COLUMNS} FROM {self.table}"

    def rows(self, fence: str) -> str:
        return self.select()


def candidates(ctx: StepContext, source: Source) -> CandidateQuery:
    cp = ctx.checkpoint
    activation = source.kind == ACTIVATION_SOURCE
    # A delta's rows are the id range (watermark, bound]: read by that range, not by the
    # segment's index of open rows, which holds all its members (+: not an index term).
    segment = "+sm.segment_id = :seg" if source.kind == DELTA_SOURCE else "sm.segment_id = :seg"
    conditions = [segment, "sm.id <= :mx", r1_scope_sql("p")]
    segment_rows = "segment_member"
    if not activation:
        conditions.append("sm.left_at IS NULL")
    elif ctx.is_postgres:
        conditions.append(OPEN_AT_ACTIVATION)
    else:  # the rows themselves are those open at activation
        segment_rows = OPEN_AT_ACTIVATION_ROWS
    if activation:  # a draft has no memberships yet (R3)
        former, former_join = NO_FORMER_GROUP
    else:
        former, former_join = LATEST_MEMBERSHIP if ctx.is_postgres else FORMER_GROUP
        conditions.append(f"NOT {LATEST_IS_OPEN if ctx.is_postgres else HAS_OPEN_MEMBERSHIP}")
    if source.kind == DELTA_SOURCE:
        conditions.append("sm.id > :wm")
    if source.kind == EXPANSION_SOURCE:
        conditions.append(f"NOT {IN_CAMPAIGN_SEGMENT_DELTA}")
    params = {
        **ctx.ids,
        "seg": source.segment_id,
        "cseg": ctx.campaign.segment_id,
        "mx": cp.segment_bound,
        "wm": cp.watermark,
    }
    return CandidateQuery(
        source,
        cp.lcg.key_sql,
        former,
        tuple(conditions),
        params,
        ctx.assignment_hash,
        former_join,
        segment_rows,
    )


def source_chunk_end(ctx: StepContext, source: Source, lo: int, chunk: int) -> Any:
    """The keyset value that ends the chunk starting after `lo` (None: last chunk)."""
    if source.kind == DELTA_SOURCE:
        sql = "SELECT id FROM segment_member WHERE id > :lo AND id <= :mx ORDER BY id"
    elif source.kind == ACTIVATION_SOURCE:
        # Counted over the rows open now: an ordered range of the partial index
        # ux_segment_member_open. Counting the rows open at activation (OPEN_AT_ACTIVATION,
        # an OR) sorted the rest of the segment for every chunk: quadratic in its size.
        # Any increasing bound is right: the chunk takes every candidate in (lo, hi].
        sql = (
            "SELECT sm.profile_id FROM segment_member sm WHERE sm.segment_id = :seg "
            "AND sm.left_at IS NULL AND sm.id <= :mx AND sm.profile_id > :lo "
            "ORDER BY sm.profile_id"
        )
    else:
        sql = (
            "SELECT profile_id FROM segment_member WHERE segment_id = :seg "
            "AND left_at IS NULL AND profile_id > :lo ORDER BY profile_id"
        )
    params = {
        "lo": lo,
        "mx": ctx.checkpoint.segment_bound,
        "seg": source.segment_id,
        "cid": ctx.campaign.id,
    }
    return ctx.row_after(sql, params, chunk)


def lock_source_segment(ctx: StepContext, source: Source) -> None:
    """Serialise with membership changes of the source segment until the step commits: a
    profile leaving while a build reads or inserts it would otherwise miss the R4 close
    that on_segment_left applies. PostgreSQL: the segment row FOR SHARE (store.segments
    locks it FOR UPDATE). SQLite has one writer, and its transaction begins at the first
    write: the step writes its build's heartbeat first, so it holds the write lock before
    it reads the candidates (a one-step delta stores them, then inserts them)."""
    if ctx.is_postgres:
        ctx.execute("SELECT id FROM segment WHERE id = :seg FOR SHARE", {"seg": source.segment_id})
    else:
        ctx.execute(
            "UPDATE audience_build SET heartbeat_at = :now WHERE id = :b",
            {"now": utcnow(), "b": ctx.build.id},
            times=("now",),
        )


def drop_stored(ctx: StepContext, table: str) -> None:
    """Drop a temporary table of stored candidates, if this connection has one."""
    ctx.execute(f"DROP TABLE IF EXISTS {'pg_temp' if ctx.is_postgres else 'temp'}.{table}")
