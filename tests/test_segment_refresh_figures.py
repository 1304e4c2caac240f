"""Issue 13 §6 leftovers: a segment shows how long its last refresh took, and a cron
segment its next refresh time, computed as the scheduler's CronTrigger fires it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from cli_helpers import Cli, r10_workspace

from scheduler.mailings import cron_trigger
from store.mailings import next_cron_time

EXPRESSIONS = [
    "0 * * * *",
    "*/15 * * * *",
    "30 9 * * *",
    "0 10 * * 1",
    "0 18 * * 5",
    "5 4 1 * *",
    "0 0 29 2 *",
    "0 0 31 * *",
    "*/7 3-5 * * *",
    "0 12 * jan,jul *",
    "0 0 * * 0",
    "0 0 * * 7",
    "15 14 1-7 * *",
    "0 9 * * 1-5",
    "0 9 * * 5-7",
    "*/20 */3 */2 * *",
    "59 23 31 12 *",
    "0 0 1 */3 *",
    "0 0 5/10 * *",
    "10-50/20 * * * *",
]


def test_next_cron_time_is_the_scheduler_crontriggers_next_fire_time():
    rng = random.Random(13)
    for expr in EXPRESSIONS:
        for _ in range(25):
            after = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
                minutes=rng.randrange(2 * 365 * 24 * 60), seconds=rng.randrange(60)
            )
            start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
            expected = cron_trigger(expr).get_next_fire_time(None, start)
            assert next_cron_time(expr, after) == expected, (expr, after)
    assert next_cron_time("0 0 30 2 *", datetime(2026, 1, 1, tzinfo=UTC)) is None  # never


pytestmark = pytest.mark.usefixtures("no_user_config")


def test_segment_show_gives_the_last_refresh_duration_and_a_cron_segments_next_refresh(
    db_url, capsys, tmp_path
):
    cli = Cli(db_url, capsys, tmp_path)
    r10_workspace(cli)
    cli.ok("segment", "create", "moscow", "--database", "main", "--rule", "region = 'Moscow'", "--cron", "0 * * * *")  # fmt: skip
    before = cli.ok("segment", "show", "moscow", "--json").json
    assert before["last_refresh"] is None
    assert before["next_refresh_at"] is not None  # due at the first hour after creation
    cli.ok("segment", "refresh", "moscow")
    shown = cli.ok("segment", "show", "moscow", "--json").json
    last = shown["last_refresh"]
    assert last["entered"] == 34 and last["seconds"] is not None and last["seconds"] >= 0
    refreshed = datetime.fromisoformat(last["at"])
    assert datetime.fromisoformat(shown["next_refresh_at"]) == next_cron_time(
        "0 * * * *", refreshed
    )
    assert " in " in cli.ok("segment", "show", "moscow").out  # "Refreshed … in 0.012s: …"
