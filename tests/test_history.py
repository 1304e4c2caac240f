"""The profile card (R12): fields, memberships and the complete, time-ordered history.

Every test runs on a real SQLite file and a real PostgreSQL schema (`engine` fixture).
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from store import history, profiles, segments
from store.db import transaction
from store.errors import NotFoundError
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    Delivery,
    Mailing,
    MailingRun,
    Profile,
    ProfileEvent,
    utcnow,
)

FIELDS = [("region", "text"), ("tier", "int"), ("ltv", "float"), ("signup", "date")]


def make_database(engine, actor, n=4):
    with transaction(engine) as session:
        database = profiles.create_database(session, actor, "retail", FIELDS)
        slots = {f.name: f.slot for f in profiles.database_fields(session, database.id)}
        for i in range(n):
            session.add(
                Profile(
                    database_id=database.id,
                    external_id=f"P{i}",
                    in_gcg=(i == 3),
                    **{
                        slots["region"]: "Moscow" if i % 2 == 0 else "Kazan",
                        slots["tier"]: i + 1,
                        slots["ltv"]: 1.5 * i,
                        slots["signup"]: date(2024, 2, 1 + i),
                    },
                )
            )
    return database


def profile_id(engine, external_id):
    with Session(engine) as session:
        return session.scalar(sa.select(Profile.id).where(Profile.external_id == external_id))


def card(engine, external_id, database="retail"):
    with Session(engine) as session:
        return history.profile_card(session, database, external_id)


def kinds(card_):
    return [(e.kind, e.segment or e.campaign) for e in card_.events]


def test_card_shows_typed_fields_and_gcg(engine, operator):
    make_database(engine, operator)
    p1 = card(engine, "P1")
    assert p1.fields == {"region": "Kazan", "tier": 2, "ltv": 1.5, "signup": date(2024, 2, 2)}
    assert list(p1.fields) == ["region", "tier", "ltv", "signup"]  # declared order
    assert (p1.external_id, p1.database, p1.in_gcg) == ("P1", "retail", False)
    assert card(engine, "P3").in_gcg is True
    assert p1.events == [] and p1.memberships == []


def test_unknown_profile_or_database_is_not_found(engine, operator):
    make_database(engine, operator)
    with pytest.raises(NotFoundError, match="'P99'.*'retail'"):
        card(engine, "P99")
    with pytest.raises(NotFoundError):
        card(engine, "P1", database="nope")


def test_card_shows_every_segment_event_of_remove_and_readd(engine, operator):
    """R3/R12: a profile removed and added back shows each segment event, in order."""
    make_database(engine, operator)
    pid = profile_id(engine, "P0")
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "newsletter")
        segments.add_profiles(session, operator, segment, [pid])
    for step in ("remove", "add", "remove", "add"):
        with transaction(engine) as session:
            segment = segments.get_segment(session, "newsletter")
            if step == "remove":
                segments.remove_profiles(session, operator, segment, [pid])
            else:
                segments.add_profiles(session, operator, segment, [pid])
    c = card(engine, "P0")
    assert kinds(c) == [
        ("entered_segment", "newsletter"),
        ("left_segment", "newsletter"),
        ("entered_segment", "newsletter"),
        ("left_segment", "newsletter"),
        ("entered_segment", "newsletter"),
    ]
    assert all(e.actor == "alice" for e in c.events)
    assert [e.at for e in c.events] == sorted(e.at for e in c.events)
    assert c.segments == ["newsletter"]


def test_dynamic_refresh_events_appear_on_the_card(engine, operator):
    database = make_database(engine, operator)
    with transaction(engine) as session:
        segments.create_segment(
            session, operator, "kazan", database=database, rule="region = 'Kazan'"
        )
        segments.refresh(session, operator, segments.get_segment(session, "kazan"))
    with transaction(engine) as session:
        session.execute(sa.update(Profile).where(Profile.external_id == "P1").values(t0="Sochi"))
    with transaction(engine) as session:
        segments.refresh(session, operator, segments.get_segment(session, "kazan"))
    assert kinds(card(engine, "P1")) == [("entered_segment", "kazan"), ("left_segment", "kazan")]
    assert kinds(card(engine, "P3")) == [("entered_segment", "kazan")]
    assert kinds(card(engine, "P0")) == []


def _campaign_rows(engine, operator):
    """Campaign rows written directly, to test how the card derives and orders events."""
    database = make_database(engine, operator)
    pid = profile_id(engine, "P0")
    t0 = utcnow() - timedelta(hours=1)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "seg")
        session.flush()
        campaign = Campaign(
            name="Spring", database_id=database.id, segment_id=segment.id, seed=7, status="active"
        )
        other = Campaign(
            name="Autumn", database_id=database.id, segment_id=segment.id, seed=8, status="draft"
        )
        session.add_all([campaign, other])
        session.flush()
        build = AudienceBuild(campaign_id=campaign.id, reason="activation", status="done")
        session.add(build)
        session.flush()
        session.add(
            CampaignMember(
                campaign_id=campaign.id,
                profile_id=pid,
                group="test",
                joined_group="control",
                source="activation",
                assignment_hash=1,
                joined_at=t0,
                joined_build_id=build.id,
                joined_by="alice",
                left_at=t0 + timedelta(minutes=30),
                left_by="carol",
            )
        )
        session.add(
            ProfileEvent(
                at=t0 + timedelta(minutes=10),
                profile_id=pid,
                kind="moved_to_test",
                campaign_id=campaign.id,
                group="test",
                build_id=build.id,
                actor="bob",
            )
        )
        session.add(
            ProfileEvent(
                at=t0 + timedelta(minutes=30),
                profile_id=pid,
                kind="left_campaign",
                campaign_id=other.id,
                actor="carol",
            )
        )
        mailing = Mailing(name="spring-weekly", campaign_id=campaign.id, kind="regular")
        session.add(mailing)
        session.flush()
        run = MailingRun(
            mailing_id=mailing.id, scheduled_for=t0, started_at=t0 + timedelta(minutes=20)
        )
        session.add(run)
        session.flush()
        session.add(
            Delivery(
                run_id=run.id,
                mailing_id=mailing.id,
                campaign_id=campaign.id,
                profile_id=pid,
                sent_at=t0 + timedelta(minutes=20),
            )
        )
        return build.id, t0


def test_card_derives_campaign_events_from_membership_rows(engine, operator):
    build_id, t0 = _campaign_rows(engine, operator)
    c = card(engine, "P0")
    assert [(e.kind, e.campaign, e.group, e.build, e.actor) for e in c.events] == [
        ("entered_campaign", "Spring", "control", build_id, "alice"),
        ("moved_to_test", "Spring", "test", build_id, "bob"),
        ("delivered", "Spring", None, None, None),
        # Same time: sorted by kind order, then name: Autumn (R3 pending-only) first.
        ("left_campaign", "Autumn", None, None, "carol"),
        ("left_campaign", "Spring", "test", None, "carol"),
    ]
    assert c.events[2].mailing == "spring-weekly"
    assert c.events[0].at == t0
    assert [(m.campaign, m.group, m.joined_group, m.source) for m in c.memberships] == [
        ("Spring", "test", "control", "activation")
    ]
    assert c.memberships[0].left_at == t0 + timedelta(minutes=30)
    assert c.events[0].as_dict()["kind"] == "entered_campaign"


def test_card_order_is_deterministic_for_equal_timestamps(engine, operator):
    """R4: leaving the segment and the campaign at the same instant reads cause first."""
    database = make_database(engine, operator)
    pid = profile_id(engine, "P0")
    at = utcnow()
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "s")
        session.flush()
        campaign = Campaign(name="C", database_id=database.id, segment_id=segment.id, seed=1)
        session.add(campaign)
        session.flush()
        session.add(
            CampaignMember(
                campaign_id=campaign.id,
                profile_id=pid,
                group="test",
                joined_group="test",
                source="segment",
                assignment_hash=1,
                joined_at=at,
                left_at=at,
            )
        )
        session.execute(
            sa.insert(segments.member_table).values(
                segment_id=segment.id, profile_id=pid, entered_at=at, entered_by="x", left_at=at
            )
        )
    expected = ["entered_segment", "entered_campaign", "left_segment", "left_campaign"]
    for _ in range(3):
        assert [e.kind for e in card(engine, "P0").events] == expected
