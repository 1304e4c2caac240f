"""Pilot test (R11b): the profile card shows a trigger mailing's delivery and its
suppressions with their reasons, from the same card read model as `profile show`."""

from __future__ import annotations

import sqlalchemy as sa
from pilot_helpers import DB_LABEL, OPERATOR, screen_text, wait_for
from sqlmodel import Session
from textual.widgets import Input

from console.app import CampaignConsole
from console.screens.profile import ProfileScreen
from store import demo
from store.db import create_workspace
from store.models import Delivery, Profile, Suppression


async def test_the_card_shows_delivered_and_suppressed_with_the_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = create_workspace(url)  # what `demo` runs (issue 15.7)
    demo.build_demo(engine, OPERATOR, n_profiles=500)
    with Session(engine) as session:
        # a profile whose events were both delivered and suppressed as a control member
        delivered = sa.select(Delivery.profile_id).where(Delivery.event_id.is_not(None))
        external_id = session.scalar(
            sa.select(Profile.external_id)
            .join(Suppression, Suppression.profile_id == Profile.id)
            .where(Suppression.reason == "mailing_paused", Profile.id.in_(delivered))
            .order_by(Profile.id)
            .limit(1)
        )
    engine.dispose()
    assert external_id is not None
    app = CampaignConsole(
        url, OPERATOR, embed_scheduler=False, db_label=DB_LABEL, poll_interval=0.2
    )
    async with app.run_test(size=(140, 60)) as pilot:
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ProfileScreen), what="profile card")
        await pilot.pause()
        app.screen.query_one("#external-id", Input).value = external_id
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: "suppressed: mailing_paused" in screen_text(app),
            what=lambda: screen_text(app),
        )
        text = screen_text(app)
        assert "delivered" in text
        assert "Spring Promo / spring-review-ask" in text
        assert "suppressed: campaign_not_active" in text  # the draft's mailing (R11b)
