"""Every state and kind the schema stores, defined once (SPEC vocabulary).

Each is a `StrEnum`: a member is the very string stored in the database (CHECK
constraints in store/models.py admit exactly these values), so it compares equal to
what a query returns and prints as itself in JSON and tables. Import these instead of
writing the strings or copying tuples of them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from store.errors import InvalidStateError


class CampaignStatus(StrEnum):
    DRAFT = "draft"  # never activated ("inactive", R3)
    ACTIVE = "active"
    COMPLETED = "completed"  # terminal and read-only (R8)


class BuildStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A build that is waiting or running: at most one runs per campaign (R2).
OPEN_BUILD_STATUSES = (BuildStatus.QUEUED, BuildStatus.RUNNING)
# A build that has ended, whatever the outcome; it never runs again.
ENDED_BUILD_STATUSES = (BuildStatus.DONE, BuildStatus.FAILED, BuildStatus.CANCELLED)


class BuildReason(StrEnum):
    ACTIVATION = "activation"  # R2a
    RECALCULATION = "recalculation"  # R2b, R6
    INCREMENTAL = "incremental"  # R2c
    LCG_DISABLE = "lcg_disable"  # R7
    EXPANSION = "expansion"  # R2d, R11


# Builds that revisit every current member, not only newcomers: they re-key strata and
# move surplus control members to test (R6, R7), and scheduled mailings are paused while
# they run (R5, R6). An activation with the LCG on pauses mailings too (store/builds.py).
RECALCULATING_REASONS = (BuildReason.RECALCULATION, BuildReason.LCG_DISABLE)


class MailingKind(StrEnum):
    BROADCAST = "broadcast"
    REGULAR = "regular"
    TRIGGER = "trigger"  # R11b: never paused by builds (R5)


# Mailings that run on a schedule, which builds pause (R5).
SCHEDULED_MAILING_KINDS = (MailingKind.BROADCAST, MailingKind.REGULAR)


class MailingStatus(StrEnum):
    ACTIVE = "active"
    SENT = "sent"  # a broadcast that fired
    STOPPED = "stopped"  # its campaign completed (R8) or it was stopped for good


class SuppressionReason(StrEnum):
    """R11b: why a trigger mailing sent nothing to a profile for one event."""

    CONTROL = "control"  # a control member of the campaign never receives anything
    GCG = "gcg"  # not a member, held out by the database's GCG (R1, R11a)
    NOT_MEMBER = "not_member"  # not in the campaign audience (never, or no longer)
    NOT_IN_MAILING_SEGMENT = "not_in_mailing_segment"  # a test member outside its segment
    CAMPAIGN_NOT_ACTIVE = "campaign_not_active"  # a draft, or completed (R8)
    MAILING_PAUSED = "mailing_paused"  # paused by an operator, or stopped


class MailingRunStatus(StrEnum):
    RUNNING = "running"  # claimed; a crash leaves it for the next scheduler to finish
    DONE = "done"
    SKIPPED = "skipped"  # a regular mailing's occurrence missed while it could not send


class Group(StrEnum):
    TEST = "test"
    CONTROL = "control"


class MemberSource(StrEnum):
    """How a profile entered a campaign audience."""

    ACTIVATION = "activation"
    SEGMENT = "segment"
    EXPANSION = "expansion"


class SegmentKind(StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"


class ProfileEventKind(StrEnum):
    """What a `profile_event` row records: the card events no other row carries (R12).

    Two concepts, one list each. This one is *stored*: `profile_event.kind` admits
    exactly these values (CHECK ck_profile_event_kind, revision 0007). `CardEventKind`
    below is what a profile card *shows*: these plus the events derived from other rows
    (store/history.py). `entered_segment`, `delivered`, `suppressed` and the others are
    never written to `profile_event`; admitting them would let a card show one event
    twice (once derived, once logged), so they are not in this enum and its CHECK.
    """

    # R3: in a draft's pending audience at creation, not in the segment at activation.
    # Every other `left_campaign` is the close of a campaign_member interval (R4, R8).
    LEFT_CAMPAIGN = "left_campaign"
    MOVED_TO_TEST = "moved_to_test"  # R6 surplus control members, R7 LCG removed
    ENTERED_GCG = "entered_gcg"  # R11a: `gcg add`, or the percent chose it (`gcg set`)
    LEFT_GCG = "left_gcg"  # R11a: `gcg remove`, or the percent released it


class CardEventKind(StrEnum):
    """Every kind of event on a profile card (R12), with the rows it comes from.

    The card's vocabulary, never stored as such: each event is derived from the row
    named beside it. The kinds that `profile_event` stores take their values from
    `ProfileEventKind`, so each string is written once.
    """

    ENTERED_SEGMENT = "entered_segment"  # segment_member.entered_at (R3, R4)
    LEFT_SEGMENT = "left_segment"  # segment_member.left_at (R3, R4)
    ENTERED_CAMPAIGN = "entered_campaign"  # campaign_member.joined_at (R3, R4, R11)
    # campaign_member.left_at (R4, R8), or a profile_event (R3)
    LEFT_CAMPAIGN = ProfileEventKind.LEFT_CAMPAIGN.value
    MOVED_TO_TEST = ProfileEventKind.MOVED_TO_TEST.value  # profile_event (R6, R7)
    ENTERED_GCG = ProfileEventKind.ENTERED_GCG.value  # profile_event (R11a)
    LEFT_GCG = ProfileEventKind.LEFT_GCG.value  # profile_event (R11a)
    DELIVERED = "delivered"  # delivery: a mailing sent to it (a trigger's with its event)
    SUPPRESSED = "suppressed"  # suppression: a trigger mailing sent nothing (R11b)


class _Named(Protocol):  # a Campaign; store.models imports this module, not the reverse
    name: str
    status: str


def check_not_completed(campaign: _Named, what: str | None = None) -> None:
    """R8: a completed campaign is read-only; `what` says what was refused."""
    if campaign.status == CampaignStatus.COMPLETED:
        raise InvalidStateError(
            f"campaign {campaign.name!r} is completed and read-only (R8)"
            + (f"; cannot {what}" if what else "")
        )


# The state checks of campaign actions: the store's operations run them, and the console
# runs them on the selected row before asking the operator to confirm.


def check_can_activate(campaign: _Named) -> None:
    """R2a: only a draft is activated; R8: a completed campaign is read-only."""
    check_not_completed(campaign, "activate it")
    if campaign.status != CampaignStatus.DRAFT:
        raise InvalidStateError(f"campaign {campaign.name!r} is already {campaign.status}")


def check_can_change_lcg(campaign: _Named) -> None:
    """R8: the LCG of a completed campaign no longer changes."""
    check_not_completed(campaign, "change its LCG")


def check_can_complete(campaign: _Named) -> None:
    """R8: completing is terminal."""
    check_not_completed(campaign, "complete it again")
