"""The catalogue: one row per thing an operator lists and names (profile databases and
their declared fields, segments, campaigns, audience builds, mailings with their runs
and outcome counters), the scheduler lease every console header shows, plus the column
types every table shares.

store/models.py is the whole schema: it re-exports these and declares the rest (the
tables with a row per profile, strata counters, GCG exceptions, the audit log). The read
models of the lists (`campaign list`, build progress, the console's first screen) import
from here, so a read-only command builds 9 table classes instead of the whole schema's
20 and configures 9 mappers: each SQLModel table class costs milliseconds to build
and map, most of `campaign list`'s start-up over `import sqlmodel` (issue 14 target 6),
and the console shows its first frame before the rest of the schema is imported
(target 5).

Foreign keys of these tables point only at tables of this module, so the catalogue is
complete on its own (tests/test_architecture.py holds it). Nothing here may carry a
PostgreSQL-only index option (`postgresql_where`): SQLAlchemy would import its whole
PostgreSQL dialect to validate it, even on SQLite; such indexes are declared in
store/models.py. See store/models.py for the design notes of the schema.
"""

# No `from __future__ import annotations` here or in store/models.py: with it, pydantic
# and SQLAlchemy parse every annotation string of every table class at import, about
# a sixth of the cost of building the classes (issue 14 target 6).

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from store import hashing
from store.states import (
    BuildReason,
    BuildStatus,
    CampaignStatus,
    MailingKind,
    MailingRunStatus,
    MailingStatus,
    SegmentKind,
)


def one_of(table: str, column: str, states: type[StrEnum]) -> sa.CheckConstraint:
    """The CHECK constraint `ck_TABLE_COLUMN` that admits only `states` in `column`.
    Changing a StrEnum means a revision that changes its constraint (0002_state_checks)."""
    values = ", ".join(f"'{state.value}'" for state in states)
    return sa.CheckConstraint(f'"{column}" IN ({values})', name=f"ck_{table}_{column}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC, on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use store.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite can hand back text
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


class TableModel(SQLModel):
    """The base of every table class (store/models.py's too). SQLModel constructs table
    objects from keyword arguments without validating them, and nothing here validates or
    dumps them through pydantic, so pydantic builds a table class's schema only if asked
    (`defer_build`) instead of at import, which every command paid (issue 14 target 6)."""

    model_config = ConfigDict(defer_build=True)


# --------------------------------------------------------------------------- profiles

FIELD_TYPES = ("text", "int", "float", "date")
SLOTS: dict[str, tuple[str, ...]] = {
    "text": tuple(f"t{i}" for i in range(8)),
    "int": tuple(f"i{i}" for i in range(8)),
    "float": tuple(f"f{i}" for i in range(4)),
    "date": tuple(f"d{i}" for i in range(4)),
}
STRATIFIABLE_TYPES = ("text", "int", "date")  # floats are continuous: no strata


class ProfileDatabase(TableModel, table=True):
    __tablename__ = "profile_database"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(200), unique=True, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    profile_count: int = 0  # counter, kept by imports and the demo
    # R11a: the GCG percent (basis points; 0 = no percent selection) and its seed, chosen
    # at the first `gcg set`; a profile's selection is store.gcg.selected(seed, percent).
    gcg_percent_bp: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    gcg_seed: int | None = Field(default=None, sa_type=BigInteger)


class ProfileField(TableModel, table=True):
    """A declared field of a profile database, mapped to a typed slot column of `profile`."""

    __tablename__ = "profile_field"
    __table_args__ = (
        UniqueConstraint("database_id", "name"),
        UniqueConstraint("database_id", "slot"),
    )

    id: int | None = Field(default=None, primary_key=True)
    database_id: int = Field(foreign_key="profile_database.id", index=True)
    name: str
    type: str  # one of FIELD_TYPES
    slot: str  # e.g. "t0", "i3"
    position: int = 0


# --------------------------------------------------------------------------- segments


class Segment(TableModel, table=True):
    __tablename__ = "segment"
    __table_args__ = (one_of("segment", "kind", SegmentKind),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(200), unique=True, nullable=False))
    kind: str = SegmentKind.STATIC
    # Dynamic segments evaluate their rule against this database's declared fields.
    # Static segments may hold profiles of several databases (database_id is None).
    database_id: int | None = Field(default=None, foreign_key="profile_database.id")
    rule: str | None = None
    refresh_every_seconds: int | None = None
    refresh_cron: str | None = None
    last_refreshed_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    last_refresh_seconds: float | None = None  # how long the last refresh took (issue 13 §6)
    # What the last refresh opened and closed (issue 13 §6), stored by it (revision 0010).
    last_refresh_entered: int | None = None
    last_refresh_left: int | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    member_count: int = 0  # counter of open memberships
    version: int = 1  # bumped on every change; the scheduler reconciles on it


# --------------------------------------------------------------------------- campaigns


class Campaign(TableModel, table=True):
    __tablename__ = "campaign"
    __table_args__ = (one_of("campaign", "status", CampaignStatus),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(200), unique=True, nullable=False))
    database_id: int = Field(foreign_key="profile_database.id")  # fixed at creation
    segment_id: int = Field(foreign_key="segment.id")  # fixed at creation
    status: str = Field(default=CampaignStatus.DRAFT, index=True)
    seed: int = Field(sa_type=BigInteger)  # R9: random per campaign, 0 <= seed < 2**63
    # R9: the assignment hash function (store/hashing.py) this campaign ranks profiles by;
    # fixed at creation, so its recalculations and newcomers stay consistent with its
    # members. Campaigns that existed before revision 0005 keep version 1.
    hash_version: int = Field(
        default=hashing.CURRENT_VERSION,
        sa_column_kwargs={"server_default": str(hashing.CURRENT_VERSION)},
    )
    lcg_enabled: bool = False
    lcg_percent_bp: int = 0  # basis points: 5.25 % is 525
    lcg_limit: int | None = None
    lcg_strata: list[str] = Field(default_factory=list, sa_column=sa.Column(JSON, nullable=False))
    # R9 cohort: bumped each time the LCG becomes enabled on an active campaign (and at
    # activation with the LCG on); members assigned while enabled carry its number.
    lcg_cohort: int = 0
    # Highest segment_member.id already considered by a build: an incremental build (R2c)
    # reads only segment rows above it, so its cost follows the newcomers, not the audience.
    segment_watermark: int = Field(default=0, sa_type=BigInteger)
    version: int = 1  # optimistic concurrency: every change checks and bumps it
    created_by: str = ""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    activated_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    completed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    # Counters of open memberships, kept by builds and segment changes.
    members: int = 0
    test_count: int = 0
    control_count: int = 0
    cohort_size: int = 0  # N of R9: open members of the current LCG cohort
    # R10 warnings of the latest build: [{"code": ..., "message": ..., ...}]
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=sa.Column(JSON, nullable=False)
    )


# --------------------------------------------------------------------------- builds


class AudienceBuild(TableModel, table=True):
    __tablename__ = "audience_build"
    __table_args__ = (
        Index("ix_audience_build_status", "status", "campaign_id"),
        one_of("audience_build", "status", BuildStatus),
        one_of("audience_build", "reason", BuildReason),
        # R2: at most one running build per campaign: the partial unique index
        # ux_audience_build_running, declared in store/models.py (see its docstring).
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    reason: str  # a BuildReason
    status: str = BuildStatus.QUEUED
    requested_by: str = ""
    requested_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    started_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    heartbeat_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    worker: str | None = None  # "host:pid" of the process running it
    mailing_id: int | None = Field(default=None, foreign_key="mailing.id")  # R11 expansion
    pauses_mailings: bool = False  # R5/R6: scheduled mailings paused while it runs
    total: int = 0
    processed: int = 0
    checkpoint: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSON))
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=sa.Column(JSON, nullable=False)
    )
    error: str | None = None
    # A build claimed again after it had started (resumed after a crash, retried after a
    # failure, or after its scheduler stopped): when, and how many profiles it had placed
    # by then, so its rate and ETA count this run only (revision 0011).
    resumed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    resumed_processed: int | None = None


# --------------------------------------------------------------------------- mailings


class Mailing(TableModel, table=True):
    __tablename__ = "mailing"
    __table_args__ = (
        one_of("mailing", "kind", MailingKind),
        one_of("mailing", "status", MailingStatus),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(200), unique=True, nullable=False))
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    kind: str  # a MailingKind
    send_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    cron: str | None = None
    segment_id: int | None = Field(default=None, foreign_key="segment.id")
    # R11b: the event a trigger mailing fires on (None for broadcast and regular mailings,
    # and for trigger mailings of release 1, which named none and so never fire).
    trigger_event: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    expand_audience: bool = False  # R11
    status: str = MailingStatus.ACTIVE
    manual_paused: bool = False  # an operator's pause; a build never undoes it
    manual_paused_by: str | None = None
    paused_by_build_id: int | None = Field(default=None, foreign_key="audience_build.id")
    last_run_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    next_run_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    version: int = 1  # bumped on every change; the scheduler reconciles on it

    @property
    def paused(self) -> bool:
        return self.manual_paused or self.paused_by_build_id is not None

    @property
    def paused_reason(self) -> str | None:
        reasons = []
        if self.manual_paused:
            reasons.append(f"paused by {self.manual_paused_by or 'an operator'}")
        if self.paused_by_build_id is not None:
            reasons.append(f"paused by audience build #{self.paused_by_build_id}")
        return "; ".join(reasons) or None


class MailingRun(TableModel, table=True):
    """One firing of a mailing. Unique per scheduled time so a fire is never doubled."""

    __tablename__ = "mailing_run"
    __table_args__ = (
        UniqueConstraint("mailing_id", "scheduled_for"),
        one_of("mailing_run", "status", MailingRunStatus),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailing_id: int = Field(foreign_key="mailing.id", index=True)
    scheduled_for: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    started_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    recipients: int = 0
    status: str = MailingRunStatus.RUNNING


class MailingOutcome(TableModel, table=True):
    """Counters of a trigger mailing's outcomes (R11b): `delivered`, or a suppression
    reason, kept by the drain in the transaction that records them (`mailing show`)."""

    __tablename__ = "mailing_outcome"

    mailing_id: int = Field(foreign_key="mailing.id", primary_key=True)
    outcome: str = Field(primary_key=True)  # "delivered" or a SuppressionReason
    count: int = Field(default=0, sa_type=BigInteger)


class SchedulerLease(TableModel, table=True):
    """Exactly one scheduler acts on a database: whoever holds the unexpired lease.
    Here because every screen's header shows its holder and heartbeat (store.monitor)."""

    __tablename__ = "scheduler_lease"

    name: str = Field(default="scheduler", primary_key=True)
    holder: str  # "host:pid:nonce"
    host: str
    pid: int
    acquired_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    heartbeat_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
