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


# --------------------------------------------------------------------------- real campaigns


def _setup_campaign(engine, operator, members=("P0", "P1", "P2"), **lcg):
    """A static segment holding `members` and a draft campaign on it."""
    from store import campaigns

    database = make_database(engine, operator, n=6)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "audience")
        ids = [profile_id(engine, m) for m in members]
        segments.add_profiles(session, operator, segment, ids)
        campaigns.create_campaign(session, operator, "Spring", database, segment, **lcg)
    return database


def _segment_op(engine, operator, op, *external_ids):
    ids = [profile_id(engine, e) for e in external_ids]
    with transaction(engine) as session:
        segment = segments.get_segment(session, "audience")
        getattr(segments, f"{op}_profiles")(session, operator, segment, ids)


def _activate(engine, operator, name="Spring"):
    from store import builds, campaigns

    with transaction(engine) as session:
        campaigns.activate(session, operator, campaigns.get_campaign(session, name))
    builds.run_pending(engine)


def _campaign(engine, name="Spring"):
    from store import campaigns

    with Session(engine) as session:
        return campaigns.get_campaign(session, name)


def test_r3_draft_segment_changes_show_only_segment_events_until_activation(engine, operator):
    """R3: remove and re-add before activation: every segment event, no campaign event;
    at activation only the final state counts."""
    _setup_campaign(engine, operator)
    _segment_op(engine, operator, "remove", "P1")
    _segment_op(engine, operator, "add", "P1")
    _segment_op(engine, operator, "remove", "P2")
    _segment_op(engine, operator, "add", "P3", "P4")
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CampaignMember)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(ProfileEvent)) == 0
    assert kinds(card(engine, "P1")) == [
        ("entered_segment", "audience"),
        ("left_segment", "audience"),
        ("entered_segment", "audience"),
    ]
    assert _campaign(engine).members == 0

    _activate(engine, operator)
    campaign = _campaign(engine)
    assert kinds(card(engine, "P1")) == [
        ("entered_segment", "audience"),
        ("left_segment", "audience"),
        ("entered_segment", "audience"),
        ("entered_campaign", "Spring"),
    ]
    assert kinds(card(engine, "P0")) == [
        ("entered_segment", "audience"),
        ("entered_campaign", "Spring"),
    ]
    # P2 was in the pending audience at creation and left before activation.
    p2 = card(engine, "P2")
    assert kinds(p2) == [
        ("entered_segment", "audience"),
        ("left_segment", "audience"),
        ("left_campaign", "Spring"),
    ]
    assert p2.events[-1].at == campaign.activated_at
    assert p2.memberships == []
    # P4 joined the draft's segment after creation: it simply enters at activation.
    assert kinds(card(engine, "P4"))[-1] == ("entered_campaign", "Spring")
    # P3 is in the global control group (R1): segment events only.
    assert kinds(card(engine, "P3")) == [("entered_segment", "audience")]
    entered = [e for e in card(engine, "P0").events if e.kind == "entered_campaign"][0]
    assert entered.group == "test" and entered.build is not None
    assert campaign.members == 3


def test_r4_leaving_an_active_campaign_segment_closes_the_membership_at_once(engine, operator):
    _setup_campaign(engine, operator)
    _activate(engine, operator)
    _segment_op(engine, operator, "remove", "P0")
    c = card(engine, "P0")
    assert kinds(c)[-2:] == [("left_segment", "audience"), ("left_campaign", "Spring")]
    left_segment, left_campaign = c.events[-2:]
    assert left_segment.at == left_campaign.at  # R4: at once
    assert left_campaign.actor == "alice" and left_campaign.group == "test"
    assert c.memberships[0].left_at == left_campaign.at
    campaign = _campaign(engine)
    assert (campaign.members, campaign.test_count) == (2, 2)
    with Session(engine) as session:
        assert segments.get_segment(session, "audience").member_count == 2


def test_r4_joining_an_active_campaign_segment_enters_at_the_incremental_build(engine, operator):
    from store import builds

    _setup_campaign(engine, operator)
    _activate(engine, operator)
    _segment_op(engine, operator, "add", "P4")
    assert kinds(card(engine, "P4")) == [("entered_segment", "audience")]
    with Session(engine) as session:
        queued = session.scalars(
            sa.select(AudienceBuild.reason).where(AudienceBuild.status == "queued")
        ).all()
    assert queued == ["incremental"]  # R2c
    builds.run_pending(engine)
    c = card(engine, "P4")
    assert kinds(c) == [("entered_segment", "audience"), ("entered_campaign", "Spring")]
    assert c.memberships[0].source == "segment"
    assert _campaign(engine).members == 4


def test_r4_reentering_profile_gets_a_new_membership_with_its_former_group(engine, operator):
    from store import builds

    _setup_campaign(engine, operator)
    _activate(engine, operator)
    _segment_op(engine, operator, "remove", "P1")
    _segment_op(engine, operator, "add", "P1")
    builds.run_pending(engine)
    c = card(engine, "P1")
    assert kinds(c) == [
        ("entered_segment", "audience"),
        ("entered_campaign", "Spring"),
        ("left_segment", "audience"),
        ("left_campaign", "Spring"),
        ("entered_segment", "audience"),
        ("entered_campaign", "Spring"),
    ]
    assert [(m.group, m.open) for m in c.memberships] == [("test", False), ("test", True)]


def test_card_shows_moved_to_test_when_the_lcg_is_removed(engine, operator):
    """R7 on the card: each control member gets moved_to_test with the build and actor."""
    from store import builds, campaigns

    _setup_campaign(
        engine, operator, members=("P0", "P1", "P2", "P3", "P4", "P5"), lcg_percent="50"
    )
    _activate(engine, operator)
    campaign = _campaign(engine)
    assert campaign.control_count == 3
    with transaction(engine) as session:
        build = campaigns.set_lcg_enabled(
            session, operator, campaigns.get_campaign(session, "Spring"), False
        )
        build_id = build.id
    builds.run_pending(engine)
    moved = []
    for external_id in ("P0", "P1", "P2", "P4", "P5"):  # P3 is in the GCG (R1)
        c = card(engine, external_id)
        entered = [e for e in c.events if e.kind == "entered_campaign"][0]
        if entered.group == "control":
            event = c.events[-1]
            assert (event.kind, event.campaign, event.group) == ("moved_to_test", "Spring", "test")
            assert (event.build, event.actor) == (build_id, "alice")
            assert c.memberships[0].group == "test" and c.memberships[0].joined_group == "control"
            moved.append(external_id)
    assert len(moved) == 3


def test_segment_changes_never_touch_a_completed_campaign(engine, operator):
    """R8: after completion, segment changes write segment events only."""
    from store import campaigns

    _setup_campaign(engine, operator)
    _activate(engine, operator)
    with transaction(engine) as session:
        campaigns.complete(session, operator, campaigns.get_campaign(session, "Spring"))
    before = kinds(card(engine, "P0"))
    assert before[-1] == ("left_campaign", "Spring")
    _segment_op(engine, operator, "remove", "P0")
    _segment_op(engine, operator, "add", "P5")
    assert kinds(card(engine, "P0")) == [*before, ("left_segment", "audience")]
    with Session(engine) as session:
        assert (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(AudienceBuild)
                .where(AudienceBuild.status == "queued")
            )
            == 0
        )
    assert _campaign(engine).members == 0


def test_dynamic_refresh_on_an_active_campaign_applies_r4(engine, operator):
    from store import builds, campaigns

    database = make_database(engine, operator, n=6)
    with transaction(engine) as session:
        segment = segments.create_segment(
            session, operator, "moscow", database=database, rule="region = 'Moscow'"
        )
        segments.refresh(session, operator, segment)
        campaigns.create_campaign(session, operator, "Dyn", database, segment)
    _activate(engine, operator, "Dyn")
    assert _campaign(engine, "Dyn").members == 3
    with transaction(engine) as session:
        session.execute(sa.update(Profile).where(Profile.external_id == "P0").values(t0="Kazan"))
        session.execute(sa.update(Profile).where(Profile.external_id == "P1").values(t0="Moscow"))
    with transaction(engine) as session:
        result = segments.refresh(session, operator, segments.get_segment(session, "moscow"))
    assert (result.entered, result.left) == (1, 1)
    assert [b.reason for b in result.builds] == ["incremental"]  # R2c, for the newcomer
    assert kinds(card(engine, "P0"))[-2:] == [("left_segment", "moscow"), ("left_campaign", "Dyn")]
    builds.run_pending(engine)
    assert kinds(card(engine, "P1")) == [("entered_segment", "moscow"), ("entered_campaign", "Dyn")]
    assert _campaign(engine, "Dyn").members == 3
