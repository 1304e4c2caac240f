"""SVG snapshots of the main screens at 80×24 and 120×40 (pytest-textual-snapshot 1.1.0).

Deterministic: the workspace has fixed seeds and a frozen clock (workspace.freeze_clock),
no scheduler runs (the header says NOT RUNNING, no heartbeat age), and the database label
is fixed. Update with `pytest tests/console --snapshot-update` after checking the SVGs.
"""

from __future__ import annotations

import pytest
from pilot_helpers import screen_text, wait_for
from textual.screen import ModalScreen
from textual.widgets import Input

from console.screens.builds import BuildsScreen
from console.screens.campaign import CampaignScreen
from console.screens.campaigns import CampaignsScreen
from console.screens.help import HelpScreen
from console.widgets.lcg_form import LcgFormScreen

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


async def settled(pilot) -> None:
    """Focus placed and two more polls applied: nothing left that could still repaint."""
    app = pilot.app
    await wait_for(pilot, lambda: app.focused is not None or isinstance(app.screen, HelpScreen))
    polls = app.poller.polls
    await wait_for(
        pilot, lambda: app.poller.polls >= polls + 2 or isinstance(app.screen, ModalScreen)
    )
    await pilot.pause()


async def _list(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown)
    await settled(pilot)


async def _detail(pilot) -> None:
    await _list(pilot)
    app = pilot.app
    app.open_campaign("Autumn Sale")
    await wait_for(
        pilot, lambda: isinstance(app.screen, CampaignScreen) and app.screen.detail is not None
    )
    await settled(pilot)


async def _builds(pilot) -> None:
    await _list(pilot)
    app = pilot.app
    await pilot.press("b")
    await wait_for(
        pilot,
        lambda: (
            isinstance(app.screen, BuildsScreen) and app.screen.query("#builds").first().row_count
        ),
    )
    await settled(pilot)  # focus placed and more polls applied, as for every other screen


async def _profile(pilot) -> None:
    await _list(pilot)
    app = pilot.app
    await pilot.press("f")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ProfileScreen")
    await pilot.press(*"P00003", "enter")
    await wait_for(pilot, lambda: app.screen.query_one("#events").row_count > 0)
    app.screen.query_one("#events").focus()  # no blinking cursor in the picture
    await settled(pilot)


async def _lcg_form(pilot) -> None:
    await _list(pilot)
    app = pilot.app
    await pilot.press("l")
    form = await wait_for(pilot, lambda: isinstance(app.screen, LcgFormScreen) and app.screen)
    form.query_one("#limit", Input).value = "30"
    await wait_for(pilot, lambda: "limit binds" in screen_text(app))
    form.query_one("#strata").focus()  # no blinking cursor in the picture
    await settled(pilot)


async def _help(pilot) -> None:
    await _list(pilot)
    await pilot.press("question_mark")
    await wait_for(
        pilot, lambda: pilot.app.screen.id is None and "Help" in type(pilot.app.screen).__name__
    )
    await pilot.pause()


@SIZES
def test_campaign_list(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_list)


@SIZES
def test_campaign_detail(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_detail)


@SIZES
def test_builds_monitor(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_builds)


@SIZES
def test_profile_card(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_profile)


@SIZES
def test_lcg_form_with_preview(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_lcg_form)


@SIZES
def test_help(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_help)
