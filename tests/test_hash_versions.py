"""R9 hash versions (revision 0005, issue 14): a release-1 workspace upgrades, its
campaigns keep the assignment hash they were built with, and a rebuild of each of them
reproduces its groups exactly, on SQLite and PostgreSQL; new campaigns use version 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from test_migrations import (
    assert_release1_answers_unchanged,
    load_release1_into_postgres,
    release1_copy,
)

from store import builds, campaigns, hashing, lcg, migrate, segments
from store.actors import Actor
from store.build_checkpoint import Checkpoint
from store.db import make_engine, open_store, transaction
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    Profile,
    ProfileDatabase,
    Segment,
)
from store.states import BuildReason, CampaignStatus

pytestmark = [
    pytest.mark.filterwarnings("ignore:Cannot correctly sort tables"),
    pytest.mark.usefixtures("no_user_config"),
]

ACTOR = Actor(user="upgrade-test", role="operator", origin="test")


def upgraded_release1(db_url: str, tmp_path: Path) -> str:
    """Release 1's workspace at head: the SQLite file upgraded on first open, the
    PostgreSQL copy by the upgrade command's function."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{release1_copy(tmp_path)}"
        open_store(url).dispose()
        return url
    load_release1_into_postgres(db_url)
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    engine.dispose()
    return db_url


def activation_groups(session, campaign_id: int, build_id: int) -> dict[str, str]:
    rows = session.execute(
        sa.select(Profile.external_id, CampaignMember.joined_group)
        .join(Profile, Profile.id == CampaignMember.profile_id)
        .where(CampaignMember.campaign_id == campaign_id)
        .where(CampaignMember.joined_build_id == build_id)
    ).all()
    return dict(rows)


def rebuild(engine, old: Campaign, activation: AudienceBuild, version: int) -> dict[str, str]:
    """Activate a twin of `old` over exactly the profiles its activation assigned, with the
    activation's LCG settings, the same seed and hash `version`; its groups."""
    settings = Checkpoint.from_json(activation.checkpoint).lcg
    name = f"{old.name} rebuilt v{version}"
    with transaction(engine) as s:
        ids = [
            pid
            for (pid,) in s.execute(
                sa.select(CampaignMember.profile_id).where(
                    CampaignMember.campaign_id == old.id,
                    CampaignMember.joined_build_id == activation.id,
                )
            )
        ]
        segment = segments.create_segment(s, ACTOR, f"{name} audience")
        segments.add_profiles(s, ACTOR, segment, ids)
        twin = campaigns.create_campaign(
            s,
            ACTOR,
            name,
            s.get(ProfileDatabase, old.database_id),
            segment,
            lcg_percent=lcg.format_percent(settings.percent_bp) if settings.enabled else None,
            lcg_limit=settings.limit if settings.enabled else None,
            lcg_strata=settings.strata if settings.enabled else (),
            seed=int(old.seed),
        )
        twin.hash_version = version
        s.add(twin)
        s.flush()
        campaigns.activate(s, ACTOR, twin)
        twin_id = twin.id
    builds.run_pending(engine, worker="rebuild")
    with transaction(engine) as s:
        build_id = s.scalar(
            sa.select(AudienceBuild.id).where(
                AudienceBuild.campaign_id == twin_id,
                AudienceBuild.reason == BuildReason.ACTIVATION,
            )
        )
        return activation_groups(s, twin_id, build_id)


def test_release1_campaigns_keep_hash_version_1_and_a_rebuild_reproduces_their_groups(
    db_url, tmp_path, capsys
):
    url = upgraded_release1(db_url, tmp_path)
    assert_release1_answers_unchanged(capsys, url)
    engine = open_store(url)
    try:
        with transaction(engine) as s:
            profiles = s.execute(sa.select(Profile.external_id, Profile.hash_key)).all()
            assert profiles and all(k == hashing.profile_key(e) for e, k in profiles)
            old = list(s.scalars(sa.select(Campaign).order_by(Campaign.id)))
            for c in old:
                s.expunge(c)
            activations = {
                b.campaign_id: b
                for b in s.scalars(
                    sa.select(AudienceBuild).where(AudienceBuild.reason == BuildReason.ACTIVATION)
                )
            }
            for b in activations.values():
                s.expunge(b)
            stored = {
                c.id: activation_groups(s, c.id, activations[c.id].id)
                for c in old
                if c.id in activations
            }
            # Every stored hash is version 1 of (seed, external id).
            for c in old:
                rows = s.execute(
                    sa.select(Profile.external_id, CampaignMember.assignment_hash)
                    .join(Profile, Profile.id == CampaignMember.profile_id)
                    .where(CampaignMember.campaign_id == c.id)
                ).all()
                assert all(h == hashing.assignment_hash(c.seed, e) for e, h in rows), c.name
        versions = {c.name: c.hash_version for c in old}
        # Campaigns that assigned groups keep release 1's function; a draft assigned nobody.
        assert versions == {
            c.name: hashing.MD5_VERSION
            if c.status != CampaignStatus.DRAFT
            else hashing.KEYED_VERSION
            for c in old
        }
        assert set(versions.values()) == {1, 2}
        changed_by_v2 = 0
        for c in old:
            if c.id not in activations:
                continue
            assert stored[c.id], c.name
            again = rebuild(engine, c, activations[c.id], c.hash_version)
            assert again == stored[c.id], c.name
            if rebuild(engine, c, activations[c.id], hashing.KEYED_VERSION) != stored[c.id]:
                changed_by_v2 += 1
        # The version matters: the new function would have chosen other control members.
        assert changed_by_v2 >= 1
    finally:
        engine.dispose()


def test_newcomers_of_an_old_campaign_keep_its_hash_and_new_campaigns_use_version_2(
    db_url, tmp_path
):
    url = upgraded_release1(db_url, tmp_path)
    engine = open_store(url)
    try:
        with transaction(engine) as s:
            old = campaigns.get_campaign(s, "Spring Promo")
            assert old.status == CampaignStatus.ACTIVE and old.hash_version == 1
            database = s.get(ProfileDatabase, old.database_id)
            s.add_all(
                Profile(database_id=database.id, external_id=f"NEW{i:02d}", t0="Moscow")
                for i in range(30)
            )
            s.flush()
            segment = s.get(Segment, old.segment_id)
            segments.add_profiles_where(s, ACTOR, segment, sa.text("external_id LIKE 'NEW%'"))
            fresh = campaigns.create_campaign(
                s, ACTOR, "After upgrade", database, segment, lcg_percent="10", seed=42
            )
            assert fresh.hash_version == hashing.CURRENT_VERSION == hashing.KEYED_VERSION
            old_id, old_seed = old.id, old.seed
        builds.run_pending(engine, worker="t")
        with transaction(engine) as s:
            campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "After upgrade"))
        builds.run_pending(engine, worker="t")
        with transaction(engine) as s:
            newcomers = s.execute(
                sa.select(Profile.external_id, CampaignMember.assignment_hash)
                .join(Profile, Profile.id == CampaignMember.profile_id)
                .where(CampaignMember.campaign_id == old_id)
                .where(Profile.external_id.like("NEW%"))
            ).all()
            assert len(newcomers) == 30
            assert all(h == hashing.assignment_hash(old_seed, e) for e, h in newcomers)
            new = campaigns.get_campaign(s, "After upgrade")
            rows = s.execute(
                sa.select(Profile.external_id, Profile.hash_key, CampaignMember.assignment_hash)
                .join(Profile, Profile.id == CampaignMember.profile_id)
                .where(CampaignMember.campaign_id == new.id)
            ).all()
            assert rows
            assert all(h == hashing.assignment_hash_v2(42, k) for _e, k, h in rows)
    finally:
        engine.dispose()
