"""APScheduler service: segment refreshes, mailing schedules, audience builds."""
