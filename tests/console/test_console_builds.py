"""The builds screen: the selected build in full under the table (a failed build's reason
above all), `R` queues a failed build again after a confirmation, `x` cancels an open
one; a read-only console offers neither (real app, Pilot, real SQLite workspace)."""

from __future__ import annotations

import pytest
from disk_full import expected_reason, run_until_the_disk_fills
from pilot_helpers import OPERATOR, VIEWER, messages, screen_text, wait_for
from sqlmodel import Session

from console.screens.builds import BuildsScreen
from console.screens.campaign import CampaignScreen
from console.screens.campaigns import CampaignsScreen
from console.widgets.confirm import ConfirmScreen
from store import builds, campaigns
from store.db import make_engine, transaction
from store.models import AudienceBuild


@pytest.fixture
def failed_build(workspace_url: str) -> int:
    """Young Drop's activation, failed on a full disk after its first chunk."""
    engine = make_engine(workspace_url)
    try:
        with transaction(engine) as session:
            campaign = campaigns.get_campaign(session, "Young Drop")
            campaigns.activate(session, OPERATOR, campaign)
        build_id = builds.claim_next_build(engine, "w")
    finally:
        engine.dispose()
    assert run_until_the_disk_fills(workspace_url, build_id, chunk_size=50) == "failed"
    return build_id


def status(workspace_url: str, build_id: int) -> str:
    engine = make_engine(workspace_url)
    try:
        with Session(engine) as session:
            return session.get(AudienceBuild, build_id).status
    finally:
        engine.dispose()


async def builds_screen(pilot, build_id: int) -> BuildsScreen:
    await pilot.press("b")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, BuildsScreen), what="builds")
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.selected() is not None, what="a selected build")
    assert screen.selected().id == build_id  # running and queued first, then the latest
    return screen


async def test_the_failed_build_shows_why_and_r_queues_it_again(
    make_app, workspace_url, failed_build
):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await builds_screen(pilot, failed_build)
        text = await wait_for(
            pilot,
            lambda: "Error: the disk is full" in screen_text(app) and screen_text(app),
            what="the error under the table",
        )
        assert f"#{failed_build} activation of Young Drop · failed" in text
        assert "Retry failed" in text and "Cancel build" in text  # the footer at 80 columns
        assert expected_reason(workspace_url)[:40] in text.replace("\n", " ")
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        assert "resumes from its checkpoint" in app.screen.explanation
        await pilot.press("n")  # the safe answer changes nothing
        await wait_for(pilot, lambda: isinstance(app.screen, BuildsScreen), what="back")
        assert status(workspace_url, failed_build) == "failed"
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: any("queued again" in m for m in messages(app)),
            what="the notification",
        )
        assert status(workspace_url, failed_build) == "queued"
        await wait_for(  # the monitor lists it among the queued ones, first
            pilot,
            lambda: (
                (app.screen.selected().id, app.screen.selected().status) == (failed_build, "queued")
            ),
            what="the row",
        )
        # A queued build is not failed: the store refuses a second retry, without a dialog.
        await pilot.press("R")
        await wait_for(
            pilot,
            lambda: any("only a failed build can be retried" in m for m in messages(app)),
            what="the refusal",
        )
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: status(workspace_url, failed_build) == "cancelled", what="cancelled"
        )


async def test_a_read_only_console_offers_no_retry_or_cancel(make_app, workspace_url, failed_build):
    app = make_app(actor=VIEWER)
    async with app.run_test(size=(120, 30)) as pilot:
        await builds_screen(pilot, failed_build)
        await wait_for(pilot, lambda: "Error: the disk is full" in screen_text(app), what="error")
        text = screen_text(app)
        assert "Retry" not in text and "Cancel build" not in text
        await pilot.press("R", "x")
        await pilot.pause()
        assert isinstance(app.screen, BuildsScreen)
        assert status(workspace_url, failed_build) == "failed"


async def test_the_campaign_screen_says_its_latest_build_failed_and_why(
    make_app, workspace_url, failed_build
):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown,
            what="campaign list",
        )
        app.screen.query_one("#campaigns").move_cursor(row=app.screen.shown.index("Young Drop"))
        await pilot.press("enter")
        text = await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, CampaignScreen)
                and f"build #{failed_build} (activation) failed at" in screen_text(app)
                and screen_text(app)
            ),
            what="the failed build in the overview",
        )
        assert "the disk is full" in text and "retry it on the builds screen" in text
