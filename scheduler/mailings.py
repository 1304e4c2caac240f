"""Mailing runs: when a mailing fires, whom it reaches, and the pause/misfire policy.

Schedule (the job a mailing gets, see `plan_mailing`):

* broadcast: one `DateTrigger` at `send_at`; trigger mailings get no job (event-driven);
* regular: a UTC `CronTrigger` of its crontab expression (`cron_trigger`: crontab's
  weekday numbering, 0 = Sunday, which APScheduler 3's `from_crontab` does not keep);
* a mailing is *scheduled* while it is active, its campaign is active, and it is not paused;
  a paused mailing (manual pause, or `paused_by_build_id` during an LCG build, R5/R6) is a
  paused APScheduler job; a sent/stopped mailing or one of a draft/completed campaign (R8)
  has no job.

Misfire policy (what happens to fire times that passed while a mailing could not send,
whether it was paused, its campaign was a draft, or no scheduler was running):

* a broadcast whose `send_at` passed fires **once** as soon as it may send again (on
  resume, on activation, at scheduler start); it is never sent twice, because its run is
  unique per (mailing, send_at);
* a regular mailing **skips** the occurrences it missed and continues with its next
  occurrence after the resume; missed occurrences are not replayed.

Firing (`fire`): claim the run (unique per mailing and scheduled time, in its own
transaction) → R11 audience expansion when enabled (queue an expansion build and wait for
it) → one transaction that re-checks the mailing may still send (not paused, campaign
still active), records the deliveries through the sender and completes the run.
A run claimed by a scheduler that died is finished by the next one (`finish_run`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store import deliveries
from store import mailings as store_mailings
from store.actors import Actor
from store.db import transaction
from store.errors import DomainError, InvalidStateError
from store.mailings import MailingSchedule
from store.models import Campaign, Mailing, MailingRun, utcnow
from store.states import BuildStatus, CampaignStatus, MailingKind, MailingRunStatus, MailingStatus

log = logging.getLogger("scheduler.mailings")

# ----------------------------------------------------------------------------- sender


class Sender(Protocol):
    """Sends one run to its recipients and records a delivery per recipient.

    Called inside the transaction that completes the run: whatever it records commits
    together with the run, or not at all. `recipients` is a SELECT of profile ids (test
    group only, already intersected with the mailing's segment); a sender talking to an
    external service iterates it in batches, and must still record deliveries (the profile
    card shows them). Returns the number of recipients sent to.
    """

    def send(
        self, session: Session, run: MailingRun, mailing: Mailing, sent_at: datetime
    ) -> int: ...


class DatabaseSender:
    """The default sender: one `delivery` row per recipient, set-based (INSERT … SELECT)."""

    def send(self, session: Session, run: MailingRun, mailing: Mailing, sent_at: datetime) -> int:
        return deliveries.record_deliveries(session, run, mailing, sent_at)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class MailingPlan:
    """The job a mailing should have: its trigger key (to compare), paused or not."""

    key: tuple
    paused: bool
    scheduled_for: datetime | None  # a broadcast's send_at; None for regular (per fire)

    def trigger(self, now: datetime):
        if self.key[0] == "broadcast":
            # Misfire policy: a send_at in the past fires once, now.
            return DateTrigger(run_date=max(self.scheduled_for, now), timezone=UTC)
        return cron_trigger(self.key[1])


def cron_trigger(expr: str) -> CronTrigger:
    """A UTC trigger for a crontab expression, weekdays numbered as in crontab (0 = Sunday)."""
    return CronTrigger(**store_mailings.crontab_fields(expr), timezone=UTC)


def plan_mailing(schedule: MailingSchedule) -> MailingPlan | None:
    """The desired job of a mailing, or None when it must have none."""
    if schedule.status != MailingStatus.ACTIVE or schedule.campaign_status != CampaignStatus.ACTIVE:
        return None  # sent, stopped, draft or completed campaign (R8)
    if schedule.kind == MailingKind.BROADCAST:
        if schedule.send_at is None or schedule.fired:
            return None
        return MailingPlan(("broadcast", schedule.send_at), schedule.paused, schedule.send_at)
    if schedule.kind == MailingKind.REGULAR and schedule.cron:
        return MailingPlan(("regular", schedule.cron), schedule.paused, None)
    return None


def regular_fire_time(now: datetime) -> datetime:
    """The occurrence a regular mailing's job is firing for.

    Crontab fields stop at minutes and a job never runs early or more than its misfire
    grace (< 60 s) late, so the occurrence is the current minute.
    """
    return now.astimezone(UTC).replace(second=0, microsecond=0)


# ----------------------------------------------------------------------------- firing

#: Given an expansion build id, make sure it runs and return its final status, or None when
#: the scheduler is stopping (the run stays claimed and is finished by the next scheduler).
ExpansionRunner = Callable[[int], str | None]


@dataclass
class FireResult:
    outcome: str  # "sent" | "skipped" | "not-sendable" | "already-fired" | "interrupted"
    run_id: int | None = None
    recipients: int = 0
    reason: str | None = None


def fire(
    engine: Engine,
    mailing_id: int,
    scheduled_for: datetime,
    *,
    actor: Actor,
    sender: Sender,
    run_expansion: ExpansionRunner,
) -> FireResult:
    """Fire `mailing_id` for `scheduled_for`: claim, expand (R11), deliver."""
    try:
        with transaction(engine) as session:
            run = store_mailings.begin_run(session, mailing_id, scheduled_for)
            run_id = run.id
    except InvalidStateError as refusal:
        outcome = "already-fired" if "already fired" in str(refusal) else "not-sendable"
        return FireResult(outcome, reason=str(refusal))
    except sa.exc.IntegrityError:
        return FireResult("already-fired", reason="another scheduler claimed this firing")
    return finish_run(engine, run_id, actor=actor, sender=sender, run_expansion=run_expansion)


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    actor: Actor,
    sender: Sender,
    run_expansion: ExpansionRunner,
) -> FireResult:
    """Expand the audience when asked (R11), then deliver and complete a claimed run."""
    with Session(engine) as session:
        run = session.get(MailingRun, run_id)
        mailing = session.get(Mailing, run.mailing_id) if run else None
        if run is None or mailing is None or run.status != MailingRunStatus.RUNNING:
            return FireResult("already-fired", run_id, reason="run already finished")
        expand = mailing.expand_audience and mailing.segment_id is not None
    if expand:
        status = _expand(engine, mailing, actor, run_expansion)
        if status is None:
            return FireResult("interrupted", run_id, reason="scheduler stopping")
        if status != BuildStatus.DONE:
            # The test group as it stands is still a valid audience: send to it rather
            # than drop the firing, and say so in the log.
            log.warning(
                "expansion build for mailing %s ended %s; sending to the current test group",
                mailing.name,
                status,
            )
    with transaction(engine) as session:
        reason = store_mailings.lock_if_sendable(session, mailing.id)
        # Read the run only under the lock: a concurrent finisher may have completed it.
        run = session.get(MailingRun, run_id, populate_existing=True)
        if run is None or run.status != MailingRunStatus.RUNNING:
            return FireResult("already-fired", run_id, reason="run already finished")
        if reason is not None:
            store_mailings.abandon_run(session, actor, run, reason)
            outcome = FireResult("skipped", run_id, reason=reason)
        else:
            mailing = session.get(Mailing, run.mailing_id, populate_existing=True)
            sent = sender.send(session, run, mailing, utcnow())
            store_mailings.complete_run(session, actor, run, mailing, sent)
            outcome = FireResult("sent", run_id, recipients=sent)
    log.info(
        "mailing #%s run #%s for %s: %s%s",
        run.mailing_id,
        run_id,
        run.scheduled_for.isoformat(),
        outcome.outcome,
        f" to {outcome.recipients} recipients" if outcome.outcome == "sent" else f" ({reason})",
    )
    return outcome


def _expand(
    engine: Engine, mailing: Mailing, actor: Actor, run_expansion: ExpansionRunner
) -> str | None:
    """R11: queue the expansion build for `mailing` and have it run before the send."""
    from store import builds  # engine-core

    try:
        with transaction(engine) as session:
            campaign = session.get(Campaign, mailing.campaign_id)
            fresh = session.get(Mailing, mailing.id)
            build = builds.queue_build(session, campaign, "expansion", actor, mailing=fresh)
            build_id = build.id
    except DomainError as refusal:  # e.g. the campaign was completed meanwhile (R8)
        log.warning("no audience expansion for mailing %s: %s", mailing.name, refusal)
        return "refused"
    return run_expansion(build_id)
