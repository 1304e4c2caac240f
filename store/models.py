"""The schema: every table of the SPEC vocabulary (../shared/SPEC.md).

Design notes that every module relies on:

* Profile fields are typed and declared per database (`ProfileField`). Each declared
  field is mapped to a typed *slot column* of `profile` (`t0..t7` text, `i0..i7` int,
  `f0..f3` float, `d0..d3` date). Slots keep strata and segment rules set-based,
  indexable and identical on SQLite and PostgreSQL (no JSON extraction per row).
* Segment and campaign membership are *intervals*: a row is opened once (`entered_at` /
  `joined_at`) and closed once (`left_at`), never reopened or deleted. Re-entering opens
  a new row. The profile card derives `entered_segment`, `left_segment`,
  `entered_campaign` and `left_campaign` from these rows (R12 allows derivation), so a
  million-member activation writes one row per member, not two.
* `ProfileEvent` is the append-only log of the events that membership rows cannot carry:
  `moved_to_test` (R6 surplus, R7), `left_campaign` for a profile that was only in a
  draft's pending audience (R3). A unique index on (build, profile, kind, campaign) makes
  a resumed build unable to write an event twice.
* Counters (`Campaign.members/test_count/control_count`, `CampaignStratum`,
  `Segment.member_count`, `AudienceBuild.processed/total`) are maintained by the
  transactions that change membership, so no screen ever scans members.
* LCG percent is stored exactly as basis points (5.25 % -> 525); never a float.
* All times are UTC and come back timezone-aware (`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from store import hashing
from store.states import (
    BuildReason,
    BuildStatus,
    CampaignStatus,
    Group,
    MailingKind,
    MailingRunStatus,
    MailingStatus,
    MemberSource,
    SegmentKind,
    SuppressionReason,
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


# --------------------------------------------------------------------------- profiles

FIELD_TYPES = ("text", "int", "float", "date")
SLOTS: dict[str, tuple[str, ...]] = {
    "text": tuple(f"t{i}" for i in range(8)),
    "int": tuple(f"i{i}" for i in range(8)),
    "float": tuple(f"f{i}" for i in range(4)),
    "date": tuple(f"d{i}" for i in range(4)),
}
STRATIFIABLE_TYPES = ("text", "int", "date")  # floats are continuous: no strata


class ProfileDatabase(SQLModel, table=True):
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


class ProfileField(SQLModel, table=True):
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


def _profile_key_default(context: Any) -> int:
    """hash_key for ORM and Core inserts that do not give one (raw SQL must)."""
    return hashing.profile_key(context.get_current_parameters()["external_id"])


class Profile(SQLModel, table=True):
    __tablename__ = "profile"
    __table_args__ = (UniqueConstraint("database_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    database_id: int = Field(foreign_key="profile_database.id")
    external_id: str
    # R9: the profile's 64-bit key, store.hashing.profile_key(external_id), computed once
    # when the profile is created; hash version 2 mixes it with a campaign's seed in SQL.
    hash_key: int | None = Field(
        default=None,
        sa_column=sa.Column(BigInteger, nullable=False, default=_profile_key_default),
    )
    in_gcg: bool = Field(default=False)  # R1: held out of every campaign of the database
    gcg_override: bool | None = None  # R11a: an operator's gcg add/remove; beats the percent
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    t0: str | None = None
    t1: str | None = None
    t2: str | None = None
    t3: str | None = None
    t4: str | None = None
    t5: str | None = None
    t6: str | None = None
    t7: str | None = None
    i0: int | None = Field(default=None, sa_type=BigInteger)
    i1: int | None = Field(default=None, sa_type=BigInteger)
    i2: int | None = Field(default=None, sa_type=BigInteger)
    i3: int | None = Field(default=None, sa_type=BigInteger)
    i4: int | None = Field(default=None, sa_type=BigInteger)
    i5: int | None = Field(default=None, sa_type=BigInteger)
    i6: int | None = Field(default=None, sa_type=BigInteger)
    i7: int | None = Field(default=None, sa_type=BigInteger)
    f0: float | None = None
    f1: float | None = None
    f2: float | None = None
    f3: float | None = None
    d0: date | None = None
    d1: date | None = None
    d2: date | None = None
    d3: date | None = None


class GcgException(SQLModel, table=True):
    """R1: campaigns of a database that may reach its global control group."""

    __tablename__ = "gcg_exception"

    database_id: int = Field(foreign_key="profile_database.id", primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)


# --------------------------------------------------------------------------- segments


class Segment(SQLModel, table=True):
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
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    member_count: int = 0  # counter of open memberships
    version: int = 1  # bumped on every change; the scheduler reconciles on it


class SegmentMember(SQLModel, table=True):
    """One interval of a profile's membership in a segment (entered ... left)."""

    __tablename__ = "segment_member"
    __table_args__ = (
        Index(
            "ux_segment_member_open",
            "segment_id",
            "profile_id",
            unique=True,
            sqlite_where=sa.text("left_at IS NULL"),
            postgresql_where=sa.text("left_at IS NULL"),
        ),
        Index("ix_segment_member_profile", "profile_id"),
        Index("ix_segment_member_segment_entered", "segment_id", "entered_at"),
        Index("ix_segment_member_segment_left", "segment_id", "left_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    segment_id: int = Field(foreign_key="segment.id")
    profile_id: int = Field(foreign_key="profile.id")
    entered_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    entered_by: str
    left_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    left_by: str | None = None


# --------------------------------------------------------------------------- campaigns


class Campaign(SQLModel, table=True):
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


class CampaignStratum(SQLModel, table=True):
    """Per-stratum counters of a campaign (R9, R10): what the strata table shows."""

    __tablename__ = "campaign_stratum"

    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    stratum_key: str = Field(primary_key=True)  # see store.strata for the encoding
    members: int = 0  # open members in the stratum
    cohort: int = 0  # n_s: open members of the current LCG cohort
    control: int = 0  # c_s
    quota: int = 0  # q_s after the latest build


class CampaignMember(SQLModel, table=True):
    """One interval of a profile's membership in a campaign audience."""

    __tablename__ = "campaign_member"
    __table_args__ = (
        Index(
            "ux_campaign_member_open",
            "campaign_id",
            "profile_id",
            unique=True,
            sqlite_where=sa.text("left_at IS NULL"),
            postgresql_where=sa.text("left_at IS NULL"),
        ),
        Index("ix_campaign_member_profile", "profile_id"),
        # (campaign, group, stratum) without the hash: rows with equal keys are kept in
        # insertion order, so a build appends to the end of a few dozen runs instead of
        # inserting at random places (issue 14: the hash order made index upkeep most of a
        # build's time). Hash ranges (trims, cut-offs) scan one stratum's control members.
        Index("ix_campaign_member_group", "campaign_id", "group", "stratum_key"),
        # Open control members by cohort: what R7 and a new cohort demote (build_steps).
        Index(
            "ix_campaign_member_open_control",
            "campaign_id",
            "cohort",
            sqlite_where=sa.text("\"group\" = 'control' AND left_at IS NULL"),
            postgresql_where=sa.text("\"group\" = 'control' AND left_at IS NULL"),
        ),
        one_of("campaign_member", "group", Group),
        one_of("campaign_member", "joined_group", Group),
        one_of("campaign_member", "source", MemberSource),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    profile_id: int = Field(foreign_key="profile.id")
    group: str  # a Group: the current one
    joined_group: str  # group given when the interval opened (entered_campaign event)
    source: str  # a MemberSource
    stratum_key: str = ""
    assignment_hash: int = Field(sa_type=BigInteger)
    cohort: int | None = None  # Campaign.lcg_cohort at assignment, None if LCG was off
    joined_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    joined_build_id: int | None = Field(default=None, foreign_key="audience_build.id")
    joined_by: str = ""
    left_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    left_build_id: int | None = Field(default=None, foreign_key="audience_build.id")
    left_by: str | None = None


PROFILE_EVENT_KINDS = (
    "entered_segment",
    "left_segment",
    "entered_campaign",
    "left_campaign",
    "moved_to_test",
    "delivered",
    "entered_gcg",  # R11a: gcg add (no campaign)
    "left_gcg",  # R11a: gcg remove
    "suppressed",  # R11b: a trigger mailing sent nothing (derived from `suppression`)
)


class ProfileEvent(SQLModel, table=True):
    """Append-only events that membership rows cannot carry (R12). Never updated."""

    __tablename__ = "profile_event"
    __table_args__ = (
        Index("ix_profile_event_profile_at", "profile_id", "at"),
        Index(
            "ux_profile_event_build",
            "build_id",
            "profile_id",
            "kind",
            "campaign_id",
            unique=True,
            sqlite_where=sa.text("build_id IS NOT NULL"),
            postgresql_where=sa.text("build_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    profile_id: int = Field(foreign_key="profile.id")
    kind: str
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    segment_id: int | None = Field(default=None, foreign_key="segment.id")
    group: str | None = None
    build_id: int | None = Field(default=None, foreign_key="audience_build.id")
    actor: str = ""


# --------------------------------------------------------------------------- builds


class AudienceBuild(SQLModel, table=True):
    __tablename__ = "audience_build"
    __table_args__ = (
        Index("ix_audience_build_status", "status", "campaign_id"),
        one_of("audience_build", "status", BuildStatus),
        one_of("audience_build", "reason", BuildReason),
        # R2: at most one running build per campaign, enforced by the database itself.
        Index(
            "ux_audience_build_running",
            "campaign_id",
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        ),
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


# --------------------------------------------------------------------------- mailings


class Mailing(SQLModel, table=True):
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


class MailingRun(SQLModel, table=True):
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


# SQLite gives a rowid (auto-increment) only to an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class TriggerEvent(SQLModel, table=True):
    """R11b: the event inbox. One row per event received (`event send`, `events import`);
    the scheduler's drain marks it processed in the transaction that records its effects
    (deliveries, suppressions), so an event's effect happens exactly once."""

    __tablename__ = "event_inbox"
    __table_args__ = (
        # The drain's queue: unprocessed events in arrival order.
        Index(
            "ix_event_inbox_pending",
            "id",
            sqlite_where=sa.text("processed_at IS NULL"),
            postgresql_where=sa.text("processed_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(EVENT_ID, primary_key=True))
    # No foreign keys here, on purpose: the import resolves both in the same transaction
    # and profiles are never deleted (R12); per-row FK checks cost PostgreSQL twice the
    # insert itself (BENCHMARKS.md, events).
    database_id: int
    profile_id: int
    event: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))  # when it happened
    received_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    received_by: str = ""
    processed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class Delivery(SQLModel, table=True):
    """One message recorded by the default sender; shown as `delivered` on the card.

    A scheduled mailing's delivery belongs to its run (`run_id`); a trigger mailing's to
    the event that fired it (`event_id`, R11b), at most once per (event, mailing)."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("run_id", "profile_id"),
        Index("ix_delivery_profile", "profile_id"),
        Index("ix_delivery_mailing", "mailing_id"),
        Index("ux_delivery_event", "event_id", "mailing_id", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="mailing_run.id")
    event_id: int | None = Field(
        default=None, sa_column=sa.Column(EVENT_ID, sa.ForeignKey("event_inbox.id"))
    )
    mailing_id: int = Field(foreign_key="mailing.id")
    campaign_id: int = Field(foreign_key="campaign.id")
    profile_id: int = Field(foreign_key="profile.id")
    sent_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class Suppression(SQLModel, table=True):
    """R11b: a trigger mailing fired for a profile's event and sent nothing, with why.
    Append-only; at most one per (event, mailing), like a trigger delivery."""

    __tablename__ = "suppression"
    __table_args__ = (
        Index("ux_suppression_event", "event_id", "mailing_id", unique=True),
        Index("ix_suppression_profile", "profile_id"),
        Index("ix_suppression_mailing", "mailing_id", "reason"),
        one_of("suppression", "reason", SuppressionReason),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(
        sa_column=sa.Column(EVENT_ID, sa.ForeignKey("event_inbox.id"), nullable=False)
    )
    mailing_id: int = Field(foreign_key="mailing.id")
    campaign_id: int = Field(foreign_key="campaign.id")
    profile_id: int = Field(foreign_key="profile.id")
    reason: str  # a SuppressionReason
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class MailingOutcome(SQLModel, table=True):
    """Counters of a trigger mailing's outcomes (R11b): `delivered`, or a suppression
    reason, kept by the drain in the transaction that records them (`mailing show`)."""

    __tablename__ = "mailing_outcome"

    mailing_id: int = Field(foreign_key="mailing.id", primary_key=True)
    outcome: str = Field(primary_key=True)  # "delivered" or a SuppressionReason
    count: int = Field(default=0, sa_type=BigInteger)


# --------------------------------------------------------------------------- operations


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_target", "target_type", "target_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    actor: str
    role: str
    origin: str  # "local" or "ssh 203.0.113.9:52144"
    action: str  # e.g. "campaign.activate"
    target_type: str
    target_id: int | None = None
    target_name: str | None = None
    outcome: str = "ok"  # "ok" | "refused"
    details: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON, nullable=False))


class SchedulerLease(SQLModel, table=True):
    """Exactly one scheduler acts on a database: whoever holds the unexpired lease."""

    __tablename__ = "scheduler_lease"

    name: str = Field(default="scheduler", primary_key=True)
    holder: str  # "host:pid:nonce"
    host: str
    pid: int
    acquired_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    heartbeat_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class StoreMeta(SQLModel, table=True):
    __tablename__ = "store_meta"

    key: str = Field(primary_key=True)
    value: str
