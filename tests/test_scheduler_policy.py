"""The schedule and misfire policy as pure functions (scheduler/mailings.py, R5, R8).

Which job each mailing row wants, and when a resumed broadcast fires. No database.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from scheduler.mailings import cron_trigger, plan_mailing, regular_fire_time
from store.errors import ValidationError
from store.mailings import MailingSchedule, crontab_fields, validate_cron

NOW = datetime(2026, 3, 2, 9, 41, 27, 500000, tzinfo=UTC)
BROADCAST = MailingSchedule(
    mailing_id=1,
    name="launch",
    kind="broadcast",
    status="active",
    campaign_status="active",
    send_at=NOW + timedelta(hours=1),
    cron=None,
    manual_paused=False,
    paused_by_build_id=None,
    version=1,
    next_run_at=None,
    fired=False,
)
REGULAR = replace(
    BROADCAST, mailing_id=2, name="weekly", kind="regular", send_at=None, cron="0 10 * * 1"
)


def test_a_broadcast_fires_at_its_send_at():
    plan = plan_mailing(BROADCAST)
    trigger = plan.trigger(NOW)
    assert isinstance(trigger, DateTrigger) and trigger.run_date == BROADCAST.send_at
    assert plan.scheduled_for == BROADCAST.send_at and not plan.paused


def test_a_broadcast_whose_time_passed_fires_once_now():
    late = replace(BROADCAST, send_at=NOW - timedelta(days=2))
    plan = plan_mailing(late)
    assert plan.trigger(NOW).run_date == NOW
    assert plan.scheduled_for == late.send_at  # the run stays keyed on the original time
    assert plan_mailing(replace(late, fired=True)) is None  # …and never twice


def test_a_regular_mailing_follows_its_cron_in_utc_with_crontab_weekdays():
    # 2026-03-02 is a Monday; crontab's weekday 1 is Monday (APScheduler 3's own 1 is Tuesday).
    trigger = plan_mailing(REGULAR).trigger(NOW)
    assert isinstance(trigger, CronTrigger)
    assert trigger.get_next_fire_time(None, NOW) == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("*", "*"),
        ("1", "mon"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1/2", "mon,wed,fri"),
        ("mon,WED,6", "mon,wed,sat"),
        ("0-6", "*"),
        ("sun-sat", "*"),
    ],
)
def test_crontab_weekdays_keep_their_crontab_meaning(weekday, expected):
    assert crontab_fields(f"0 10 * * {weekday}")["day_of_week"] == expected


def test_each_weekday_number_fires_on_the_crontab_day():
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    for number in range(8):
        fire = cron_trigger(f"0 10 * * {number}").get_next_fire_time(None, monday)
        assert fire.isoweekday() % 7 == number % 7  # isoweekday: Monday 1 … Sunday 7


@pytest.mark.parametrize(
    "expr",
    ["0 10 1 * 1", "0 10 * * 8", "0 10 * * 5-1", "0 10 * * x", "0 10 * *", "61 * * * *"],
)
def test_cron_expressions_that_would_mislead_are_refused(expr):
    with pytest.raises(ValidationError, match="bad cron expression"):
        validate_cron(expr)


@pytest.mark.parametrize("schedule", [BROADCAST, REGULAR], ids=["broadcast", "regular"])
@pytest.mark.parametrize(
    "pause", [{"manual_paused": True}, {"paused_by_build_id": 42}], ids=["manual", "build"]
)
def test_a_paused_mailing_keeps_a_paused_job_R5(schedule, pause):
    plan = plan_mailing(replace(schedule, **pause))
    assert plan is not None and plan.paused
    assert plan.key == plan_mailing(schedule).key  # same job, only paused


@pytest.mark.parametrize(
    "change",
    [
        {"campaign_status": "completed"},  # R8
        {"campaign_status": "draft"},
        {"status": "sent"},
        {"status": "stopped"},
        {"kind": "trigger"},
    ],
)
def test_mailings_that_must_not_fire_have_no_job(change):
    assert plan_mailing(replace(BROADCAST, **change)) is None
    assert plan_mailing(replace(REGULAR, **change)) is None


def test_a_regular_fire_belongs_to_the_minute_it_was_scheduled_for():
    assert regular_fire_time(NOW) == datetime(2026, 3, 2, 9, 41, tzinfo=UTC)
