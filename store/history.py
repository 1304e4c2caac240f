"""The profile card: fields, campaign memberships and the complete history (R12).

Most events are *derived* from membership intervals instead of being stored twice
(store.models docstring):

* `segment_member` rows give `entered_segment` (entered_at, entered_by) and
  `left_segment` (left_at, left_by);
* `campaign_member` rows give `entered_campaign` (joined_at, joined_group, joined build,
  joined_by) and `left_campaign` (left_at, the group held when leaving, left build,
  left_by);
* `profile_event` rows add what intervals cannot carry: `moved_to_test` (R6, R7), the
  `left_campaign` of a profile that was only in a draft's pending audience (R3), and
  `entered_gcg` / `left_gcg` (R11a) (store.states.ProfileEventKind);
* `delivery` rows give `delivered` (with the mailing's name; a trigger mailing's also
  with the event that fired it);
* `suppression` rows give `suppressed` (R11b: a trigger mailing sent nothing; the mailing,
  the event and the reason).

Events are ordered by time; equal times fall back to a fixed order of kinds (a profile
enters a segment before the campaign built from it, and leaves the segment before the
campaign, R4), then by campaign or segment name, then by the row that produced them, so
the same history always reads the same on every backend. The kinds are
store.states.CardEventKind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from store.models import (
    Campaign,
    CampaignMember,
    Delivery,
    Mailing,
    ProfileDatabase,
    ProfileEvent,
    Segment,
    SegmentMember,
    Suppression,
    TriggerEvent,
)
from store.profiles import database_fields, get_database, get_profile
from store.states import CardEventKind

# Order of kinds for events with the same timestamp (cause before effect).
# GCG events (R11a) have no cause or effect on the same card at the same time: last.
KIND_ORDER = {
    CardEventKind.ENTERED_SEGMENT: 0,
    CardEventKind.ENTERED_CAMPAIGN: 1,
    CardEventKind.MOVED_TO_TEST: 2,
    CardEventKind.DELIVERED: 3,
    CardEventKind.SUPPRESSED: 3,  # R11b outcomes of one event keep the event's order (see _key)
    CardEventKind.LEFT_SEGMENT: 4,
    CardEventKind.LEFT_CAMPAIGN: 5,
}


@dataclass(frozen=True)
class MembershipRow:
    """One interval of the profile's membership in a campaign audience."""

    campaign: str
    group: str  # current group (the group held when the interval closed, if it did)
    joined_at: datetime
    left_at: datetime | None
    source: str  # "activation" | "segment" | "expansion"
    joined_group: str = ""
    campaign_status: str = ""

    @property
    def open(self) -> bool:
        return self.left_at is None


@dataclass(frozen=True)
class CardEvent:
    at: datetime
    kind: CardEventKind
    campaign: str | None = None
    segment: str | None = None
    group: str | None = None
    build: int | None = None  # id of the audience build that caused it
    actor: str | None = None
    mailing: str | None = None  # for `delivered` and `suppressed`
    reason: str | None = None  # for `suppressed`: a SuppressionReason (R11b)
    event: str | None = None  # the event that fired a trigger mailing (R11b)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "campaign": self.campaign,
            "segment": self.segment,
            "group": self.group,
            "build": self.build,
            "actor": self.actor,
            "mailing": self.mailing,
            "reason": self.reason,
            "event": self.event,
        }


@dataclass(frozen=True)
class ProfileCard:
    external_id: str
    database: str
    profile_id: int
    in_gcg: bool
    fields: dict[str, str | int | float | date | None]
    memberships: list[MembershipRow] = field(default_factory=list)
    events: list[CardEvent] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)  # segments it is in right now


def profile_card(
    session: Session, database: ProfileDatabase | str, external_id: str
) -> ProfileCard:
    """The card of one profile; NotFoundError when the database has no such profile."""
    if isinstance(database, str):
        database = get_database(session, database)
    profile = get_profile(session, database, external_id)
    fields = {f.name: getattr(profile, f.slot) for f in database_fields(session, database.id)}
    memberships, campaign_events = _campaign_history(session, profile.id)
    segment_events, current_segments = _segment_history(session, profile.id)
    events = (
        segment_events
        + campaign_events
        + _logged_events(session, profile.id)
        + _deliveries(session, profile.id)
        + _suppressions(session, profile.id)
    )
    events.sort(key=lambda pair: pair[0])
    return ProfileCard(
        external_id=profile.external_id,
        database=database.name,
        profile_id=profile.id,
        in_gcg=bool(profile.in_gcg),
        fields=fields,
        memberships=memberships,
        events=[event for _key, event in events],
        segments=current_segments,
    )


# Each source yields (sort key, event); the key is (at, kind rank, name, source, row id).
_Keyed = tuple[tuple[Any, ...], CardEvent]


def _key(event: CardEvent, source: int, row_id: int) -> tuple[Any, ...]:
    name = event.campaign or event.segment or event.mailing or ""
    return (event.at, KIND_ORDER.get(event.kind, 9), name, source, row_id)


def _segment_history(session: Session, profile_id: int) -> tuple[list[_Keyed], list[str]]:
    rows = session.execute(
        sa.select(SegmentMember, Segment.name)
        .join(Segment, Segment.id == SegmentMember.segment_id)
        .where(SegmentMember.profile_id == profile_id)
    ).all()
    events: list[_Keyed] = []
    current: set[str] = set()
    for member, name in rows:
        entered = CardEvent(
            at=member.entered_at,
            kind=CardEventKind.ENTERED_SEGMENT,
            segment=name,
            actor=member.entered_by,
        )
        events.append((_key(entered, 0, member.id), entered))
        if member.left_at is None:
            current.add(name)
        else:
            left = CardEvent(
                at=member.left_at,
                kind=CardEventKind.LEFT_SEGMENT,
                segment=name,
                actor=member.left_by,
            )
            events.append((_key(left, 0, member.id), left))
    return events, sorted(current)


def _campaign_history(
    session: Session, profile_id: int
) -> tuple[list[MembershipRow], list[_Keyed]]:
    rows = session.execute(
        sa.select(CampaignMember, Campaign.name, Campaign.status)
        .join(Campaign, Campaign.id == CampaignMember.campaign_id)
        .where(CampaignMember.profile_id == profile_id)
    ).all()
    rows.sort(key=lambda r: (r[0].joined_at, r[1], r[0].id))
    memberships: list[MembershipRow] = []
    events: list[_Keyed] = []
    for member, name, status in rows:
        memberships.append(
            MembershipRow(
                campaign=name,
                group=member.group,
                joined_at=member.joined_at,
                left_at=member.left_at,
                source=member.source,
                joined_group=member.joined_group,
                campaign_status=status,
            )
        )
        entered = CardEvent(
            at=member.joined_at,
            kind=CardEventKind.ENTERED_CAMPAIGN,
            campaign=name,
            group=member.joined_group,
            build=member.joined_build_id,
            actor=member.joined_by,
        )
        events.append((_key(entered, 1, member.id), entered))
        if member.left_at is not None:
            left = CardEvent(
                at=member.left_at,
                kind=CardEventKind.LEFT_CAMPAIGN,
                campaign=name,
                group=member.group,
                build=member.left_build_id,
                actor=member.left_by,
            )
            events.append((_key(left, 1, member.id), left))
    return memberships, events


def _logged_events(session: Session, profile_id: int) -> list[_Keyed]:
    rows = session.execute(
        sa.select(ProfileEvent, Campaign.name, Segment.name)
        .outerjoin(Campaign, Campaign.id == ProfileEvent.campaign_id)
        .outerjoin(Segment, Segment.id == ProfileEvent.segment_id)
        .where(ProfileEvent.profile_id == profile_id)
    ).all()
    events: list[_Keyed] = []
    for row, campaign, segment in rows:
        event = CardEvent(
            at=row.at,
            kind=CardEventKind(row.kind),
            campaign=campaign,
            segment=segment,
            group=row.group,
            build=row.build_id,
            actor=row.actor,
        )
        events.append((_key(event, 2, row.id), event))
    return events


def _trigger_key(event: CardEvent, event_id: int, mailing_id: int) -> tuple[Any, ...]:
    """R11b outcomes: in the order of their events, then of the mailings they fired."""
    return (event.at, KIND_ORDER[event.kind], "", 4, event_id, mailing_id)


def _deliveries(session: Session, profile_id: int) -> list[_Keyed]:
    rows = session.execute(
        sa.select(Delivery, Campaign.name, Mailing.name, TriggerEvent.event)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .join(Mailing, Mailing.id == Delivery.mailing_id)
        .outerjoin(TriggerEvent, TriggerEvent.id == Delivery.event_id)
        .where(Delivery.profile_id == profile_id)
    ).all()
    events: list[_Keyed] = []
    for delivery, campaign, mailing, trigger in rows:
        event = CardEvent(
            at=delivery.sent_at,
            kind=CardEventKind.DELIVERED,
            campaign=campaign,
            mailing=mailing,
            event=trigger,
        )
        if delivery.event_id is None:
            events.append((_key(event, 3, delivery.id), event))
        else:
            events.append((_trigger_key(event, delivery.event_id, delivery.mailing_id), event))
    return events


def _suppressions(session: Session, profile_id: int) -> list[_Keyed]:
    rows = session.execute(
        sa.select(Suppression, Campaign.name, Mailing.name, TriggerEvent.event)
        .join(Campaign, Campaign.id == Suppression.campaign_id)
        .join(Mailing, Mailing.id == Suppression.mailing_id)
        .join(TriggerEvent, TriggerEvent.id == Suppression.event_id)
        .where(Suppression.profile_id == profile_id)
    ).all()
    events: list[_Keyed] = []
    for row, campaign, mailing, trigger in rows:
        event = CardEvent(
            at=row.at,
            kind=CardEventKind.SUPPRESSED,
            campaign=campaign,
            mailing=mailing,
            reason=row.reason,
            event=trigger,
        )
        events.append((_trigger_key(event, row.event_id, row.mailing_id), event))
    return events
