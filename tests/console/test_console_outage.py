"""The console while its PostgreSQL database cannot be reached, and after.

The outage is real: the workspace has a database of its own on the test server, which the
test closes to new connections after ending the console's (tests/own_database.py), as a
stopped or restarted server would; then opens it again.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from pilot_helpers import OPERATOR, messages, screen_text, wait_for
from workspace import build_workspace

from console.app import CampaignConsole
from console.screens.campaigns import CampaignsScreen
from console.widgets.status_header import StatusHeader

pytestmark = pytest.mark.postgres


def header(app: CampaignConsole) -> str:
    return app.screen.query_one(StatusHeader)._line().plain


async def answered_again(pilot, app: CampaignConsole) -> None:
    """The header is the scheduler's again, and a notice says the database answers."""
    await wait_for(
        pilot, lambda: "scheduler:  NOT RUNNING" in header(app), what=lambda: header(app)
    )
    await wait_for(
        pilot,
        lambda: any(m.startswith(": the database answers again (after") for m in messages(app)),
        what=lambda: messages(app),
    )


async def test_an_outage_is_said_in_the_header_and_the_console_recovers(own_database):
    build_workspace(own_database.url).engine.dispose()
    app = CampaignConsole(own_database.url, OPERATOR, embed_scheduler=False, poll_interval=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown)
        assert "scheduler:  NOT RUNNING" in header(app)  # nothing embedded in this test

        own_database.cut()
        await wait_for(
            pilot, lambda: "DATABASE UNREACHABLE for" in header(app), what=lambda: header(app)
        )
        line = header(app)
        assert "scheduler:" not in line  # unknown while the database cannot be read
        assert line.endswith(own_database.name)  # the database is still named, at 80 columns
        # One notice (notify posts a message: wait for it), saying which server, in one
        # line of its own words: neither SQLAlchemy's text nor SQL.
        notices = await wait_for(
            pilot, lambda: [m for m in messages(app) if m.startswith("database unreachable:")]
        )
        assert len(notices) == 1, messages(app)
        assert "cannot connect to the PostgreSQL server at 127.0.0.1:5432" in notices[0]
        assert "sqlalche.me" not in notices[0] and "SELECT" not in notices[0]
        # The list keeps what it read before the outage.
        assert "Autumn Sale" in screen_text(app) and "North Push" in screen_text(app)
        # It counts the time, and does not say it again on every poll.
        await wait_for(
            pilot,
            lambda: re.search(r"DATABASE UNREACHABLE for [1-9]\d*s", header(app)),
            what=lambda: header(app),
        )
        assert sum(m.startswith("database unreachable:") for m in messages(app)) == 1

        # An action meets the outage: its notice names the server, not "unexpected error".
        app.screen.query_one("#campaigns").move_cursor(row=0)
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: any(m.startswith("Refresh segment: failed:") for m in messages(app)),
            what=lambda: messages(app),
        )
        failed = next(m for m in messages(app) if m.startswith("Refresh segment"))
        assert "cannot connect to the PostgreSQL server at 127.0.0.1:5432" in failed

        own_database.restore()
        await answered_again(pilot, app)
        # Reads work again: a change made meanwhile by someone else shows up.
        engine = sa.create_engine(own_database.url)
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE campaign SET name = 'Autumn Sale 2' WHERE name = 'Autumn Sale'")
            )
        engine.dispose()
        await wait_for(pilot, lambda: "Autumn Sale 2" in screen_text(app))


async def test_a_read_that_gets_no_answer_is_said_until_it_does(postgres_url):
    """A real hang: another session holds an exclusive lock on the campaigns table (as a
    migration or VACUUM FULL would), so the console's read waits with no answer, as it
    does for a frozen server or a network that drops packets."""
    build_workspace(postgres_url).engine.dispose()
    app = CampaignConsole(postgres_url, OPERATOR, embed_scheduler=False, poll_interval=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CampaignsScreen) and app.screen.shown)
        locker = sa.create_engine(postgres_url)
        conn = locker.connect()
        lock = conn.begin()
        try:
            conn.execute(sa.text("LOCK TABLE campaign IN ACCESS EXCLUSIVE MODE"))
            await wait_for(
                pilot,
                lambda: "DATABASE NOT ANSWERING for" in header(app),
                what=lambda: header(app),
            )
            assert "scheduler:" not in header(app)  # not "heard 1s ago" while none is heard
            assert "Autumn Sale" in screen_text(app)  # what was read stays on screen
        finally:
            lock.rollback()
            conn.close()
            locker.dispose()
        await answered_again(pilot, app)
        assert not any(m.startswith("database unreachable") for m in messages(app))
