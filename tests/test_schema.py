"""Schema round-trips on both backends: exact percent, JSON columns, aware UTC times."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    Mailing,
    Profile,
    ProfileDatabase,
    ProfileEvent,
    Segment,
)


def test_every_entity_round_trips(engine):
    when = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    with Session(engine) as session:
        database = ProfileDatabase(name="retail")
        session.add(database)
        session.flush()
        profile = Profile(
            database_id=database.id,
            external_id="P1",
            t0="Moscow",
            i0=3,
            f0=12.5,
            d0=date(2020, 5, 17),
        )
        segment = Segment(
            name="s",
            kind="dynamic",
            database_id=database.id,
            rule="tier = 3",
            refresh_every_seconds=900,
        )
        session.add_all([profile, segment])
        session.flush()
        campaign = Campaign(
            name="c",
            database_id=database.id,
            segment_id=segment.id,
            seed=2**63 - 1,
            lcg_enabled=True,
            lcg_percent_bp=525,
            lcg_limit=12,
            lcg_strata=["region", "tier"],
            activated_at=when,
            warnings=[{"code": "stratification_violation", "message": "m"}],
        )
        session.add(campaign)
        session.flush()
        build = AudienceBuild(
            campaign_id=campaign.id,
            reason="activation",
            checkpoint={"phase": "assign", "after": 17},
        )
        session.add(build)
        session.flush()
        session.add(
            CampaignMember(
                campaign_id=campaign.id,
                profile_id=profile.id,
                group="control",
                joined_group="control",
                source="activation",
                stratum_key="Moscow\x1f3",
                assignment_hash=-(2**63),
                cohort=1,
                joined_at=when,
                joined_build_id=build.id,
            )
        )
        session.add(
            ProfileEvent(
                at=when,
                profile_id=profile.id,
                kind="moved_to_test",
                campaign_id=campaign.id,
                group="test",
                build_id=build.id,
                actor="alice",
            )
        )
        session.add(
            Mailing(
                name="m",
                campaign_id=campaign.id,
                kind="regular",
                cron="0 10 * * 1",
                paused_by_build_id=build.id,
            )
        )
        session.commit()

    with Session(engine) as session:
        campaign = session.scalar(sa.select(Campaign))
        assert campaign.lcg_percent_bp == 525
        assert campaign.seed == 2**63 - 1
        assert campaign.lcg_strata == ["region", "tier"]
        assert campaign.activated_at == when and campaign.activated_at.tzinfo is not None
        assert campaign.warnings[0]["code"] == "stratification_violation"
        profile = session.scalar(sa.select(Profile))
        assert (profile.t0, profile.i0, profile.f0, profile.d0) == (
            "Moscow",
            3,
            12.5,
            date(2020, 5, 17),
        )
        member = session.scalar(sa.select(CampaignMember))
        assert member.assignment_hash == -(2**63) and member.stratum_key == "Moscow\x1f3"
        assert session.scalar(sa.select(AudienceBuild)).checkpoint == {
            "phase": "assign",
            "after": 17,
        }
        mailing = session.scalar(sa.select(Mailing))
        assert mailing.paused and mailing.paused_reason == "paused by audience build #1"


def test_open_membership_is_unique_per_campaign_and_profile(engine):
    when = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        database = ProfileDatabase(name="d")
        session.add(database)
        session.flush()
        profile = Profile(database_id=database.id, external_id="P1")
        segment = Segment(name="s")
        session.add_all([profile, segment])
        session.flush()
        campaign = Campaign(name="c", database_id=database.id, segment_id=segment.id, seed=1)
        session.add(campaign)
        session.flush()

        def member(left_at=None):
            return CampaignMember(
                campaign_id=campaign.id,
                profile_id=profile.id,
                group="test",
                joined_group="test",
                source="segment",
                assignment_hash=1,
                joined_at=when,
                left_at=left_at,
            )

        session.add(member(left_at=when))  # a closed interval ...
        session.add(member())  # ... and the open one may coexist
        session.commit()
        session.add(member())
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


def test_naive_datetimes_are_refused(engine):
    with Session(engine) as session:
        session.add(ProfileDatabase(name="d", created_at=datetime(2026, 1, 1)))
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.commit()
