"""Who a mailing run reaches, and the deliveries the default sender records.

Recipients are the campaign's *open* members in group `test` (never `control`: a control
member never receives anything), intersected with the mailing's own segment when it has
one. Membership is already scoped to the campaign's profile database and GCG rules (R1),
so nothing else is filtered here. Everything is one set-based statement.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from store.models import (
    CampaignMember,
    Delivery,
    Mailing,
    MailingRun,
    SegmentMember,
    UTCDateTime,
)

_member = CampaignMember.__table__
_segment_member = SegmentMember.__table__
_delivery = Delivery.__table__


def recipients_query(mailing: Mailing) -> sa.Select:
    """SELECT profile_id of the mailing's recipients right now (test group only)."""
    query = sa.select(_member.c.profile_id).where(
        _member.c.campaign_id == mailing.campaign_id,
        _member.c.left_at.is_(None),
        _member.c.group == "test",
    )
    if mailing.segment_id is not None:
        query = query.where(
            sa.exists().where(
                _segment_member.c.segment_id == mailing.segment_id,
                _segment_member.c.profile_id == _member.c.profile_id,
                _segment_member.c.left_at.is_(None),
            )
        )
    return query


def count_recipients(session: Session, mailing: Mailing) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(recipients_query(mailing).subquery())
    )


def record_deliveries(
    session: Session, run: MailingRun, mailing: Mailing, sent_at: datetime
) -> int:
    """INSERT ... SELECT one delivery per recipient of `run`; returns how many were recorded.

    Unique per (run, profile): a run records each recipient once.
    """
    recipients = recipients_query(mailing).subquery()
    select = sa.select(
        sa.literal(run.id, sa.Integer),
        sa.literal(mailing.id, sa.Integer),
        sa.literal(mailing.campaign_id, sa.Integer),
        recipients.c.profile_id,
        sa.literal(sent_at, UTCDateTime()),
    )
    session.execute(
        sa.insert(_delivery).from_select(
            ["run_id", "mailing_id", "campaign_id", "profile_id", "sent_at"], select
        )
    )
    # rowcount of INSERT ... SELECT is not reliable on every driver: count the run's rows.
    return deliveries_of_run(session, run.id)


def deliveries_of_profile(session: Session, profile_id: int) -> list[Delivery]:
    """A profile's deliveries, oldest first (the `delivered` events of its card)."""
    return list(
        session.scalars(
            sa.select(Delivery)
            .where(Delivery.profile_id == profile_id)
            .order_by(Delivery.sent_at, Delivery.id)
        )
    )


def deliveries_of_run(session: Session, run_id: int) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(_delivery).where(_delivery.c.run_id == run_id)
    )
