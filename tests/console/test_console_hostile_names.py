"""Issue 15.2 and 15.3: names and imported data are shown literally on every screen.

A campaign named `[/]` used to crash the console at start-up (MarkupError), `[link=…]`
became a clickable link, and an ESC in a name reached the viewer's terminal. The names
below are written straight into the workspace (as a workspace of the previous release could
hold them; the store now refuses control characters), then every screen is walked.
"""

from __future__ import annotations

import sqlalchemy as sa
from pilot_helpers import VIEWER, messages, screen_text, wait_for
from sqlmodel import Session
from textual.widgets import DataTable, Input

from console.screens.campaigns import CampaignsScreen
from console.widgets.confirm import ConfirmScreen, TypeToConfirmScreen
from console.widgets.lcg_form import LcgFormScreen
from store.db import make_engine
from store.models import Campaign, Mailing, Profile, ProfileDatabase, ProfileField, Segment

ACTIVE = "[/]"  # was Autumn Sale
LINK = "[link=https://x.example]win[/link]"  # was North Push
DRAFT = "\x1b[2J\x1b]52;c;cHduZWQ=\x07Young"  # was Young Drop: clear screen, write clipboard
SEGMENT = "[bold]all"
DATABASE = "[/b]shop"
MAILING = "[/]weekly"
EXTERNAL_ID = "P[/][link=https://x.example]3"  # typed into the search box: no ESC
REGION = "[link=https://x.example]N[/link]\x1b]52;c;eA==\x07"


def make_hostile(url: str) -> None:
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        for old, new in (("Autumn Sale", ACTIVE), ("North Push", LINK), ("Young Drop", DRAFT)):
            session.execute(sa.update(Campaign).where(Campaign.name == old).values(name=new))
        session.execute(
            sa.update(Segment).where(Segment.name == "all-shoppers").values(name=SEGMENT)
        )
        session.execute(sa.update(ProfileDatabase).values(name=DATABASE))
        session.execute(
            sa.update(Mailing).where(Mailing.name == "autumn-weekly").values(name=MAILING)
        )
        region = session.scalar(sa.select(ProfileField.slot).where(ProfileField.name == "region"))
        session.execute(
            sa.update(Profile)
            .where(Profile.external_id == "P00003")
            .values({"external_id": EXTERNAL_ID, region: REGION})
        )
    engine.dispose()


def assert_literal(app, *expected: str) -> str:
    text = screen_text(app)
    assert "\x1b" not in text and "\x07" not in text, "a control character reached the screen"
    for part in expected:
        assert part in text, f"{part!r} not shown literally in:\n{text}"
    return text


async def show(pilot, condition, what: str) -> None:
    await wait_for(pilot, condition, what=what)
    await pilot.pause()


async def test_every_screen_shows_hostile_names_literally(make_app, workspace_url):
    make_hostile(workspace_url)
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await show(
            pilot,
            lambda: isinstance(app.screen, CampaignsScreen) and len(app.screen.shown) == 4,
            "the campaign list",
        )
        list_screen = app.screen
        assert_literal(app, ACTIVE, "[link=https://x.", "\\x1b[2J\\x1b]52;c", "[bold]all")

        # The campaign screen: name, database, segment, mailing, strata labels.
        list_screen.query_one("#campaigns", DataTable).move_cursor(
            row=list_screen.shown.index(ACTIVE)
        )
        await pilot.press("enter")
        await show(pilot, lambda: "autumn-sms" in screen_text(app), "the campaign screen")
        assert_literal(app, ACTIVE, DATABASE, SEGMENT, MAILING)
        await pilot.press("l")  # the LCG form and its preview
        await show(pilot, lambda: isinstance(app.screen, LcgFormScreen), "the LCG form")
        await show(pilot, lambda: "control target" in screen_text(app), "the preview")
        assert_literal(app, f"LCG of {ACTIVE}")
        await pilot.press("escape")
        await pilot.press("c")  # type-to-confirm completion
        await show(pilot, lambda: isinstance(app.screen, TypeToConfirmScreen), "the dialog")
        assert_literal(app, f"Complete {ACTIVE}")
        await pilot.press("escape")
        await show(pilot, lambda: not isinstance(app.screen, TypeToConfirmScreen), "no dialog")

        await pilot.press("b")  # the builds monitor
        await show(pilot, lambda: "activation" in screen_text(app), "the builds monitor")
        assert_literal(app, ACTIVE)
        await pilot.press("escape")
        await pilot.press("escape")
        await show(pilot, lambda: app.screen is list_screen, "back to the list")

        # The draft with an ESC in its name: its screen and the activation dialog.
        list_screen.query_one("#campaigns", DataTable).move_cursor(
            row=list_screen.shown.index(DRAFT)
        )
        await pilot.pause()
        await pilot.press("a")
        await show(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the activate dialog")
        assert_literal(app, "Activate \\x1b[2J")
        await pilot.press("n")
        await show(pilot, lambda: app.screen is list_screen, "the dialog closed")
        list_screen.query_one("#campaigns", DataTable).move_cursor(
            row=list_screen.shown.index(LINK)
        )
        await pilot.press("enter")
        await show(pilot, lambda: "north-launch" in screen_text(app), "the linked campaign")
        assert_literal(app, LINK)
        await pilot.press("y")  # the notification quotes the name literally as well
        await show(pilot, lambda: messages(app), "the copy notification")
        assert messages(app)[-1] == f": copied {LINK!r}"
        assert app.clipboard == LINK

        # The profile card: an external id and a field value from an imported file.
        await pilot.press("f")
        await show(
            pilot, lambda: type(app.screen).__name__ == "ProfileScreen", "the profile screen"
        )
        app.screen.query_one("#external-id", Input).value = EXTERNAL_ID
        await pilot.press("enter")
        await show(pilot, lambda: "entered_campaign" in screen_text(app), "the card")
        assert_literal(app, EXTERNAL_ID, "[link=https://x.example]N[/link]\\x1b]52")
        await pilot.press("escape")
        await pilot.press("question_mark")
        await show(pilot, lambda: "Keys" in screen_text(app), "help")
        assert_literal(app)
    assert app.return_code in (None, 0)


async def test_a_read_only_viewer_sees_the_same_literal_names(make_app, workspace_url):
    make_hostile(workspace_url)
    app = make_app(actor=VIEWER)
    async with app.run_test(size=(120, 30)) as pilot:
        await show(
            pilot,
            lambda: isinstance(app.screen, CampaignsScreen) and len(app.screen.shown) == 4,
            "the campaign list",
        )
        assert_literal(app, ACTIVE, "\\x1b[2J")
