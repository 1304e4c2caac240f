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
  draft's pending audience (R3), `entered_gcg` / `left_gcg` (R11a): exactly
  store.states.ProfileEventKind, which its CHECK enforces. A unique index on (build,
  profile, kind, campaign) makes a resumed build unable to write an event twice.
* Counters (`Campaign.members/test_count/control_count`, `CampaignStratum`,
  `Segment.member_count`, `AudienceBuild.processed/total`) are maintained by the
  transactions that change membership, so no screen ever scans members.
* LCG percent is stored exactly as basis points (5.25 % -> 525); never a float.
* All times are UTC and come back timezone-aware (`UTCDateTime`).

The catalogue tables (one row per database, field, segment, campaign, build, mailing)
and the column types are declared in store/catalog.py and re-exported here, so this
module is the whole schema: import from here whatever needs it (Alembic's env.py,
store/migrate.py, anything that writes). The read models of the lists import
store.catalog only, to start fast (issue 14 target 6).
"""

# No `from __future__ import annotations`: see store/catalog.py.

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from store import hashing
from store.catalog import (  # re-exported: the whole schema is importable from here
    FIELD_TYPES,
    SLOTS,
    STRATIFIABLE_TYPES,
    AudienceBuild,
    Campaign,
    Mailing,
    MailingOutcome,
    MailingRun,
    ProfileDatabase,
    ProfileField,
    SchedulerLease,
    Segment,
    TableModel,
    UTCDateTime,
    one_of,
    utcnow,
)
from store.states import Group, MemberSource, ProfileEventKind, SuppressionReason

__all__ = [
    "FIELD_TYPES",
    "SLOTS",
    "STRATIFIABLE_TYPES",
    "EVENT_ID",
    "AudienceBuild",
    "AuditEntry",
    "Campaign",
    "CampaignMember",
    "CampaignStratum",
    "Delivery",
    "GcgException",
    "Mailing",
    "MailingOutcome",
    "MailingRun",
    "Profile",
    "ProfileDatabase",
    "ProfileEvent",
    "ProfileField",
    "SchedulerLease",
    "Segment",
    "SegmentMember",
    "SQLModel",  # SQLModel.metadata: every table, once this module is imported
    "StoreMeta",
    "Suppression",
    "TableModel",
    "TriggerEvent",
    "UTCDateTime",
    "one_of",
    "utcnow",
]

# --------------------------------------------------------------------------- profiles


def _profile_key_default(context: Any) -> int:
    """hash_key for ORM and Core inserts that do not give one (raw SQL must)."""
    return hashing.profile_key(context.get_current_parameters()["external_id"])


class Profile(TableModel, table=True):
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


# --------------------------------------------------------------------------- segments


class SegmentMember(TableModel, table=True):
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
        # Closed intervals only (revision 0010): what reads it compares left_at (R4's
        # leavers at a time, R3's since a time), and an add writes no entry into it.
        Index(
            "ix_segment_member_segment_left",
            "segment_id",
            "left_at",
            sqlite_where=sa.text("left_at IS NOT NULL"),
            postgresql_where=sa.text("left_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    segment_id: int = Field(foreign_key="segment.id")
    profile_id: int = Field(foreign_key="profile.id")
    entered_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    entered_by: str
    left_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    left_by: str | None = None


# --------------------------------------------------------------------------- campaigns


class CampaignStratum(TableModel, table=True):
    """Per-stratum counters of a campaign (R9, R10): what the strata table shows."""

    __tablename__ = "campaign_stratum"

    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    stratum_key: str = Field(primary_key=True)  # see store.strata for the encoding
    members: int = 0  # open members in the stratum
    cohort: int = 0  # n_s: open members of the current LCG cohort
    control: int = 0  # c_s
    quota: int = 0  # q_s after the latest build


class GcgException(TableModel, table=True):
    """R1: campaigns of a database that may reach its global control group."""

    __tablename__ = "gcg_exception"

    database_id: int = Field(foreign_key="profile_database.id", primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)


class CampaignMember(TableModel, table=True):
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


class ProfileEvent(TableModel, table=True):
    """Append-only events that membership rows cannot carry (R12). Never updated.

    `kind` is a ProfileEventKind; the card shows these beside the events it derives from
    membership, delivery and suppression rows (store.states.CardEventKind)."""

    __tablename__ = "profile_event"
    __table_args__ = (
        one_of("profile_event", "kind", ProfileEventKind),
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
    kind: str  # a ProfileEventKind
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    segment_id: int | None = Field(default=None, foreign_key="segment.id")
    group: str | None = None
    build_id: int | None = Field(default=None, foreign_key="audience_build.id")
    actor: str = ""


# SQLite gives a rowid (auto-increment) only to an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class TriggerEvent(TableModel, table=True):
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


class Delivery(TableModel, table=True):
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


class Suppression(TableModel, table=True):
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


# --------------------------------------------------------------------------- operations


class AuditEntry(TableModel, table=True):
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


class StoreMeta(TableModel, table=True):
    __tablename__ = "store_meta"

    key: str = Field(primary_key=True)
    value: str


# R2: at most one running build per campaign, enforced by the database itself. Declared
# here rather than in AudienceBuild's __table_args__ (store/catalog.py) because its
# PostgreSQL predicate makes SQLAlchemy import the PostgreSQL dialect to validate it, even
# on SQLite; given columns, an Index attaches itself to their table, so the schema that
# Alembic and create_all see is unchanged.
Index(
    "ux_audience_build_running",
    AudienceBuild.__table__.c.campaign_id,
    unique=True,
    sqlite_where=sa.text("status = 'running'"),
    postgresql_where=sa.text("status = 'running'"),
)
