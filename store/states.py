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
