"""Read models: one typed read model per concept, shared by the console and the CLI.

* `CampaignRow` (campaign list), `CampaignDetail` (one campaign: LCG, validity, strata,
  mailings, builds, audit), `MailingRow`, `DatabaseRow`, here;
* segments (`SegmentOverview`) in store/segment_views.py, campaign members (`MemberRow`)
  in store/members.py, audit entries (`AuditLine`) in store/audit.py;
* build progress (`BuildProgress`) and scheduler health (`SchedulerHealth`) in
  store/monitor.py; the profile card (`ProfileCard`, R12) in store/history.py; target,
  quotas, deficit and SRM (`StratumValidity`) in store/validity.py.

The console renders these objects; the CLI serialises them (console/cli/serialise.py:
JSON, format.py: tables). Both therefore show the same figures in the same order. Counts
come from counters only (`campaign`, `campaign_stratum`, `audience_build`, `segment`),
so every function is a handful of indexed queries whatever the number of profiles.
Names sort bytewise on both backends (`by_name`). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session

from store import lcg
from store.catalog import (
    STRATIFIABLE_TYPES,
    AudienceBuild,
    Campaign,
    Mailing,
    MailingOutcome,
    MailingRun,
    ProfileDatabase,
    ProfileField,
    Segment,
    utcnow,
)
from store.errors import ValidationError
from store.locations import is_postgres
from store.monitor import BuildProgress, progress_row
from store.states import (
    OPEN_BUILD_STATUSES,
    BuildStatus,
    CampaignStatus,
    MailingKind,
    MailingRunStatus,
    MailingStatus,
    SuppressionReason,
)

if TYPE_CHECKING:
    from store.audience_scope import AudienceScope
    from store.audit import AuditLine
    from store.validity import StratumValidity

MAX_LIST_ROWS = 10_000  # docs/cli.md: ranges of numeric arguments


def live_warnings(campaign: Campaign) -> tuple[dict[str, Any], ...]:
    """The campaign's current stratification warnings (R10). A completed campaign has none
    (R8, issue 11): `complete` clears them, and one completed by release 1 may still store
    its last build's; that build keeps them in its own record."""
    if campaign.status == CampaignStatus.COMPLETED:
        return ()
    return tuple(campaign.warnings or ())


def by_name(session: Session, column: Any) -> Any:
    """Order text bytewise on both backends (PostgreSQL would use its locale otherwise)."""
    return column.collate("C") if is_postgres(session) else column


def percent_text(percent_bp: int) -> str | None:
    """Basis points as a decimal string: 525 -> "5.25", 1500 -> "15"; 0 (never set) -> None."""
    return lcg.format_percent(percent_bp) if percent_bp else None


def percent_of(part: int, whole: int) -> str:
    """One decimal, but never rounds a non-empty group to 0.0 % or a partial one to 100.0 %."""
    if not whole:
        return "–"
    share = 100 * part / whole
    if 0 < share < 0.1:
        return "<0.1%"
    if 99.9 < share < 100:
        return ">99.9%"
    return f"{share:.1f}%"


def lcg_summary(campaign: Campaign) -> str:
    if not campaign.lcg_enabled:
        return "off"
    parts = [f"{percent_text(campaign.lcg_percent_bp)}%"]
    if campaign.lcg_limit is not None:
        parts.append(f"≤{campaign.lcg_limit}")
    if campaign.lcg_strata:
        parts.append("by " + ",".join(campaign.lcg_strata))
    return " ".join(parts)


def _paused_mailings() -> Any:
    """Per campaign: its active mailings that are paused (by an operator or by a build).
    A stopped mailing (e.g. of a completed campaign, R8) is stopped, not paused."""
    return (
        sa.select(Mailing.campaign_id, sa.func.count().label("paused"))
        .where(
            Mailing.status == MailingStatus.ACTIVE,
            sa.or_(Mailing.manual_paused.is_(True), Mailing.paused_by_build_id.is_not(None)),
        )
        .group_by(Mailing.campaign_id)
        .subquery()
    )


# --------------------------------------------------------------------------- campaign list


@dataclass(frozen=True)
class CampaignRow:
    """One campaign in the list (`campaign list`, the console's first screen)."""

    id: int
    name: str
    version: int
    status: str
    database: str
    segment: str
    segment_kind: str
    members: int
    test: int
    control: int
    lcg_enabled: bool
    lcg_percent_bp: int
    lcg_limit: int | None
    lcg_strata: tuple[str, ...]
    lcg_summary: str
    warnings: tuple[dict[str, Any], ...]
    paused_mailings: int
    build: BuildProgress | None  # the running build, else the oldest queued one

    @property
    def lcg_percent(self) -> str | None:
        return percent_text(self.lcg_percent_bp)

    @property
    def test_pct(self) -> str:
        return percent_of(self.test, self.members)

    @property
    def control_pct(self) -> str:
        return percent_of(self.control, self.members)


def campaign_rows(session: Session) -> list[CampaignRow]:
    """Every campaign, ordered by name."""
    paused = _paused_mailings()
    rows = session.execute(
        sa.select(Campaign, ProfileDatabase.name, Segment.name, Segment.kind, paused.c.paused)
        .join(ProfileDatabase, ProfileDatabase.id == Campaign.database_id)
        .join(Segment, Segment.id == Campaign.segment_id)
        .outerjoin(paused, paused.c.campaign_id == Campaign.id)
        .order_by(by_name(session, Campaign.name))
    ).all()
    now = utcnow()
    current: dict[int, BuildProgress] = {}  # per campaign: running, else oldest queued
    for build, campaign_name in session.execute(
        sa.select(AudienceBuild, Campaign.name)
        .join(Campaign, Campaign.id == AudienceBuild.campaign_id)
        .where(AudienceBuild.status.in_(OPEN_BUILD_STATUSES))
        .order_by(AudienceBuild.id)
    ):
        if build.status == BuildStatus.RUNNING or build.campaign_id not in current:
            current[build.campaign_id] = progress_row(build, campaign_name, now)
    return [
        CampaignRow(
            id=c.id,
            name=c.name,
            version=c.version,
            status=c.status,
            database=database,
            segment=segment,
            segment_kind=kind,
            members=c.members,
            test=c.test_count,
            control=c.control_count,
            lcg_enabled=bool(c.lcg_enabled),
            lcg_percent_bp=c.lcg_percent_bp,
            lcg_limit=c.lcg_limit,
            lcg_strata=tuple(c.lcg_strata or ()),
            lcg_summary=lcg_summary(c),
            warnings=live_warnings(c),
            paused_mailings=paused_count or 0,
            build=current.get(c.id),
        )
        for c, database, segment, kind, paused_count in rows
    ]


# --------------------------------------------------------------------------- one campaign


@dataclass(frozen=True)
class MailingRow:
    id: int
    name: str
    kind: str
    status: str
    schedule: str
    send_at: datetime | None
    cron: str | None
    expand_audience: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    paused: bool
    manual_paused: bool
    paused_reason: str | None
    version: int
    event: str | None = None  # R11b: what a trigger mailing fires on


def mailing_row(mailing: Mailing) -> MailingRow:
    return MailingRow(
        id=mailing.id,
        name=mailing.name,
        kind=mailing.kind,
        status=mailing.status,
        schedule=_schedule(mailing),
        send_at=mailing.send_at,
        cron=mailing.cron,
        expand_audience=bool(mailing.expand_audience),
        last_run_at=mailing.last_run_at,
        next_run_at=mailing.next_run_at,
        paused=mailing.paused,
        manual_paused=bool(mailing.manual_paused),
        paused_reason=mailing.paused_reason,
        version=mailing.version,
        event=mailing.trigger_event,
    )


def _schedule(mailing: Mailing) -> str:
    if mailing.kind == MailingKind.REGULAR:
        return f"cron {mailing.cron}"
    if mailing.kind == MailingKind.BROADCAST and mailing.send_at is not None:
        return f"at {mailing.send_at:%Y-%m-%d %H:%M}"
    return f"on {mailing.trigger_event}" if mailing.trigger_event else "on event (none named)"


@dataclass(frozen=True)
class MailingDetail:
    """One mailing (`mailing show`): its row, and what it sent (R11b). `sent` counts the
    deliveries of its runs and of its events; `suppressed` every suppression reason (0
    when none), in the order of SuppressionReason."""

    mailing: MailingRow
    campaign: str
    campaign_status: str
    segment: str | None
    sent: int
    suppressed: dict[str, int]

    @property
    def suppressed_total(self) -> int:
        return sum(self.suppressed.values())


def mailing_detail(session: Session, name: str) -> MailingDetail:
    """The mailing named `name`, from counters (`mailing_run.recipients`,
    `mailing_outcome`); NotFoundError when there is none."""
    from store.events import DELIVERED
    from store.mailings import get_mailing

    mailing = get_mailing(session, name)
    campaign = session.get(Campaign, mailing.campaign_id)
    segment = session.get(Segment, mailing.segment_id) if mailing.segment_id else None
    outcomes = dict(
        session.execute(
            sa.select(MailingOutcome.outcome, MailingOutcome.count).where(
                MailingOutcome.mailing_id == mailing.id
            )
        ).all()
    )
    run_recipients = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(MailingRun.recipients), 0)).where(
            MailingRun.mailing_id == mailing.id, MailingRun.status == MailingRunStatus.DONE
        )
    )
    return MailingDetail(
        mailing=mailing_row(mailing),
        campaign=campaign.name,
        campaign_status=campaign.status,
        segment=segment.name if segment else None,
        sent=int(run_recipients or 0) + int(outcomes.get(DELIVERED, 0)),
        suppressed={reason.value: int(outcomes.get(reason, 0)) for reason in SuppressionReason},
    )


@dataclass(frozen=True)
class CampaignDetail:
    """One campaign (`campaign show`, the console's campaign screen)."""

    id: int
    name: str
    version: int
    status: str
    database: str
    database_id: int
    segment: str
    segment_kind: str
    segment_rule: str | None
    seed: int
    members: int
    test: int
    control: int
    cohort_size: int
    lcg_enabled: bool
    lcg_percent_bp: int
    lcg_limit: int | None
    lcg_strata: tuple[str, ...]
    lcg_summary: str
    target: int
    deficit: int
    warnings: tuple[dict[str, Any], ...]
    srm_p_value: float | None
    srm_flagged: bool
    created_at: datetime
    activated_at: datetime | None
    completed_at: datetime | None
    field_types: dict[str, str] = field(default_factory=dict)  # of the database's fields
    strata: list[StratumValidity] = field(default_factory=list)
    mailings: list[MailingRow] = field(default_factory=list)
    builds: list[BuildProgress] = field(default_factory=list)  # open first, then latest
    audit: list[AuditLine] = field(default_factory=list)  # about this campaign, newest first
    # Issue 13 (R1, R3, R11a): GCG / other-database exclusions and a draft's pending split.
    scope: AudienceScope | None = None

    @property
    def lcg_percent(self) -> str | None:
        return percent_text(self.lcg_percent_bp)

    @property
    def warning_messages(self) -> tuple[str, ...]:
        return tuple(str(w.get("message") or w.get("code") or w) for w in self.warnings)


def campaign_detail(
    session: Session, name: str, *, build_limit: int = 10, audit_limit: int = 8
) -> CampaignDetail | None:
    """Everything about one campaign; None when there is no such campaign."""
    row = session.execute(
        sa.select(Campaign, ProfileDatabase.name, Segment)
        .join(ProfileDatabase, ProfileDatabase.id == Campaign.database_id)
        .join(Segment, Segment.id == Campaign.segment_id)
        .where(Campaign.name == name)
    ).first()
    if row is None:
        return None
    campaign, database, segment = row
    # Imported here, like store.campaigns below: the validity arithmetic (with
    # the build checkpoint) and the audit log are not what `campaign list` needs to load
    # (issue 14 target 6; tests/test_architecture.py).
    from store.audit import audit_log
    from store.validity import campaign_validity

    # Target, per-stratum quotas, deficit (R6) and SRM: the one computation the engine
    # uses too (store/validity.py, from counters).
    validity = campaign_validity(session, campaign)
    mailings = [
        mailing_row(m)
        for m in session.scalars(
            sa.select(Mailing)
            .where(Mailing.campaign_id == campaign.id)
            .order_by(by_name(session, Mailing.name))
        )
    ]
    audit = audit_log(session, limit=audit_limit, target=("campaign", campaign.id))
    return CampaignDetail(
        id=campaign.id,
        name=campaign.name,
        version=campaign.version,
        status=campaign.status,
        database=database,
        database_id=campaign.database_id,
        segment=segment.name,
        segment_kind=segment.kind,
        segment_rule=segment.rule,
        seed=campaign.seed,
        members=campaign.members,
        test=campaign.test_count,
        control=campaign.control_count,
        cohort_size=campaign.cohort_size,
        lcg_enabled=bool(campaign.lcg_enabled),
        lcg_percent_bp=campaign.lcg_percent_bp,
        lcg_limit=campaign.lcg_limit,
        lcg_strata=tuple(campaign.lcg_strata or ()),
        lcg_summary=lcg_summary(campaign),
        target=validity.target,
        deficit=validity.deficit,
        warnings=live_warnings(campaign),
        srm_p_value=validity.srm_p_value,
        srm_flagged=bool(validity.srm_flagged),
        created_at=campaign.created_at,
        activated_at=campaign.activated_at,
        completed_at=campaign.completed_at,
        field_types=_field_types(session, campaign.database_id),
        strata=list(validity.strata),
        mailings=mailings,
        builds=builds(session, campaign=campaign.name, limit=build_limit),
        audit=audit,
        scope=_scope(session, campaign),
    )


def _scope(session: Session, campaign: Campaign) -> AudienceScope:
    # Imported here: audience_scope brings the campaign write side, which list commands
    # never need (CLI start-up, issue 14).
    from store.audience_scope import audience_scope

    return audience_scope(session, campaign)


def require_campaign_detail(session: Session, name: str) -> CampaignDetail:
    """`campaign_detail`, or the store's NotFoundError when there is no such campaign."""
    detail = campaign_detail(session, name)
    if detail is None:
        # Imported here: store.campaigns brings the whole write side, which read-only
        # commands such as `campaign list` never load (CLI start-up, issue 14).
        from store.campaigns import get_campaign

        get_campaign(session, name)  # raises NotFoundError with the usual message
    assert detail is not None
    return detail


def _field_types(session: Session, database_id: int) -> dict[str, str]:
    return {
        f.name: f.type
        for f in session.scalars(
            sa.select(ProfileField)
            .where(ProfileField.database_id == database_id)
            .order_by(ProfileField.position)
        )
    }


# --------------------------------------------------------------------------- builds


def builds(
    session: Session, *, campaign: str | None = None, limit: int = 50
) -> list[BuildProgress]:
    """Queued and running builds first (oldest first), then the latest finished ones."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_ROWS:
        raise ValidationError(f"--limit must be a whole number from 1 to {MAX_LIST_ROWS:,}")
    base = sa.select(AudienceBuild, Campaign.name).join(
        Campaign, Campaign.id == AudienceBuild.campaign_id
    )
    if campaign is not None:
        from store.campaigns import get_campaign

        get_campaign(session, campaign)  # an unknown name is not found (exit 4), not "none"
        base = base.where(Campaign.name == campaign)
    active = session.execute(
        base.where(AudienceBuild.status.in_(OPEN_BUILD_STATUSES)).order_by(AudienceBuild.id)
    ).all()
    finished = session.execute(
        base.where(AudienceBuild.status.not_in(OPEN_BUILD_STATUSES))
        .order_by(AudienceBuild.id.desc())
        .limit(max(limit - len(active), 0))
    ).all()
    now = utcnow()
    return [progress_row(b, name, now) for b, name in [*active, *finished]]


def builds_by_id(session: Session, build_ids: list[int]) -> list[BuildProgress]:
    """These builds (e.g. the ones an operation queued), oldest first."""
    if not build_ids:
        return []
    now = utcnow()
    return [
        progress_row(b, name, now)
        for b, name in session.execute(
            sa.select(AudienceBuild, Campaign.name)
            .join(Campaign, Campaign.id == AudienceBuild.campaign_id)
            .where(AudienceBuild.id.in_(list(build_ids)))
            .order_by(AudienceBuild.id)
        )
    ]


# --------------------------------------------------------------------------- databases, segments


@dataclass(frozen=True)
class DatabaseRow:
    name: str
    profiles: int
    fields: tuple[tuple[str, str], ...]  # (name, type) in declaration order


def database_row(session: Session, database: ProfileDatabase) -> DatabaseRow:
    return DatabaseRow(
        database.name,
        database.profile_count,
        tuple(_field_types(session, database.id).items()),
    )


def database_rows(session: Session) -> list[DatabaseRow]:
    return [
        database_row(session, d)
        for d in session.scalars(
            sa.select(ProfileDatabase).order_by(by_name(session, ProfileDatabase.name))
        )
    ]


def database_names(session: Session) -> list[str]:
    return list(
        session.scalars(
            sa.select(ProfileDatabase.name).order_by(by_name(session, ProfileDatabase.name))
        )
    )


def stratifiable_fields(session: Session, database_id: int) -> list[str]:
    """Field names the LCG form offers as strata (floats are continuous: none)."""
    return list(
        session.scalars(
            sa.select(ProfileField.name)
            .where(
                ProfileField.database_id == database_id,
                ProfileField.type.in_(STRATIFIABLE_TYPES),
            )
            .order_by(ProfileField.position)
        )
    )


def read_session(engine: Any) -> Session:
    """A session for reading read models (the console's polls, the CLI's lists): clients
    open sessions through the store, never through SQLAlchemy themselves.

    On PostgreSQL an engine opened with a statement timeout (the CLI and the console:
    `statement_timeout` under [postgres], issue 15.6) bounds every statement of these
    interactive reads, so a stuck server or a lock cannot freeze a screen for good; builds
    and imports (transactions, the scheduler's engine) are not limited."""
    from store.db import statement_timeout_ms

    session = Session(engine, expire_on_commit=False)
    limit = statement_timeout_ms(engine)
    if limit:

        @sa.event.listens_for(session, "after_begin")
        def _bound_reads(_session: Any, _transaction: Any, connection: Any) -> None:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {limit}")

    return session
