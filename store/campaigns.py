"""Campaign lifecycle (R2, R3, R5–R8): create, activate, edit/enable/disable the LCG, complete.

Every operation runs in the caller's transaction, checks the actor first
(`actor.require_write`), validates everything before writing anything, then bumps the
campaign's version with an atomic compare-and-set (`UPDATE campaign SET version = v+1
WHERE id = :id AND version = :v`; zero rows means someone else changed it: ConflictError),
writes one audit entry and queues the build the rules call for. A refusal raises a typed
error (store.errors) and changes nothing.

Limits of the settings (see docs/engine.md):
* percent: 0 < p < 100 with at most two decimals, stored exactly as basis points;
* limit: a whole number >= 1, or None for no limit;
* strata: declared fields of type text, int or date (floats cannot be stratified), at
  most `strata.MAX_STRATA_FIELDS` fields and at most `strata.MAX_STRATA` (1000) distinct
  value combinations over the campaign's audience (COUNT DISTINCT at edit time).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import audit, builds, lcg, strata
from store.actors import Actor
from store.errors import ConflictError, NotFoundError, ValidationError
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignStratum,
    Mailing,
    ProfileDatabase,
    ProfileField,
    Segment,
    UTCDateTime,
    utcnow,
)
from store.names import check_name
from store.profiles import database_fields
from store.scope import r1_scope_sql
from store.states import (
    OPEN_BUILD_STATUSES,
    BuildReason,
    BuildStatus,
    CampaignStatus,
    MailingStatus,
    SegmentKind,
    check_can_activate,
    check_can_change_lcg,
    check_can_complete,
)


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()

parse_percent = lcg.parse_percent
MAX_STRATA = strata.MAX_STRATA


@dataclass
class PreviewRow:
    key: str
    values: dict[str, str | None]
    label: str
    members: int  # open members (draft: pending audience) in the stratum
    cohort: int  # n_s
    control: int  # current c_s
    quota: int  # q_s under the previewed settings
    ideal: float  # T × n_s / N


@dataclass
class LcgPreview:
    percent_bp: int
    limit: int | None
    strata: list[str]
    cohort_size: int
    unlimited_target: int
    target: int
    limit_binds: bool
    rows: list[PreviewRow] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    surplus: int = 0  # control members a recalculation would move to test (R6)
    deficit: int = 0  # control places left for newcomers (R6)
    note: str = ""


# --------------------------------------------------------------------------- lookups


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = session.scalar(sa.select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise NotFoundError(f"no campaign named {name!r}")
    return campaign


def _fresh(session: Session, campaign: Campaign) -> tuple[Campaign, int]:
    """The campaign row as this session sees it, and the version the caller read."""
    read_version = campaign.version
    if campaign not in session:
        current = session.get(Campaign, campaign.id)
        if current is None:
            raise NotFoundError(f"campaign {campaign.name!r} no longer exists")
        return current, read_version
    return campaign, read_version


def _check_version(campaign: Campaign, read_version: int, expected: int | None) -> int:
    version = read_version if expected is None else expected
    if version != campaign.version:
        raise ConflictError(_conflict_message(campaign, version))
    return version


def _conflict_message(campaign: Campaign, version: int) -> str:
    return (
        f"campaign {campaign.name!r} was changed by someone else since you read it "
        f"(version {version}); reload it and try again"
    )


def _bump(session: Session, campaign: Campaign, version: int, **values: Any) -> None:
    """Atomic optimistic check: only one concurrent writer can move version v to v+1."""
    result = session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.version == version)
        .values(version=version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise ConflictError(_conflict_message(campaign, version))
    session.refresh(campaign)


# --------------------------------------------------------------------------- validation


def _strata_fields(session: Session, database_id: int, names: Any) -> list[ProfileField]:
    if isinstance(names, str) or names is None:
        raise ValidationError("strata must be a list of field names (empty for none)")
    return strata.resolve_fields(database_fields(session, database_id), list(names))


def _audience_source(campaign: Campaign) -> tuple[str, dict[str, Any]]:
    """FROM/WHERE over profile p of the campaign's audience: members when active, the
    pending audience (open segment members in R1 scope) when a draft."""
    params = {"cid": campaign.id, "db": campaign.database_id, "seg": campaign.segment_id}
    if campaign.status == CampaignStatus.ACTIVE:
        return (
            "FROM campaign_member m JOIN profile p ON p.id = m.profile_id "
            "WHERE m.campaign_id = :cid AND m.left_at IS NULL",
            params,
        )
    return (
        "FROM segment_member sm JOIN profile p ON p.id = sm.profile_id "
        f"WHERE sm.segment_id = :seg AND sm.left_at IS NULL AND {r1_scope_sql('p')}",
        params,
    )


def _check_strata_cap(session: Session, campaign: Campaign, fields: list[ProfileField]) -> None:
    if not fields:
        return
    source, params = _audience_source(campaign)
    count = session.scalar(
        sa.text(f"SELECT COUNT(*) FROM (SELECT DISTINCT {strata.key_sql(fields)} AS k {source}) x"),
        params,
    )
    if count and count > MAX_STRATA:
        raise ValidationError(
            f"strata {', '.join(f.name for f in fields)} split the audience into {count} "
            f"strata; at most {MAX_STRATA} are allowed: choose fewer or coarser fields"
        )


def _check_strata_cap_for_new(
    session: Session,
    database: ProfileDatabase,
    segment: Segment,
    fields: list[ProfileField],
) -> None:
    probe = Campaign(
        id=-1,
        name="",
        database_id=database.id,
        segment_id=segment.id,
        seed=0,
        status=CampaignStatus.DRAFT,
    )
    _check_strata_cap(session, probe, fields)


# --------------------------------------------------------------------------- create


@audit.operation("campaign.create", "campaign")
def create_campaign(
    session: Session,
    actor: Actor,
    name: str,
    database: ProfileDatabase,
    segment: Segment,
    *,
    lcg_percent: Any = None,
    lcg_limit: Any = None,
    lcg_strata: Any = (),
    seed: int | None = None,
) -> Campaign:
    """A draft campaign on `database` and `segment` (both fixed). LCG on when a percent is given."""
    actor.require_write("create a campaign")
    name = check_name("campaign", name)
    if session.scalar(sa.select(Campaign.id).where(Campaign.name == name)) is not None:
        raise ValidationError(f"campaign {name!r} already exists; pick another name")
    if database is None or database.id is None:
        raise ValidationError("a campaign needs a profile database")
    if segment is None or segment.id is None:
        raise ValidationError("a campaign needs a segment")
    if segment.kind == SegmentKind.DYNAMIC and segment.database_id not in (None, database.id):
        raise ValidationError(
            f"segment {segment.name!r} selects profiles of another database; "
            f"the campaign's audience would be empty (R1)"
        )
    bp = lcg.parse_percent(lcg_percent) if lcg_percent is not None else 0
    limit = lcg.parse_limit(lcg_limit)
    fields = _strata_fields(session, database.id, list(lcg_strata or []))
    if bp == 0 and (limit is not None or fields):
        raise ValidationError("an LCG limit or strata need an LCG percent")
    if seed is None:
        seed = secrets.randbelow(2**63)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValidationError("seed must be an integer with 0 <= seed < 2**63")
    _check_strata_cap_for_new(session, database, segment, fields)
    campaign = Campaign(
        name=name,
        database_id=database.id,
        segment_id=segment.id,
        seed=seed,
        lcg_enabled=bp > 0,
        lcg_percent_bp=bp,
        lcg_limit=limit,
        lcg_strata=[f.name for f in fields],
        created_by=actor.user,
        created_at=utcnow(),
    )
    session.add(campaign)
    session.flush()
    audit.record(
        session,
        actor,
        "campaign.create",
        "campaign",
        campaign.id,
        name,
        database=database.name,
        segment=segment.name,
        lcg_percent=lcg.format_percent(bp) if bp else None,
        lcg_limit=limit,
        lcg_strata=campaign.lcg_strata,
    )
    return campaign


# --------------------------------------------------------------------------- activate


@audit.operation("campaign.activate", "campaign")
def activate(
    session: Session, actor: Actor, campaign: Campaign, *, expected_version: int | None = None
) -> AudienceBuild:
    """R2a/R3: draft -> active; queues the activation build (the initial distribution)."""
    actor.require_write("activate a campaign")
    campaign, read = _fresh(session, campaign)
    check_can_activate(campaign)
    version = _check_version(campaign, read, expected_version)
    fields = _strata_fields(session, campaign.database_id, campaign.lcg_strata)
    _check_strata_cap(session, campaign, fields)
    values: dict[str, Any] = {"status": CampaignStatus.ACTIVE, "activated_at": utcnow()}
    if campaign.lcg_enabled:
        values["lcg_cohort"] = campaign.lcg_cohort + 1  # R9: everyone at activation
    _bump(session, campaign, version, **values)
    _take_snapshot(session, campaign)
    build = builds.queue_build(session, campaign, BuildReason.ACTIVATION, actor)
    audit.record(
        session,
        actor,
        "campaign.activate",
        "campaign",
        campaign.id,
        campaign.name,
        build=build.id,
    )
    return build


def _take_snapshot(session: Session, campaign: Campaign) -> None:
    """R4a: activation is a snapshot of the segment. The activation time and the segment
    bound (the largest segment_member id, kept as the campaign's watermark) are taken
    while no membership change of the segment can commit: PostgreSQL locks the segment
    row (store.segments locks it FOR UPDATE), SQLite already holds the write lock (the
    version bump above). Rows up to the bound that are open at the activation time are
    the audience at activation; later rows are R2c newcomers for incremental builds."""
    session.execute(
        sa.select(Segment.id).where(Segment.id == campaign.segment_id).with_for_update(read=True)
    )
    bound = session.scalar(sa.text("SELECT COALESCE(MAX(id), 0) FROM segment_member")) or 0
    session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(activated_at=utcnow(), segment_watermark=int(bound))
        .execution_options(synchronize_session=False)
    )
    session.refresh(campaign)


# --------------------------------------------------------------------------- LCG edits


@audit.operation("campaign.lcg_edit", "campaign")
def edit_lcg(
    session: Session,
    actor: Actor,
    campaign: Campaign,
    *,
    percent: Any = UNCHANGED,
    limit: Any = UNCHANGED,
    strata: Any = UNCHANGED,
    enabled: Any = UNCHANGED,
    expected_version: int | None = None,
) -> AudienceBuild | None:
    """Change LCG settings. Active campaigns get a build: enable -> R5 (new cohort, only
    newcomers can become control), disable -> R7 (lcg_disable), other edits -> R6
    recalculation (with the LCG off it only re-keys strata). Drafts just store settings."""
    actor.require_write("change LCG settings")
    campaign, read = _fresh(session, campaign)
    check_can_change_lcg(campaign)
    new_bp = campaign.lcg_percent_bp if percent is UNCHANGED else lcg.parse_percent(percent)
    new_limit = campaign.lcg_limit if limit is UNCHANGED else lcg.parse_limit(limit)
    if strata is UNCHANGED:
        new_strata = list(campaign.lcg_strata or [])
        fields = None
    else:
        fields = _strata_fields(session, campaign.database_id, strata)
        new_strata = [f.name for f in fields]
    if enabled is UNCHANGED:
        new_enabled = campaign.lcg_enabled
    elif isinstance(enabled, bool):
        new_enabled = enabled
    else:
        raise ValidationError(f"enabled must be true or false, not {enabled!r}")
    if new_enabled and new_bp == 0:
        raise ValidationError("set an LCG percent to enable the LCG")
    changes = {
        k: v
        for k, v, old in (
            ("lcg_percent_bp", new_bp, campaign.lcg_percent_bp),
            ("lcg_limit", new_limit, campaign.lcg_limit),
            ("lcg_strata", new_strata, list(campaign.lcg_strata or [])),
            ("lcg_enabled", new_enabled, campaign.lcg_enabled),
        )
        if v != old
    }
    if not changes:
        raise ValidationError(f"campaign {campaign.name!r}: nothing to change")
    version = _check_version(campaign, read, expected_version)
    if fields is not None and "lcg_strata" in changes:
        _check_strata_cap(session, campaign, fields)
    active = campaign.status == CampaignStatus.ACTIVE
    toggled = "lcg_enabled" in changes
    reason = None
    values: dict[str, Any] = dict(changes)
    if active and toggled:
        # R5: enabling starts a new cohort; R7: disabling ends the current one.
        values["lcg_cohort"] = campaign.lcg_cohort + 1
        values["cohort_size"] = 0
        reason = BuildReason.RECALCULATION if new_enabled else BuildReason.LCG_DISABLE
    elif active:
        reason = BuildReason.RECALCULATION  # R6 (with the LCG off it only re-keys the strata)
    before = {
        "percent": lcg.format_percent(campaign.lcg_percent_bp),
        "limit": campaign.lcg_limit,
        "strata": list(campaign.lcg_strata or []),
        "enabled": campaign.lcg_enabled,
    }
    _bump(session, campaign, version, **values)
    if active and toggled:
        session.execute(
            sa.update(CampaignStratum)
            .where(CampaignStratum.campaign_id == campaign.id)
            .values(cohort=0)
        )
    build = builds.queue_build(session, campaign, reason, actor) if reason else None
    audit.record(
        session,
        actor,
        "campaign.lcg_edit",
        "campaign",
        campaign.id,
        campaign.name,
        before=before,
        after={
            "percent": lcg.format_percent(new_bp),
            "limit": new_limit,
            "strata": new_strata,
            "enabled": new_enabled,
        },
        build=build.id if build else None,
    )
    return build


def set_lcg_enabled(
    session: Session,
    actor: Actor,
    campaign: Campaign,
    enabled: bool,
    *,
    expected_version: int | None = None,
) -> AudienceBuild | None:
    """Enable (R5) or disable (R7) the LCG."""
    return edit_lcg(session, actor, campaign, enabled=enabled, expected_version=expected_version)


# --------------------------------------------------------------------------- complete


@audit.operation("campaign.complete", "campaign")
def complete(
    session: Session, actor: Actor, campaign: Campaign, *, expected_version: int | None = None
) -> None:
    """R8: close every membership (left_campaign), stop mailings, cancel builds; terminal."""
    actor.require_write("complete a campaign")
    campaign, read = _fresh(session, campaign)
    check_can_complete(campaign)
    version = _check_version(campaign, read, expected_version)
    # Lock the open builds first (PostgreSQL): a running build's chunk holds its build
    # row, so this waits for the chunk to commit, and closing the memberships below then
    # also closes that chunk's members. Locks only: a conflict below still changes nothing.
    open_builds = list(
        session.scalars(
            sa.select(AudienceBuild)
            .where(
                AudienceBuild.campaign_id == campaign.id,
                AudienceBuild.status.in_(OPEN_BUILD_STATUSES),
            )
            .with_for_update()
        )
    )
    now = utcnow()
    members = campaign.members
    _bump(
        session,
        campaign,
        version,
        status=CampaignStatus.COMPLETED,
        completed_at=now,
        warnings=[],  # R8: no live warnings; each build keeps its own (history)
        members=0,
        test_count=0,
        control_count=0,
        cohort_size=0,
    )
    for build in open_builds:
        builds.end_build(session, build, BuildStatus.CANCELLED, "campaign completed (R8)", at=now)
    session.execute(
        sa.text(
            "UPDATE campaign_member SET left_at = :now, left_by = :by "
            "WHERE campaign_id = :cid AND left_at IS NULL"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
        {"now": now, "by": actor.user, "cid": campaign.id},
    )
    session.execute(
        sa.update(CampaignStratum)
        .where(CampaignStratum.campaign_id == campaign.id)
        .values(members=0, cohort=0, control=0, quota=0)
    )
    stopped = session.execute(
        sa.update(Mailing)
        .where(Mailing.campaign_id == campaign.id, Mailing.status == MailingStatus.ACTIVE)
        .values(status=MailingStatus.STOPPED, version=Mailing.version + 1)
    ).rowcount
    audit.record(
        session,
        actor,
        "campaign.complete",
        "campaign",
        campaign.id,
        campaign.name,
        members_closed=members,
        mailings_stopped=stopped,
        builds_cancelled=[b.id for b in open_builds],
    )
    session.flush()


# --------------------------------------------------------------------------- preview


def preview_lcg(
    session: Session,
    campaign: Campaign,
    *,
    percent: Any,
    limit: Any = None,
    strata: Any = (),
) -> LcgPreview:
    """What `edit_lcg` (with the LCG enabled) would aim for; writes nothing.

    Same validation as edit_lcg. For an active campaign with the LCG on, the cohort is the
    current one; with the LCG off, enabling starts an empty cohort (R5: only newcomers can
    become control), so the target is 0 until newcomers arrive. A draft previews its
    pending audience as if activated now.
    """
    campaign, _read = _fresh(session, campaign)
    bp = lcg.parse_percent(percent)
    lim = lcg.parse_limit(limit)
    fields = _strata_fields(session, campaign.database_id, strata)
    names = [f.name for f in fields]
    _check_strata_cap(session, campaign, fields)
    source, params = _audience_source(campaign)
    key = _key_sql(fields)
    if campaign.status == CampaignStatus.ACTIVE:
        cohort_expr = "CASE WHEN m.cohort = :cur THEN 1 ELSE 0 END" if campaign.lcg_enabled else "0"
        control_expr = "CASE WHEN m.\"group\" = 'control' THEN 1 ELSE 0 END"
    else:
        cohort_expr, control_expr = "1", "0"
    rows = session.execute(
        sa.text(
            f"SELECT {key} AS k, COUNT(*), SUM({cohort_expr}), SUM({control_expr}) "
            f"{source} GROUP BY 1"
        ),
        {**params, "cur": campaign.lcg_cohort},
    ).all()
    members = {r[0]: int(r[1]) for r in rows}
    sizes = {r[0]: int(r[2] or 0) for r in rows if (r[2] or 0) > 0}
    controls = {r[0]: int(r[3] or 0) for r in rows}
    n = sum(sizes.values())
    total = lcg.target_total(bp, n, lim)
    quotas = lcg.apportion(total, sizes)
    labels = {k: _label(k, names) for k in members}
    surplus = sum(max(0, controls.get(k, 0) - quotas.get(k, 0)) for k in members)
    after = {k: min(controls.get(k, 0), quotas.get(k, 0)) for k in members}
    deficit = sum(max(0, quotas.get(k, 0) - after[k]) for k in members)
    preview = LcgPreview(
        percent_bp=bp,
        limit=lim,
        strata=names,
        cohort_size=n,
        unlimited_target=lcg.unlimited_target(bp, n),
        target=total,
        limit_binds=lcg.limit_binds(bp, n, lim),
        warnings=lcg.stratification_warnings(bp, lim, sizes, after, labels),
        surplus=surplus,
        deficit=deficit,
    )
    for k in sorted(members):
        preview.rows.append(
            PreviewRow(
                key=k,
                values=_decode(k, names),
                label=labels[k],
                members=members[k],
                cohort=sizes.get(k, 0),
                control=controls.get(k, 0),
                quota=quotas.get(k, 0),
                ideal=float(lcg.ideal_share(total, sizes.get(k, 0), n)),
            )
        )
    if campaign.status == CampaignStatus.ACTIVE and not campaign.lcg_enabled:
        preview.note = (
            "enabling starts a new cohort: current members stay in test and only "
            "newcomers can be placed into control (R5)"
        )
    elif campaign.status == CampaignStatus.ACTIVE and deficit:
        preview.note = "the deficit is filled only by newcomers as they arrive (R6)"
    return preview


def _key_sql(fields: list[ProfileField]) -> str:
    return strata_module.key_sql(fields)


def _label(key: str, names: list[str]) -> str:
    return strata_module.label(key, names)


def _decode(key: str, names: list[str]) -> dict[str, str | None]:
    return strata_module.decode(key, names)


strata_module = strata
