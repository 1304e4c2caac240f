"""The demo workspace: realistic, every campaign status, every mailing kind, both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from store import demo
from store.models import Campaign, Mailing, Profile, Segment


@pytest.fixture
def workspace(engine, operator):
    demo.build_demo(engine, operator, n_profiles=2_000)
    return engine


def test_demo_generates_the_requested_profiles_with_typed_fields(workspace):
    with Session(workspace) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 2_000
        regions = set(session.scalars(sa.select(Profile.t0).distinct()))
        assert regions == {name for _bound, name in demo.REGIONS}
        ages = session.execute(sa.select(sa.func.min(Profile.i1), sa.func.max(Profile.i1))).one()
        assert 18 <= ages[0] and ages[1] <= 77
        assert session.scalar(sa.select(sa.func.count()).where(Profile.in_gcg)) > 0


def test_demo_has_campaigns_in_every_status_and_an_lcg_warning(workspace):
    with Session(workspace) as session:
        campaigns = {c.name: c for c in session.scalars(sa.select(Campaign))}
    assert {c.status for c in campaigns.values()} == {"draft", "active", "completed"}
    spring = campaigns["Spring Promo"]
    assert spring.lcg_enabled and spring.lcg_strata == ["region", "tier"]
    assert spring.control_count > 0 and spring.members == spring.test_count + spring.control_count
    assert not campaigns["Moscow Youth"].lcg_enabled and campaigns["Moscow Youth"].members > 0
    loyalty = campaigns["Loyalty Boost"]
    assert loyalty.control_count == 20  # the limit binds ...
    assert [w["code"] for w in loyalty.warnings] == ["stratification_violation"]  # ... R10
    assert campaigns["Winter Clearance"].members == 0  # completed: memberships closed (R8)
    assert campaigns["Win-back Lapsed"].members == 0  # draft: no audience yet (R3)


def test_demo_has_static_and_dynamic_segments_and_every_mailing_kind(workspace):
    with Session(workspace) as session:
        kinds = set(session.scalars(sa.select(Segment.kind)))
        mailing_kinds = set(session.scalars(sa.select(Mailing.kind)))
        paused = session.scalars(sa.select(Mailing).where(Mailing.manual_paused)).all()
        dynamic = session.scalar(sa.select(Segment).where(Segment.name == "moscow-under-30"))
    assert kinds == {"static", "dynamic"}
    assert mailing_kinds == {"broadcast", "regular", "trigger"}
    assert sorted(m.name for m in paused) == ["spring-review-ask", "spring-sms"]
    assert dynamic.member_count > 0 and dynamic.refresh_every_seconds == 900


def test_demo_refuses_to_overwrite_and_reset_rebuilds(workspace, operator):
    with pytest.raises(ValueError, match="--reset"):
        demo.build_demo(workspace, operator, n_profiles=500)
    demo.reset(workspace, operator)
    demo.build_demo(workspace, operator, n_profiles=500)
    with Session(workspace) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 500


def test_demo_has_processed_trigger_events_with_every_outcome(workspace):
    """R11b: a few hundred events already processed, deliveries and suppressions of every
    reason, on the cards and in `mailing show` (same read models)."""
    from store import views
    from store.models import Delivery, Suppression, TriggerEvent
    from store.states import SuppressionReason

    with Session(workspace) as session:
        events = session.scalar(sa.select(sa.func.count()).select_from(TriggerEvent))
        pending = session.scalar(
            sa.select(sa.func.count()).where(TriggerEvent.processed_at.is_(None))
        )
        reasons = set(session.scalars(sa.select(Suppression.reason).distinct()))
        delivered = session.scalar(sa.select(sa.func.count()).where(Delivery.event_id.is_not(None)))
        welcome = views.mailing_detail(session, "loyalty-welcome")
    assert events >= 300 and pending == 0
    assert reasons == set(SuppressionReason)
    assert delivered > 0 and welcome.sent > 0 and welcome.suppressed["control"] > 0
