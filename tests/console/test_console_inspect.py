"""Pilot tests of the inspection screens (issue 13): members (`m`), and from a member to
its profile card. Real SQLite workspace, real store reads, waits on conditions."""

from __future__ import annotations

from pilot_helpers import screen_text, wait_for
from test_console_actions import burst, open_detail, select_row
from textual.widgets import DataTable, Input

from console.screens.members import MembersScreen
from console.screens.profile import ProfileScreen


async def members_ready(pilot, loads: int = 1) -> MembersScreen:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, MembersScreen) and app.screen.loads >= loads,
        what=f"members page #{loads}",
    )
    return app.screen


async def test_m_on_the_list_opens_members_paged_with_n_and_shift_n(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("m")
        screen = await members_ready(pilot)
        assert screen.page is not None and len(screen.page.rows) == 100
        assert screen.page.rows[0].external_id == "P00001"
        assert "1,200 match" in screen_text(app) and "page 1" in screen_text(app)
        # the stratum box suggests a stratum of this campaign (R9 strata: region)
        stratum_box = screen.query_one("#member-stratum", Input)
        assert stratum_box.placeholder == f"stratum, e.g. {screen.page.rows[0].stratum_label}"
        assert screen.page.rows[0].stratum_label.startswith("region=")
        await pilot.press("n")
        await members_ready(pilot, 2)
        assert screen.page.rows[0].external_id == "P00101"
        assert "page 2" in screen_text(app)
        await pilot.press("N")
        await members_ready(pilot, 3)
        assert screen.page.rows[0].external_id == "P00001"


async def test_members_filter_by_group_stratum_and_prefix_then_enter_opens_the_card(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_detail(pilot, "Autumn Sale")
        await pilot.press("m")
        screen = await members_ready(pilot)
        screen.query_one("#member-group").value = "control"
        await members_ready(pilot, 2)
        assert {r.group for r in screen.page.rows} == {"control"}
        assert screen.page.matching == 120  # 10 % of 1,200 (R9)
        screen.query_one("#member-stratum", Input).value = "region=North"
        await pilot.press("slash")
        await pilot.press(*"P001", "enter")
        await members_ready(pilot, 3)
        rows = screen.page.rows
        assert rows and all(
            r.external_id.startswith("P001")
            and r.group == "control"
            and r.stratum_label == "region=North"
            for r in rows
        )
        assert screen.page.matching is None  # a prefix has no counter
        assert isinstance(app.focused, DataTable)
        first = rows[0].external_id
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProfileScreen), what="profile card")
        await wait_for(pilot, lambda: "Autumn Sale" in screen_text(app), what="the card")
        assert first in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back to members")


async def test_members_keys_typed_ahead_of_enter_act_before_it(make_app):
    """Over SSH a burst arrives in one read: the prefix typed into the filter box is in the
    filter enter applies, and the arrows before the next enter pick the card it opens."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("m")
        screen = await members_ready(pilot)
        await pilot.press("slash")
        await burst(pilot, *"P002", "enter")
        await members_ready(pilot, 2)
        rows = screen.page.rows
        assert rows and all(r.external_id.startswith("P002") for r in rows)
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable), what="the table")
        await burst(pilot, "down", "down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProfileScreen), what="profile card")
        await wait_for(pilot, lambda: rows[2].external_id in screen_text(app), what="the card")


async def autumn_stratum_box(pilot) -> Input:
    """The stratum box of Autumn Sale's members screen, opened from the list."""
    await select_row(pilot, "Autumn Sale")
    await pilot.press("m")
    screen = await members_ready(pilot)
    return screen.query_one("#member-stratum", Input)


async def test_a_bad_stratum_filter_says_why_and_keeps_the_console_up(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        stratum = await autumn_stratum_box(pilot)
        stratum.value = "tier=2"
        stratum.focus()  # takes effect on the app's next turn: wait before the key
        await wait_for(pilot, lambda: app.focused is stratum, what="stratum filter focused")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "not a strata field" in screen_text(app), what="refusal")


async def test_profile_card_explains_each_membership_and_a_chosen_campaign(make_app):
    from textual.widgets import Select

    app = make_app()
    async with app.run_test(size=(140, 50)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("m")
        screen = await members_ready(pilot)
        screen.query_one("#member-group").value = "control"
        await members_ready(pilot, 2)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProfileScreen), what="profile card")
        card = app.screen
        await wait_for(
            pilot, lambda: "control_within_quota: rank" in screen_text(app), what="the why column"
        )
        await wait_for(pilot, lambda: card.campaign_choices, what="the campaign list")
        assert card.campaign_choices == ["Autumn Sale", "North Push", "Old Promo", "Young Drop"]
        card.query_one("#explain-campaign", Select).value = "Old Promo"
        await wait_for(pilot, lambda: "campaign_completed" in screen_text(app), what="explanation")
        assert "Old Promo: " in screen_text(app)


async def test_g_opens_segments_with_refresh_figures_and_r_refreshes_a_dynamic_one(make_app):
    from console.screens.segments import SegmentsScreen, _seconds

    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await select_row(pilot, "Autumn Sale")
        await pilot.press("g")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, SegmentsScreen) and app.screen.segments,
            what="segments",
        )
        screen = app.screen
        names = [s.name for s in screen.segments]
        assert names == ["all-shoppers", "north-shoppers", "young"]
        young = screen.segments[2]
        assert young.kind == "dynamic" and young.rule == "age < 30"
        assert young.last_refresh_entered == young.members and young.last_refresh_left == 0
        assert "Young Drop" in young.campaigns
        shown = f"+{young.members:,}/−0"
        await wait_for(  # the table is drawn after the snapshot arrives
            pilot,
            lambda: "age < 30" in screen_text(app) and shown in screen_text(app),
            what="the segments table",
        )
        table = screen.query_one("#segments", DataTable)
        table.move_cursor(row=2)
        await pilot.pause()
        before = young.last_refreshed_at
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: screen.segments[2].last_refreshed_at != before,
            what="a new refresh time",
        )
        assert screen.segments[2].last_refresh_entered == 0  # nothing changed since
        took = screen.segments[2].last_refresh_seconds
        assert took is not None  # the refresh's duration, shown after its time
        await wait_for(
            pilot, lambda: _seconds(took) in screen_text(app), what="the refresh's duration"
        )
        table.move_cursor(row=0)
        await pilot.pause()
        await pilot.press("r")
        await wait_for(pilot, lambda: any("static" in n.message for n in app._notifications))


async def test_the_selected_segment_is_shown_in_full_under_the_table_at_80_columns(make_app):
    """At 80×24 the table's right-hand columns (schedule, database, campaigns, rule) are
    off screen: the pane under it shows the selected segment in full, and follows the
    cursor."""
    from console.screens.segments import SegmentsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("g")
        screen = await wait_for(
            pilot,
            lambda: isinstance(app.screen, SegmentsScreen) and app.screen.segments and app.screen,
            what="segments",
        )
        young = screen.segments[2]
        assert (young.name, young.rule) == ("young", "age < 30")
        table = screen.query_one("#segments", DataTable)
        await wait_for(pilot, lambda: app.focused is table, what="the table focused")
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: "Rule: age < 30" in screen_text(app), what="the pane")
        text = screen_text(app)
        assert f"young · dynamic · database {young.database} · {young.members:,} members" in text
        assert f"Schedule: {young.schedule}" in text
        assert f"{young.last_refresh_entered:,} entered, 0 left" in text
        assert "Campaigns: " in text and "Young Drop" in text.split("Campaigns: ")[1]
        row = next(line for line in text.splitlines() if line.lstrip().startswith("young "))
        assert "age < 30" not in row  # the table's Rule column is off screen
        await pilot.press("up", "up")
        await wait_for(pilot, lambda: "Rule:" not in screen_text(app), what="the first segment")
        first = screen.segments[0]
        assert f"{first.name} · {first.kind}" in screen_text(app)


async def test_read_only_segments_screen_has_no_refresh_key(make_app):
    from pilot_helpers import VIEWER

    from console.screens.segments import SegmentsScreen

    app = make_app(VIEWER)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("g")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, SegmentsScreen) and app.screen.segments,
            what="segments",
        )
        assert "Refresh" not in screen_text(app)


async def test_a_draft_campaign_screen_shows_its_pending_audience_and_split(make_app):
    from pilot_helpers import OPERATOR

    from store import campaigns
    from store.db import transaction

    app = make_app()
    async with app.run_test(size=(120, 50)) as pilot:
        await open_detail(pilot, "Young Drop")
        await wait_for(pilot, lambda: "Pending audience" in screen_text(app), what="pending")
        assert "everyone to test (LCG off)" in screen_text(app)
        with transaction(app.engine) as session:
            draft = campaigns.get_campaign(session, "Young Drop")
            campaigns.edit_lcg(
                session, OPERATOR, draft, percent="10", strata=["region"], enabled=True
            )
        app.poller.poll_now()
        await wait_for(
            pilot, lambda: "activation now: control target" in screen_text(app), what="the split"
        )
        screen = app.screen
        pending = screen.scope.pending
        preview = screen.scope.preview
        assert preview.target == (2 * 1000 * pending + 10000) // 20000  # R9 round half up
        assert [r.label for r in preview.rows] == ["region=North", "region=South", "region=West"]
        assert "region=North" in screen_text(app)  # the strata table shows the preview


async def test_slash_typed_in_the_stratum_box_is_text(make_app):
    """`/` jumps to the prefix filter from the table, but in the stratum box it is a
    character of the value being typed (a stratum value may hold one)."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        stratum = await autumn_stratum_box(pilot)
        stratum.focus()
        await wait_for(pilot, lambda: app.focused is stratum, what="stratum box focused")
        await pilot.press(*"region=a", "slash", "b")
        await wait_for(pilot, lambda: stratum.value == "region=a/b", what=lambda: stratum.value)
        assert app.focused is stratum
