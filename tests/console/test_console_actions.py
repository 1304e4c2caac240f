"""Pilot tests of the console: real SQLite file, real store operations, real Textual app.

Every keyboard action is driven through its key and checked in the database afterwards;
refusals (read-only role, completed campaign, stale version) must appear as notifications
without crashing the app. Waits are on conditions, never fixed sleeps.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from pilot_helpers import OPERATOR, VIEWER, messages, screen_text, wait_for
from sqlmodel import Session
from textual import events
from textual.widgets import DataTable, Input, SelectionList
from workspace import ADMIN

from console.actions import CampaignRef
from console.app import CampaignConsole
from console.screens.campaign import CampaignScreen
from console.screens.campaigns import CampaignsScreen
from console.widgets.confirm import ConfirmScreen, TypeToConfirmScreen
from console.widgets.lcg_form import LcgFormScreen
from store import builds, campaigns
from store.db import transaction
from store.models import AudienceBuild, AuditEntry, Campaign, Mailing


def campaign(app, name: str) -> Campaign:
    with Session(app.engine) as session:
        return session.scalar(sa.select(Campaign).where(Campaign.name == name))


async def list_ready(pilot) -> CampaignsScreen:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown,
        what="campaign list",
    )
    return app.screen


async def select_row(pilot, name: str) -> None:
    screen = await list_ready(pilot)
    await wait_for(pilot, lambda: pilot.app.focused is not None)
    table = screen.query_one("#campaigns", DataTable)
    table.move_cursor(row=screen.shown.index(name))
    await pilot.pause()


async def open_detail(pilot, name: str) -> CampaignScreen:
    await select_row(pilot, name)
    await pilot.press("enter")
    app = pilot.app
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, CampaignScreen) and app.screen.detail is not None,
        what=f"detail of {name}",
    )
    # The screen takes keys once it is active, i.e. once it has placed its focus.
    await wait_for(pilot, lambda: app.focused is not None and app.focused.screen is app.screen)
    return app.screen


async def test_campaign_list_shows_counters_split_lcg_and_paused_mailings(make_app):
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await list_ready(pilot)
        text = await wait_for(pilot, lambda: "1 paused" in (t := screen_text(app)) and t)
        autumn = campaign(app, "Autumn Sale")
        assert "Autumn Sale" in text and "active" in text
        assert f"{autumn.members:,}" in text
        assert f"{autumn.control_count:,} " in text  # control with its percentage
        assert "10% by region" in text
        assert "1 paused" in text  # autumn-sms is paused by an operator
        assert "alice (operator)" in text
        assert "NOT RUNNING" in text  # no scheduler in this test: the header says so


async def test_enter_opens_detail_with_lcg_panel_strata_mailings_and_escape_returns(make_app):
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_detail(pilot, "Autumn Sale")
        text = await wait_for(pilot, lambda: "campaign.activate" in (t := screen_text(app)) and t)
        assert "LCG 10% by region" in text
        assert "control target" in text and "SRM" in text
        assert "region=North" in text  # per-stratum table
        assert "autumn-sms" in text and "paused by alice" in text
        assert "activation" in text  # the activation build
        assert "campaign.activate" in text  # recent audit entries
        assert screen.query_one("#split").visible
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen), what="list")


async def burst(pilot, *keys: str) -> None:
    """Keys that reach the app in one read, as a fast typist's or an SSH packet's do: all
    queued before the first is handled (Pilot.press waits for idle after each key)."""
    for key in keys:
        pilot.app.post_message(events.Key(key, "\r" if key == "enter" else None))
    await pilot.pause()


async def test_enter_typed_ahead_opens_the_row_the_keys_before_it_selected(make_app):
    """Enter is a priority binding: the app runs it as soon as it reads the key, while the
    arrows typed just before it still wait in the table's queue. It must open the row
    those arrows select, not the one selected when it was read."""
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await list_ready(pilot)
        await select_row(pilot, screen.shown[0])
        expected = screen.shown[2]
        await burst(pilot, "down", "down", "enter")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, CampaignScreen) and app.screen.detail is not None,
            what="detail",
        )
        assert app.screen.detail.name == expected


async def test_enter_typed_behind_a_key_that_opens_a_dialog_does_not_act_under_it(make_app):
    """`a` then enter in one burst: `a` opens the confirmation; the enter, read before the
    dialog was there, must not open the campaign over it once the dialog is on top."""
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await select_row(pilot, "Young Drop")
        await burst(pilot, "a", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen), what="the list")
        assert campaign(app, "Young Drop").status == "draft"


async def typed(pilot, text: str) -> None:
    """Text and keys that reach the app in one read (as `burst`), printable ones as text."""
    for key in text:
        name = {"/": "slash", "\r": "enter", " ": "space"}.get(key, key)
        pilot.app.post_message(events.Key(name, key))
    await pilot.pause()


@pytest.mark.parametrize("screen", ["campaigns", "audit"])
async def test_keys_typed_right_after_slash_go_into_the_filter_not_to_bindings(make_app, screen):
    """`/spring` in one read (a typist over SSH): every key after `/` is filter text. They
    used to reach the table: `r` refreshed the selected campaign's segment, `g` opened
    the segments screen. Nothing is written, the audit log included."""
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Young Drop")  # its segment is dynamic: `r` would refresh it
        if screen == "audit":
            await pilot.press("A")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "AuditScreen")
            await wait_for(pilot, lambda: app.focused is not None)
        with Session(app.engine) as session:
            audited = session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
        await typed(pilot, "/grab/the queue")  # in the box, `/` is text
        box = app.screen.query_one("#filter", Input)
        await wait_for(pilot, lambda: box.value == "grab/the queue", what=lambda: box.value)
        assert type(app.screen).__name__ == {"campaigns": "CampaignsScreen"}.get(
            screen, "AuditScreen"
        )
        await typed(pilot, "\r")  # applies the filter: the table has the keys again
        await wait_for(pilot, lambda: not box.has_focus, what="the table focused")
        assert box.value == "grab/the queue"
        with Session(app.engine) as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == audited


async def test_a_screen_key_returns_to_that_screen_when_it_is_open_further_back(make_app):
    """`b` `g` `b` went on to stack a second builds screen, and Textual refused its id: the
    console closed (DuplicateIds). The key goes back to the open screen; a profile card can
    be opened above another."""
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await list_ready(pilot)
        names = lambda: [type(s).__name__ for s in app.screen_stack[1:]]  # noqa: E731
        for key, stack in [
            ("b", ["CampaignsScreen", "BuildsScreen"]),
            ("g", ["CampaignsScreen", "BuildsScreen", "SegmentsScreen"]),
            ("A", ["CampaignsScreen", "BuildsScreen", "SegmentsScreen", "AuditScreen"]),
            ("b", ["CampaignsScreen", "BuildsScreen"]),
            ("f", ["CampaignsScreen", "BuildsScreen", "ProfileScreen"]),
            ("tab", ["CampaignsScreen", "BuildsScreen", "ProfileScreen"]),  # off its search box
            ("g", ["CampaignsScreen", "BuildsScreen", "ProfileScreen", "SegmentsScreen"]),
            (
                "f",
                [
                    *["CampaignsScreen", "BuildsScreen", "ProfileScreen"],
                    *["SegmentsScreen", "ProfileScreen"],
                ],
            ),
        ]:
            await wait_for(
                pilot, lambda: app.focused is not None and app.focused.screen is app.screen
            )
            await pilot.press(key)
            await wait_for(pilot, lambda stack=stack: names() == stack, what=names)
        assert names()[-1] == "ProfileScreen" and names().count("ProfileScreen") == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: names()[-1] == "SegmentsScreen", what=names)


async def lcg_form(pilot, name: str, key: str = "l") -> LcgFormScreen:
    """The LCG form of campaign `name`, opened from the list by `key`."""
    app = pilot.app
    await select_row(pilot, name)
    await pilot.press(key)
    return await wait_for(pilot, lambda: isinstance(app.screen, LcgFormScreen) and app.screen)


async def test_dynamic_segment_campaign_warns_every_refresh_changes_the_audience(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_detail(pilot, "Young Drop")
        await wait_for(pilot, lambda: "every refresh changes the audience" in screen_text(app))


async def test_slash_filters_the_list_and_escape_clears_it(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await list_ready(pilot)
        await pilot.press("slash")
        await pilot.press(*"push")
        await wait_for(pilot, lambda: screen.shown == ["North Push"], what="filtered list")
        await pilot.press("enter", "escape")
        await wait_for(pilot, lambda: len(screen.shown) == 4, what="unfiltered list")


async def test_activate_asks_then_activates_through_the_store_and_audits(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Young Drop")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await wait_for(pilot, lambda: "R2a" in screen_text(app), what="R2a")
        await pilot.press("y")
        await wait_for(pilot, lambda: campaign(app, "Young Drop").status == "active")
        with Session(app.engine) as session:
            entry = session.scalar(
                sa.select(AuditEntry)
                .where(AuditEntry.action == "campaign.activate")
                .order_by(AuditEntry.id.desc())
            )
        assert (entry.actor, entry.origin) == ("alice", "ssh 203.0.113.7:50022")
        await wait_for(pilot, lambda: any("activated" in m for m in messages(app)))


async def test_answering_no_changes_nothing(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Young Drop")
        before = campaign(app, "Young Drop").version
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")  # the focused, safe choice is "No"
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        assert campaign(app, "Young Drop").version == before


async def test_edit_lcg_previews_split_per_stratum_before_applying_r6(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("l")
        form = await wait_for(
            pilot, lambda: isinstance(app.screen, LcgFormScreen) and app.screen, what="LCG form"
        )
        percent = form.query_one("#percent", Input)
        percent.value = "20"
        await wait_for(pilot, lambda: "control target" in screen_text(app), what="preview")
        assert "North" in screen_text(app)  # per-stratum quotas
        assert campaign(app, "Autumn Sale").lcg_percent_bp == 1000  # nothing applied yet
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: campaign(app, "Autumn Sale").lcg_percent_bp == 2000)
        with Session(app.engine) as session:
            queued = session.scalar(
                sa.select(AudienceBuild).where(AudienceBuild.status == "queued")
            )
        assert queued is not None and queued.reason == "recalculation"


async def test_lcg_form_offers_database_fields_and_shows_invalid_percent(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await lcg_form(pilot, "Autumn Sale")
        options = form.query_one("#strata", SelectionList)
        names = [options.get_option_at_index(i).value for i in range(options.option_count)]
        assert names == ["region", "tier", "age"]  # floats cannot be strata
        # the selection in words, not only by colour (NO_COLOR terminals)
        assert "Strata: region (" in screen_text(app)
        options.select("tier")
        await wait_for(pilot, lambda: "Strata: region, tier (" in screen_text(app), what="tier")
        options.deselect_all()
        await wait_for(pilot, lambda: "Strata: none (" in screen_text(app), what="no strata")
        form.query_one("#percent", Input).value = "150"
        await wait_for(pilot, lambda: "✗" in screen_text(app), what="validation message")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        assert campaign(app, "Autumn Sale").lcg_percent_bp == 1000


async def test_lcg_form_refuses_digits_int_cannot_read_and_keeps_the_current_preview(make_app):
    """`1²` in Limit ("²" is one key on AZERTY; str.isdigit says yes, int() says no) closed
    the console; it is a ✗ like any other bad limit. And a slow preview of an earlier value
    (the database busy) does not replace the ✗ of the value now on screen."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await lcg_form(pilot, "Autumn Sale")
        form.query_one("#limit", Input).value = "1²"
        await wait_for(pilot, lambda: "✗ limit must be a whole number" in screen_text(app))
        form.query_one("#limit", Input).value = ""

        release, real, shown = threading.Event(), form.preview_fn, []
        show = form._show_preview

        def slow_for_25(change):
            if change.percent == "25":
                release.wait(30)
            return real(change)

        def record(change, renderable):
            show(change, renderable)
            shown.append(change.percent)

        form.preview_fn, form._show_preview = slow_for_25, record
        percent = form.query_one("#percent", Input)
        percent.value = "25"
        await wait_for(pilot, lambda: form.previewing and form.previewing.percent == "25")
        percent.value = "25.255"
        await wait_for(pilot, lambda: "two decimals" in screen_text(app), what="the ✗")
        release.set()
        await wait_for(pilot, lambda: "25" in shown, what="the slow preview's end")
        assert "two decimals" in screen_text(app) and "control target" not in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        assert campaign(app, "Autumn Sale").lcg_percent_bp == 1000


async def test_enter_in_the_strata_list_applies_the_form_and_space_toggles(make_app):
    """README: the form applies with ctrl+s or enter. In the strata list enter toggled the
    highlighted field instead, unseen, and a later ctrl+s applied that."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await lcg_form(pilot, "Autumn Sale")
        form.query_one("#percent", Input).value = "20"
        options = form.query_one("#strata", SelectionList)
        options.focus()
        await wait_for(pilot, lambda: options.has_focus)
        options.highlighted = 1  # tier
        await pilot.press("space")
        await wait_for(pilot, lambda: "Strata: region, tier (" in screen_text(app))
        await pilot.press("enter")
        await wait_for(pilot, lambda: campaign(app, "Autumn Sale").lcg_percent_bp == 2000)
        assert campaign(app, "Autumn Sale").lcg_strata == ["region", "tier"]


async def test_toggle_lcg_off_explains_r7_and_moves_control_to_test(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await wait_for(pilot, lambda: "R7" in screen_text(app), what="R7")
        await pilot.press("y")
        await wait_for(pilot, lambda: not campaign(app, "Autumn Sale").lcg_enabled)


async def test_complete_needs_the_exact_name_and_records_r8(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "North Push")
        await pilot.press("c")
        dialog = await wait_for(
            pilot, lambda: isinstance(app.screen, TypeToConfirmScreen) and app.screen
        )
        await wait_for(pilot, lambda: "left_campaign" in screen_text(app), what="left_campaign")
        await pilot.press(*"North", "enter")
        await wait_for(pilot, lambda: "exactly" in screen_text(app), what="mismatch hint")
        assert campaign(app, "North Push").status == "active"
        dialog.query_one(Input).value = ""
        await pilot.press(*"North Push", "enter")
        await wait_for(pilot, lambda: campaign(app, "North Push").status == "completed")


async def test_refresh_of_a_static_segment_is_refused_with_a_clear_notification(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("r")
        await wait_for(pilot, lambda: any("static" in m for m in messages(app)))
        assert app.is_running


async def test_refresh_of_a_dynamic_segment_runs_now(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Young Drop")
        await pilot.press("r")
        await wait_for(pilot, lambda: any("entered" in m for m in messages(app)))


async def test_p_pauses_and_resumes_the_selected_mailing(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_detail(pilot, "Autumn Sale")
        table = screen.query_one("#mailings", DataTable)
        table.focus()  # as an operator would: tab to the mailings, then down to the one
        # focus() takes effect on the app's next turn: a key pressed before goes elsewhere.
        await wait_for(pilot, lambda: app.focused is table, what="mailings focused")
        await pilot.press("down")
        await wait_for(
            pilot, lambda: (m := screen.selected_mailing()) and m.name == "autumn-weekly"
        )

        def paused() -> bool:
            with Session(app.engine) as session:
                return session.scalar(
                    sa.select(Mailing.manual_paused).where(Mailing.name == "autumn-weekly")
                )

        await pilot.press("p")
        await wait_for(
            pilot,
            paused,
            what=lambda: (
                f"paused; notifications {messages(app)}; screen {app.screen}; focused "
                f"{app.focused}; p -> {app.screen.active_bindings.get('p')}; workers "
                f"{list(app.workers)}"
            ),
        )
        await wait_for(pilot, lambda: "paused by alice" in screen_text(app))
        await wait_for(
            pilot,
            lambda: any(
                m.name == "autumn-weekly" and m.manual_paused for m in screen.detail.mailings
            ),
        )
        await pilot.press("p")
        await wait_for(pilot, lambda: not paused(), what="resumed")


async def test_a_cell_that_grows_while_its_screen_is_open_is_shown_whole(make_app):
    """North Push's one mailing is not paused: its Paused column is as wide as its header.
    After `p` the cell says who paused it, whole (it was cut to "paused", which a pause by
    a build also starts with)."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_detail(pilot, "North Push")
        table = screen.query_one("#mailings", DataTable)
        table.focus()
        await wait_for(pilot, lambda: app.focused is table, what="mailings focused")
        await wait_for(pilot, lambda: (m := screen.selected_mailing()) and m.name == "north-launch")
        await pilot.press("p")
        await wait_for(pilot, lambda: "paused by alice" in screen_text(app), what="the whole cell")


@pytest.mark.parametrize(
    ("key", "name", "audited", "words"),
    [
        ("a", "Old Promo", "campaign.activate", "completed and read-only (R8); cannot activate"),
        ("a", "Autumn Sale", "campaign.activate", "is already active"),
        ("c", "Old Promo", "campaign.complete", "cannot complete it again"),
        ("t", "Old Promo", "campaign.lcg_edit", "cannot change its LCG"),
        ("l", "Old Promo", "campaign.lcg_edit", "cannot change its LCG"),
    ],
)
async def test_an_action_the_store_refuses_is_refused_at_once_not_after_a_dialog(
    make_app, key, name, audited, words
):
    """The store's own check (store.states) runs on the selected row first: an action that
    cannot happen is refused in the store's words, and audited, without a dialog asking to
    confirm it; the console stays up and nothing changes."""
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, name)
        before = campaign(app, name)
        await pilot.press(key)
        await wait_for(pilot, lambda: any(words in m for m in messages(app)), what="refusal")
        assert isinstance(app.screen, CampaignsScreen)  # no dialog, no form
        after = campaign(app, name)
        assert (after.status, after.version) == (before.status, before.version)
        with Session(app.engine) as session:
            refusal = session.scalar(sa.select(AuditEntry).where(AuditEntry.outcome == "refused"))
        assert refusal is not None and refusal.actor == "alice" and refusal.action == audited


async def test_stale_version_surfaces_as_a_conflict(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await list_ready(pilot)
        row = screen.rows["Young Drop"]
        stale = CampaignRef("Young Drop", row.version - 1, "draft", 0, 0, False, "young", "dynamic")
        screen.activate_now(stale)
        await wait_for(pilot, lambda: any("changed" in m for m in messages(app)))
        assert campaign(app, "Young Drop").status == "draft"


async def test_read_only_removes_actions_from_footer_and_help(make_app):
    app = make_app(actor=VIEWER)
    async with app.run_test(size=(200, 40)) as pilot:
        await list_ready(pilot)
        footer = await wait_for(
            pilot, lambda: "Open" in (last := screen_text(app).splitlines()[-1]) and last
        )
        assert "Open" in footer and "Activate" not in footer and "Complete" not in footer
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: "Keys" in screen_text(app))
        text = screen_text(app)
        assert "Filter" in text and "Activate" not in text and "Edit LCG" not in text
        assert "read-only" in text


async def test_read_only_keys_do_nothing_and_the_store_still_refuses(make_app):
    app = make_app(actor=VIEWER)
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Young Drop")
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, CampaignsScreen)  # no dialog: the binding is gone
        # Below the UI: even a direct call is refused by the store (Actor.require_write).
        app.screen.activate_now(app.screen.campaign_ref())
        await wait_for(pilot, lambda: any("read-only" in m for m in messages(app)))
        assert campaign(app, "Young Drop").status == "draft"


async def test_help_lists_every_binding_with_its_id(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await list_ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: "Keys" in screen_text(app))
        text = screen_text(app)
        for binding_id in ("activate", "edit_lcg", "toggle_lcg", "complete", "refresh_segment"):
            assert binding_id in text
        assert "builds" in text and "profile" in text and "quit" in text


async def test_keymap_from_settings_remaps_by_id_and_refuses_swallowed_keys(make_app):
    """Remaps by id; refuses keys terminals swallow, and a key another binding of the same
    screen has: `segments = "b"` silently took `b` from the builds monitor."""
    app = make_app(keys={"activate": "v", "builds": "ctrl+a", "segments": "b", "members": "A"})
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "Young Drop")
        told = messages(app)
        assert any("ctrl+a" in m for m in told)
        assert any("segments = 'b': b is already builds's key" in m for m in told), told
        assert any("members = 'A': A is already audit's key" in m for m in told), told
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, CampaignsScreen)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        await wait_for(pilot, lambda: app.focused is not None)
        await pilot.press("b")  # still the builds monitor
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BuildsScreen")


def test_a_remap_may_swap_two_keys_or_reuse_one_on_another_screen():
    from console.keymap import checked_keymap

    swap = {"builds": "g", "segments": "b"}
    assert checked_keymap(swap) == (swap, [])
    # `n` is the members screen's next page; the campaign screen has no `n`
    assert checked_keymap({"pause_mailing": "n"}) == ({"pause_mailing": "n"}, [])


async def test_y_copies_the_campaign_name_with_osc52(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await select_row(pilot, "North Push")
        await pilot.press("y")
        assert app.clipboard == "North Push"


async def test_command_palette_offers_screens_and_actions(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await list_ready(pilot)
        titles = {c.title for c in app.get_system_commands(screen)}
        assert {"Campaigns", "Builds monitor", "Find profile", "Keys"} <= titles
        assert {"Activate campaign", "Edit LCG", "Complete campaign"} <= titles
    viewer = make_app(actor=VIEWER)
    async with viewer.run_test(size=(120, 30)) as pilot:
        screen = await list_ready(pilot)
        titles = {c.title for c in viewer.get_system_commands(screen)}
        assert "Activate campaign" not in titles and "Builds monitor" in titles


async def test_builds_monitor_lists_builds_and_scheduler_health(make_app):
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await list_ready(pilot)
        await pilot.press("b")
        # The header's scheduler state and the builds table arrive from separate polls.
        await wait_for(
            pilot,
            lambda: all(part in screen_text(app) for part in ("activation", "NOT RUNNING")),
            what="builds and scheduler health",
        )
        text = screen_text(app)
        assert "done" in text and "Autumn Sale" in text


async def test_profile_card_finds_a_profile_and_shows_its_history(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await list_ready(pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProfileScreen")
        await pilot.press(*"P00003", "enter")
        await wait_for(pilot, lambda: "entered_campaign" in screen_text(app), what="card")
        text = screen_text(app)
        assert "region=North" in text and "entered_segment" in text and "Autumn Sale" in text
        app.screen.query_one(Input).value = "nobody"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "no profile" in screen_text(app))


def test_operator_fixture_matches_console_actor():
    assert OPERATOR.user == "alice" and not OPERATOR.read_only and VIEWER.read_only


async def test_no_color_is_honoured_and_not_running_stays_visible(make_app, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await list_ready(pilot)
        assert app.no_color
        header = app.screen.query_one("StatusHeader")
        spans = header._line().spans
        assert any("reverse" in str(span.style) for span in spans)  # not colour alone


async def test_header_names_the_sqlite_file_not_its_url(make_app, workspace_url):
    """The header shows the workspace as the operator named it (the file), and at 80
    columns it keeps the end of that path: not `…////tmp/…` cut out of the URL."""
    app = make_app(db_label=None)
    path = workspace_url.removeprefix("sqlite:///")
    async with app.run_test(size=(200, 24)) as pilot:
        await list_ready(pilot)
        line = app.screen.query_one("StatusHeader")._line().plain
        assert line.endswith(f"│ {path}") and "sqlite:" not in line
    async with make_app(db_label=None).run_test(size=(80, 24)) as pilot:
        await list_ready(pilot)
        line = pilot.app.screen.query_one("StatusHeader")._line().plain
        assert line.endswith("/workspace.db") and "│ …" in line and "//" not in line


async def test_the_list_at_80_columns_shows_each_lcg_and_scrolls_by_column(make_app):
    """At 80×24 every campaign's control group, R10 warnings and LCG summary (its first 17
    characters, the whole of it after one →) are on screen: the LCG used to be cut after
    a few characters. → and ← scroll a whole column; the campaign's name stays put."""
    app = make_app()
    with transaction(app.engine) as session:  # R10: a limit of 3 over North's strata warns
        campaigns.edit_lcg(session, ADMIN, campaigns.get_campaign(session, "North Push"), limit=3)
    builds.run_pending(app.engine, worker="test")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await list_ready(pilot)
        await wait_for(pilot, lambda: app.focused is not None)

        def line_of(name: str) -> str:
            return next(line for line in screen_text(app).splitlines() if name in line)

        assert any(row.warnings for row in screen.rows.values())
        for name, row in screen.rows.items():
            line = line_of(name)
            assert line.startswith(f" {name}"), line
            assert row.lcg_summary[:17] in line and f"{row.control:,} {row.control_pct}" in line
            assert (f"⚠ {len(row.warnings)}" in line) == bool(row.warnings), line
        north = screen.rows["North Push"]
        assert f"{north.test:,} {north.test_pct}" not in line_of("North Push")

        await pilot.press("right")
        await wait_for(pilot, lambda: " Status " not in screen_text(app), what="one column")
        assert " Campaign " in screen_text(app) and " Members " in screen_text(app)
        for name, row in screen.rows.items():
            assert line_of(name).startswith(f" {name}") and row.lcg_summary in line_of(name)
        for _ in range(3):
            await pilot.press("right")
        await wait_for(
            pilot,
            lambda: f"{north.test:,} {north.test_pct}" in line_of("North Push"),
            what="the test group scrolled in",
        )
        assert line_of("North Push").startswith(" North Push")
        for _ in range(4):
            await pilot.press("left")
        await wait_for(pilot, lambda: " Status " in screen_text(app), what="back to the start")
        assert north.lcg_summary[:17] in line_of("North Push")


async def test_toggle_on_without_settings_asks_for_them_in_the_lcg_form(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await lcg_form(pilot, "Young Drop", "t")
        await wait_for(
            pilot, lambda: "applying enables it" in screen_text(app), what="applying enables it"
        )
        form.query_one("#percent", Input).value = "5"
        await wait_for(pilot, lambda: "control target" in screen_text(app), what="preview")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: campaign(app, "Young Drop").lcg_enabled)
        assert campaign(app, "Young Drop").lcg_percent_bp == 500


def test_no_console_binding_uses_keys_terminals_or_tmux_swallow():
    from console import keymap
    from console.widgets.confirm import ConfirmScreen, TypeToConfirmScreen
    from console.widgets.lcg_form import LcgFormScreen

    groups = [
        keymap.APP_BINDINGS,
        keymap.CAMPAIGN_ACTION_BINDINGS,
        keymap.LIST_BINDINGS,
        keymap.DETAIL_BINDINGS,
        keymap.BUILDS_BINDINGS,
        keymap.PROFILE_BINDINGS,
        ConfirmScreen.BINDINGS,
        TypeToConfirmScreen.BINDINGS,
        LcgFormScreen.BINDINGS,
    ]
    keys = [key.strip() for group in groups for b in group for key in b.key.split(",")]
    assert keys and not [key for key in keys if keymap.swallowed(key)]
    ids = [b.id for group in groups[:6] for b in group]
    assert all(ids)  # every console binding can be remapped by id


def test_a_read_only_console_does_not_embed_a_scheduler_by_default(workspace_url):
    """Read-only looks but never acts: no embedded scheduler runs builds or sends for it."""
    assert CampaignConsole(workspace_url, VIEWER).embed_scheduler is False
    assert CampaignConsole(workspace_url, OPERATOR).embed_scheduler is True


async def test_refusals_are_audited_by_the_store_once_under_the_operations_action_id(make_app):
    """Issue 10 item 2: the console writes no audit rows; the store records the refusal
    under the same action id as its success (campaign.lcg_edit, mailing.pause) and with
    the right target type."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_detail(pilot, "Autumn Sale")
        with Session(app.engine) as session:
            before = session.scalar(sa.select(sa.func.max(AuditEntry.id)))
        # autumn-sms is already paused by an operator: a stale screen asks to pause it again.
        screen.pause_mailing_now("autumn-sms", pause=True)
        await wait_for(pilot, lambda: any("already paused" in m for m in messages(app)))
        ref = screen.campaign_ref()
        stale = CampaignRef(**{**ref.__dict__, "version": ref.version - 1})
        screen.toggle_now(stale, enable=not ref.lcg_enabled)
        await wait_for(pilot, lambda: any("changed" in m for m in messages(app)))
        with Session(app.engine) as session:
            rows = session.scalars(
                sa.select(AuditEntry).where(AuditEntry.id > before).order_by(AuditEntry.id)
            ).all()
        assert [(e.action, e.outcome, e.target_type, e.target_name) for e in rows] == [
            ("mailing.pause", "refused", "mailing", "autumn-sms"),
            ("campaign.lcg_edit", "refused", "campaign", "Autumn Sale"),
        ]
        assert "changed by someone else" in rows[1].details["reason"]
