"""The audit screen (`A`): recent entries newest first, key-id and fingerprint of gateway
sessions, a filter, and escape back."""

from __future__ import annotations

from pilot_helpers import VIEWER, screen_text, wait_for

from console.screens.audit import AuditScreen
from console.screens.campaigns import CampaignsScreen
from store.actors import gateway_actor
from store.audit import write_entry


async def test_audit_screen_lists_recent_entries_and_filters_them(make_app):
    app = make_app(VIEWER)
    bob = gateway_actor("bob", "read_only", "SHA256:bobkeyfp", "198.51.100.8", 40023)
    write_entry(app.engine, bob, "gateway.login", "gateway", "s1")
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown)
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen) and app.screen.lines)
        text = await wait_for(pilot, lambda: "gateway.login" in (t := screen_text(app)) and t)
        assert "bob (read_only)" in text and "SHA256:bobkeyfp" in text
        assert "campaign.activate" in text  # the workspace's own history is there too
        await pilot.press("slash", *"gateway")
        await wait_for(pilot, lambda: "campaign.activate" not in screen_text(app))
        assert "gateway.login" in screen_text(app)
        await pilot.press("escape")  # clears the filter
        await wait_for(pilot, lambda: "campaign.activate" in screen_text(app))
        await pilot.press("escape")  # back
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen))


async def test_at_80_columns_each_entry_says_whether_it_was_refused(make_app):
    """Outcome sits beside the time: at 80×24 a refusal reads as one, not as a success
    (it was three → away)."""
    app = make_app(VIEWER)
    bob = gateway_actor("bob", "read_only", "SHA256:bobkeyfp", "198.51.100.8", 40023)
    write_entry(app.engine, bob, "gateway.forward", "gateway", "s1", outcome="refused")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown)
        await pilot.press("A")
        text = await wait_for(pilot, lambda: "gateway.forward" in (t := screen_text(app)) and t)
        lines = text.splitlines()
        assert "refused" in next(line for line in lines if "gateway.forward" in line)
        assert " ok " in next(line for line in lines if "campaign.activate" in line)
