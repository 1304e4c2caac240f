"""Why is this profile where it is in this campaign (issue 13 §2)?

`explain(session, database, external_id, campaign)` answers with a state, a group and one
reason code from `Reason`, plus figures in `detail`. It is computed from the same data
and the same rules as the audience engine, never from a second implementation of them:

* a current or former member's group is the stored one (campaign_member), and the reason
  reads the stored facts that decided it: its LCG cohort (R5, R9), its former membership
  (R4), `moved_to_test` events (R6, R7), the stratum counters and quotas the last build
  wrote (campaign_stratum), the limit (R10);
* who may be in the audience at all is `store.audience.r1_scope_sql` (R1, GCG), the SQL
  the builds use;
* a draft's answer ("what activation would decide now") takes its quotas from
  `store.campaigns.preview_lcg` (the LCG form's preview: `lcg.target_total` and
  `lcg.apportion` over the pending audience's strata, as the activation build's plan
  does) and the profile's rank in its stratum by the R9 order, (assignment hash,
  external id), computed with the builds' SQL (`store.hashing.assignment_sql` of the
  campaign's hash version). The activation build puts exactly the `quota` smallest of
  that order into control.

tests/test_explain.py checks, on random workspaces and on both backends, that explain's
group equals the stored group for every profile, and that a draft's prediction equals
what activation then stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store import hashing, lcg, strata
from store.audience import r1_scope_sql
from store.campaigns import get_campaign, preview_lcg
from store.locations import is_postgres
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    CampaignStratum,
    Profile,
    ProfileDatabase,
    ProfileEvent,
    SegmentMember,
)
from store.profiles import database_fields, get_database, get_profile
from store.states import CampaignStatus, Group, ProfileEventKind


class State(StrEnum):
    MEMBER = "member"
    FORMER_MEMBER = "former_member"
    NOT_MEMBER = "not_member"
    PENDING = "pending"  # in the audience, group not decided yet (draft, or a build to come)


class Reason(StrEnum):
    """Every answer explain can give (documented in docs/cli.md, `profile explain`)."""

    CONTROL_WITHIN_QUOTA = "control_within_quota"  # R9: rank in stratum <= quota
    TEST_ABOVE_QUOTA = "test_above_quota"  # R9: its stratum's control was full
    TEST_LCG_OFF = "test_lcg_off"  # the LCG was off when its group was decided
    TEST_JOINED_BEFORE_LCG_ENABLED = "test_joined_before_lcg_enabled"  # R5
    TEST_LIMIT_REACHED = "test_limit_reached"  # R10: the limit caps control
    TEST_RETURNED_TO_FORMER_GROUP = "test_returned_to_former_group"  # R4
    # R4: a returning control member goes to test: the LCG is off, a new cohort, or no room
    TEST_RETURNED_CONTROL_NOT_KEPT = "test_returned_control_not_kept"
    MOVED_TO_TEST = "moved_to_test"  # R6 surplus / R7 LCG removed
    EXCLUDED_GCG = "excluded_gcg"  # R1, R11a
    OTHER_DATABASE = "other_database"  # R1
    NOT_IN_SEGMENT = "not_in_segment"
    LEFT_SEGMENT = "left_segment"  # R4 (R3 for a draft)
    PENDING_BUILD = "pending_build"  # R2c: in the segment, the incremental build is to come
    CAMPAIGN_DRAFT = "campaign_draft"  # R3: what activation would decide now
    CAMPAIGN_COMPLETED = "campaign_completed"  # R8


@dataclass(frozen=True)
class Explanation:
    external_id: str
    campaign: str
    state: State
    group: str | None
    reason: Reason
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "campaign": self.campaign,
            "state": str(self.state),
            "group": self.group,
            "reason": str(self.reason),
            "detail": dict(self.detail),
        }

    @property
    def summary(self) -> str:
        """One line for the console: 'control_within_quota: rank 3 ≤ quota 4 in region=SPb'."""
        d = self.detail
        text = {
            Reason.CONTROL_WITHIN_QUOTA: "rank {rank} ≤ quota {quota} in {stratum}",
            Reason.TEST_ABOVE_QUOTA: "rank {rank} > quota {quota} in {stratum}",
            Reason.TEST_LIMIT_REACHED: "control at its limit of {limit}",
            Reason.TEST_RETURNED_TO_FORMER_GROUP: "re-entered with its former group {former_group}",
            Reason.TEST_RETURNED_CONTROL_NOT_KEPT: "re-entered; its former control not kept ({why})",
            Reason.MOVED_TO_TEST: "moved to test at {at} (build #{build})",
            Reason.LEFT_SEGMENT: "left segment {segment} at {at}",
            Reason.PENDING_BUILD: "waiting for audience build #{build}",
            Reason.CAMPAIGN_DRAFT: "activation now: {group}",
        }.get(self.reason, "")
        try:
            return (
                f"{self.reason}: {text.format(group=self.group, **d)}" if text else str(self.reason)
            )
        except (KeyError, IndexError):
            return str(self.reason)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def explain(
    session: Session, database: ProfileDatabase | str, external_id: str, campaign_name: str
) -> Explanation:
    """The explanation of one profile in one campaign. NotFoundError for an unknown
    database, profile or campaign."""
    if isinstance(database, str):
        database = get_database(session, database)
    profile = get_profile(session, database, external_id)
    campaign = get_campaign(session, campaign_name)
    ctx = _Facts(session, campaign, profile)

    def answer(state: State, group: str | None, reason: Reason, **detail: Any) -> Explanation:
        return Explanation(profile.external_id, campaign.name, state, group, reason, detail)

    if campaign.database_id != profile.database_id:
        other = session.get(ProfileDatabase, campaign.database_id)
        return answer(State.NOT_MEMBER, None, Reason.OTHER_DATABASE, campaign_database=other.name)
    latest = ctx.latest_membership()
    if campaign.status == CampaignStatus.COMPLETED:
        if latest is None:
            return answer(
                State.NOT_MEMBER, None, Reason.CAMPAIGN_COMPLETED, at=_iso(campaign.completed_at)
            )
        return answer(
            State.FORMER_MEMBER,
            latest.group,
            Reason.CAMPAIGN_COMPLETED,
            at=_iso(campaign.completed_at),
            joined_at=_iso(latest.joined_at),
        )
    if latest is not None and latest.left_at is None:
        return _member(ctx, latest, answer)
    # Not a current member: R1 scope, then the segment.
    if not ctx.in_scope():
        return answer(State.NOT_MEMBER, None, Reason.EXCLUDED_GCG, in_gcg=True)
    segment_row = ctx.open_segment_membership()
    if segment_row is None:
        left = ctx.last_segment_exit()
        state = State.FORMER_MEMBER if latest is not None else State.NOT_MEMBER
        group = latest.group if latest is not None else None
        if left is not None:
            return answer(
                state, group, Reason.LEFT_SEGMENT, segment=ctx.segment_name(), at=_iso(left)
            )
        return answer(state, group, Reason.NOT_IN_SEGMENT, segment=ctx.segment_name())
    if campaign.status == CampaignStatus.DRAFT:
        return _draft(ctx, answer)
    build = ctx.pending_build()
    return answer(
        State.PENDING,
        None,
        Reason.PENDING_BUILD,
        build=build.id if build is not None else None,
        build_status=build.status if build is not None else None,
        entered_segment_at=_iso(segment_row.entered_at),
    )


class _Facts:
    """The stored facts about one (campaign, profile) pair."""

    def __init__(self, session: Session, campaign: Campaign, profile: Profile) -> None:
        self.s = session
        self.c = campaign
        self.p = profile

    def latest_membership(self, before: CampaignMember | None = None) -> CampaignMember | None:
        """The profile's newest membership of the campaign (older than `before`, if given)."""
        query = sa.select(CampaignMember).where(
            CampaignMember.campaign_id == self.c.id, CampaignMember.profile_id == self.p.id
        )
        if before is not None:
            query = query.where(CampaignMember.id < before.id)
        return self.s.scalar(query.order_by(CampaignMember.id.desc()).limit(1))

    def moved_to_test(self, member: CampaignMember) -> ProfileEvent | None:
        return self.s.scalar(
            sa.select(ProfileEvent)
            .where(
                ProfileEvent.profile_id == self.p.id,
                ProfileEvent.campaign_id == self.c.id,
                ProfileEvent.kind == ProfileEventKind.MOVED_TO_TEST,
                ProfileEvent.at >= member.joined_at,
            )
            .order_by(ProfileEvent.id.desc())
            .limit(1)
        )

    def in_scope(self) -> bool:
        """R1, with the SQL the builds use."""
        return bool(
            self.s.scalar(
                sa.text(f"SELECT 1 FROM profile p WHERE p.id = :pid AND {r1_scope_sql('p')}"),
                {"pid": self.p.id, "db": self.c.database_id, "cid": self.c.id},
            )
        )

    def open_segment_membership(self) -> SegmentMember | None:
        return self.s.scalar(
            sa.select(SegmentMember).where(
                SegmentMember.segment_id == self.c.segment_id,
                SegmentMember.profile_id == self.p.id,
                SegmentMember.left_at.is_(None),
            )
        )

    def last_segment_exit(self) -> Any:
        return self.s.scalar(
            sa.select(sa.func.max(SegmentMember.left_at)).where(
                SegmentMember.segment_id == self.c.segment_id,
                SegmentMember.profile_id == self.p.id,
            )
        )

    def segment_name(self) -> str:
        return self.s.scalar(
            sa.text("SELECT name FROM segment WHERE id = :id"), {"id": self.c.segment_id}
        )

    def pending_build(self) -> AudienceBuild | None:
        return self.s.scalar(
            sa.select(AudienceBuild)
            .where(
                AudienceBuild.campaign_id == self.c.id,
                AudienceBuild.status.in_(("queued", "running")),
            )
            .order_by(AudienceBuild.id)
            .limit(1)
        )

    def stratum(self, key: str) -> CampaignStratum | None:
        return self.s.get(CampaignStratum, (self.c.id, key))

    def member_rank(self, member: CampaignMember) -> int:
        """1 + open members of its stratum and cohort before it in the R9 order (hash;
        equal hashes, practically impossible, are not told apart here)."""
        cohort = "cohort = :cohort" if member.cohort is not None else "cohort IS NULL"
        return 1 + int(
            self.s.scalar(
                sa.text(
                    f"""SELECT COUNT(*) FROM campaign_member WHERE campaign_id = :cid
                        AND left_at IS NULL AND stratum_key = :k AND {cohort}
                        AND assignment_hash < :h"""
                ),
                {
                    "cid": self.c.id,
                    "k": member.stratum_key,
                    "cohort": member.cohort,
                    "h": member.assignment_hash,
                },
            )
            or 0
        )


def _stratum_label(campaign: Campaign, key: str) -> str:
    return strata.label(key, list(campaign.lcg_strata or []))


def _member(ctx: _Facts, m: CampaignMember, answer: Any) -> Explanation:
    c = ctx.c
    label = _stratum_label(c, m.stratum_key)
    if m.group == Group.CONTROL:
        row = ctx.stratum(m.stratum_key)
        return answer(
            State.MEMBER,
            "control",
            Reason.CONTROL_WITHIN_QUOTA,
            stratum=label,
            cohort=m.cohort,
            rank=ctx.member_rank(m),
            quota=row.quota if row is not None else 0,
            joined_at=_iso(m.joined_at),
        )
    moved = ctx.moved_to_test(m)
    if moved is not None:
        return answer(
            State.MEMBER,
            "test",
            Reason.MOVED_TO_TEST,
            at=_iso(moved.at),
            build=moved.build_id,
            rule="R7" if not c.lcg_enabled else "R6",
        )
    former = ctx.latest_membership(before=m)
    if former is not None and former.group == Group.TEST:
        return answer(
            State.MEMBER,
            "test",
            Reason.TEST_RETURNED_TO_FORMER_GROUP,
            former_group=former.group,
            joined_at=_iso(m.joined_at),
        )
    if former is not None:
        # R4: control comes back only while the LCG is on, in the same cohort, and while
        # the control group is below its limit (a hard maximum).
        if not c.lcg_enabled:
            why = "lcg_off"
        elif former.cohort != c.lcg_cohort:
            why = "new_cohort"
        else:
            why = "limit_reached"
        return answer(
            State.MEMBER,
            "test",
            Reason.TEST_RETURNED_CONTROL_NOT_KEPT,
            former_group=former.group,
            why=why,
            former_cohort=former.cohort,
            current_cohort=c.lcg_cohort,
            limit=c.lcg_limit,
            control=c.control_count,
            joined_at=_iso(m.joined_at),
        )
    if m.cohort is None or m.cohort != c.lcg_cohort or not c.lcg_enabled:
        if c.lcg_enabled:  # R5: only newcomers after the enable can join control
            return answer(
                State.MEMBER,
                "test",
                Reason.TEST_JOINED_BEFORE_LCG_ENABLED,
                joined_at=_iso(m.joined_at),
                cohort=m.cohort,
                current_cohort=c.lcg_cohort,
            )
        return answer(State.MEMBER, "test", Reason.TEST_LCG_OFF, joined_at=_iso(m.joined_at))
    row = ctx.stratum(m.stratum_key)
    quota = row.quota if row is not None else 0
    if lcg.limit_binds(c.lcg_percent_bp, c.cohort_size, c.lcg_limit):
        return answer(
            State.MEMBER,
            "test",
            Reason.TEST_LIMIT_REACHED,
            limit=c.lcg_limit,
            control=c.control_count,
            unlimited_target=lcg.unlimited_target(c.lcg_percent_bp, c.cohort_size),
            stratum=label,
            quota=quota,
        )
    return answer(
        State.MEMBER,
        "test",
        Reason.TEST_ABOVE_QUOTA,
        stratum=label,
        cohort=m.cohort,
        rank=ctx.member_rank(m),
        quota=quota,
        control=row.control if row is not None else 0,
    )


def _draft(ctx: _Facts, answer: Any) -> Explanation:
    """R3: what activation would decide now, from the LCG form's preview (quotas) and the
    profile's rank in its stratum of the pending audience by (hash, external id)."""
    c = ctx.c
    if not c.lcg_enabled:
        return answer(State.PENDING, "test", Reason.CAMPAIGN_DRAFT, lcg="off")
    preview = preview_lcg(
        ctx.s,
        c,
        percent=lcg.format_percent(c.lcg_percent_bp),
        limit=c.lcg_limit,
        strata=list(c.lcg_strata or []),
    )
    names = list(c.lcg_strata or [])
    by_name = {f.name: f for f in database_fields(ctx.s, c.database_id)}
    key_sql = strata.key_sql([by_name[n] for n in names if n in by_name])
    pg = is_postgres(ctx.s)
    ext = 'q.ext COLLATE "C"' if pg else "q.ext"
    mine = 'CAST(:ext AS TEXT) COLLATE "C"' if pg else ":ext"
    assignment_hash = hashing.assignment_sql(c.hash_version, c.seed)
    key, h = ctx.s.execute(
        sa.text(f"SELECT {key_sql}, {assignment_hash} FROM profile p WHERE p.id = :pid"),
        {"pid": ctx.p.id},
    ).one()
    before = ctx.s.scalar(
        sa.text(
            f"""SELECT COUNT(*) FROM (
                    SELECT p.external_id AS ext, {assignment_hash} AS h
                    FROM segment_member sm JOIN profile p ON p.id = sm.profile_id
                    WHERE sm.segment_id = :seg AND sm.left_at IS NULL AND {r1_scope_sql("p")}
                      AND {key_sql} = :k) q
                WHERE q.h < :h OR (q.h = :h AND {ext} < {mine})"""
        ),
        {
            "seg": c.segment_id,
            "db": c.database_id,
            "cid": c.id,
            "k": key,
            "h": int(h),
            "ext": ctx.p.external_id,
        },
    )
    rank = 1 + int(before or 0)
    row = next((r for r in preview.rows if r.key == key), None)
    quota = row.quota if row is not None else 0
    return answer(
        State.PENDING,
        "control" if rank <= quota else "test",
        Reason.CAMPAIGN_DRAFT,
        stratum=strata.label(key, names),
        rank=rank,
        quota=quota,
        stratum_size=row.cohort if row is not None else 0,
        target=preview.target,
        limit_binds=preview.limit_binds,
    )


def campaigns_of_database(session: Session, database: ProfileDatabase | str) -> list[str]:
    """Names of the database's campaigns (the profile card's 'explain in' list)."""
    if isinstance(database, str):
        database = get_database(session, database)
    return list(
        session.scalars(
            sa.select(Campaign.name)
            .where(Campaign.database_id == database.id)
            .order_by(Campaign.name)
        )
    )


@dataclass(frozen=True)
class CardExplanations:
    """What the profile card shows next to its memberships (issue 13 §2): the explanation
    in every campaign it has been a member of, the database's campaigns to choose from,
    and the explanation in the chosen one (if any)."""

    by_campaign: dict[str, Explanation]
    campaigns: list[str]
    chosen: Explanation | None


def card_explanations(
    session: Session,
    database: str,
    external_id: str,
    membership_campaigns: list[str],
    chosen: str | None = None,
) -> CardExplanations:
    by_campaign = {
        name: explain(session, database, external_id, name)
        for name in dict.fromkeys(membership_campaigns)
    }
    names = campaigns_of_database(session, database)
    picked = None
    if chosen is not None and chosen in names:
        picked = by_campaign.get(chosen) or explain(session, database, external_id, chosen)
    return CardExplanations(by_campaign, names, picked)
