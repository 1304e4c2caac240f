"""Issue 10 item 2: every store operation audits its own outcome, ok or refused (with the
reason), under one action id per operation, whoever called it; the clients write no
audit rows. Both backends (`engine` fixture)."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from sqlmodel import Session
from test_builds import ACTOR, add_profiles, make_db, make_segment, new_campaign, r10_rows

from store import builds, campaigns, imports, mailings, profiles, segments
from store.actors import Actor
from store.db import transaction
from store.errors import DomainError, ReadOnlyError
from store.models import AuditEntry

VIEWER = Actor(user="bob", role="read_only", origin="local")


def entries_after(engine, last_id: int) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(
            s.scalars(sa.select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id))
        )


def last_id(engine) -> int:
    with Session(engine) as s:
        return s.scalar(sa.select(sa.func.max(AuditEntry.id))) or 0


def csv(*external_ids: str) -> io.BytesIO:
    return io.BytesIO(("external_id\n" + "".join(f"{e}\n" for e in external_ids)).encode())


@pytest.fixture
def world(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    with transaction(engine) as s:
        segments.create_segment(s, ACTOR, "static", database=profiles.get_database(s, "db"))
        segments.create_segment(
            s, ACTOR, "dyn", database=profiles.get_database(s, "db"), rule="region = 'Moscow'"
        )
    new_campaign(engine, name="active", lcg_percent="15")
    new_campaign(engine, name="draft", activate=False, run=False, lcg_percent="15")
    with transaction(engine) as s:
        mailings.create_mailing(
            s, ACTOR, "weekly", campaigns.get_campaign(s, "active"), "regular", cron="0 9 * * 1"
        )
    return engine


def _campaign(name):
    return lambda s: campaigns.get_campaign(s, name)


# (action id, target type, operation(session, actor)) — each is run refused (read-only
# actor) and then ok (operator); both outcomes must carry the same action id.
OPERATIONS = [
    ("database.create", "database", lambda s, a: profiles.create_database(s, a, "d2", "x:int")),
    (
        "profiles.import",
        "database",
        lambda s, a: imports.import_profiles(s, a, profiles.get_database(s, "db"), csv("N1")),
    ),
    ("segment.create", "segment", lambda s, a: segments.create_segment(s, a, "s2")),
    (
        "segment.add",
        "segment",
        lambda s, a: imports.apply_segment_file(
            s, a, segments.get_segment(s, "static"), "add", csv("P001"), database=None
        ),
    ),
    (
        "segment.remove",
        "segment",
        lambda s, a: segments.remove_profiles(s, a, segments.get_segment(s, "static"), [1]),
    ),
    ("segment.refresh", "segment", lambda s, a: segments.refresh(s, a, segments.get_segment(s, "dyn"))),
    (
        "campaign.create",
        "campaign",
        lambda s, a: campaigns.create_campaign(
            s, a, "new", profiles.get_database(s, "db"), segments.get_segment(s, "seg")
        ),
    ),
    ("campaign.activate", "campaign", lambda s, a: campaigns.activate(s, a, _campaign("draft")(s))),
    (
        "campaign.lcg_edit",
        "campaign",
        lambda s, a: campaigns.edit_lcg(s, a, _campaign("active")(s), percent="12"),
    ),
    (
        "campaign.lcg_edit",  # enabling/disabling is an LCG edit too: one action id
        "campaign",
        lambda s, a: campaigns.set_lcg_enabled(s, a, _campaign("active")(s), False),
    ),
    (
        "mailing.create",
        "mailing",
        lambda s, a: mailings.create_mailing(
            s, a, "t2", _campaign("active")(s), "trigger", event="buy"
        ),
    ),
    (
        "mailing.pause",
        "mailing",
        lambda s, a: mailings.set_manual_pause(s, a, mailings.get_mailing(s, "weekly"), True),
    ),
    (
        "mailing.resume",
        "mailing",
        lambda s, a: mailings.set_manual_pause(s, a, mailings.get_mailing(s, "weekly"), False),
    ),
    (
        "mailing.reschedule",
        "mailing",
        lambda s, a: mailings.reschedule(s, a, mailings.get_mailing(s, "weekly"), cron="0 10 * * 1"),
    ),
    (
        "build.cancel",
        "build",
        lambda s, a: builds.cancel_build(
            s, a, builds.queue_build(s, _campaign("active")(s), "recalculation", ACTOR)
        ),
    ),
    ("mailing.stop", "mailing", lambda s, a: mailings.stop_mailing(s, a, mailings.get_mailing(s, "weekly"))),
    ("campaign.complete", "campaign", lambda s, a: campaigns.complete(s, a, _campaign("active")(s))),
]  # fmt: skip


def test_every_operation_audits_ok_and_refused_under_one_action_id(world):
    engine = world
    for action, target_type, operation in OPERATIONS:
        before = last_id(engine)
        with pytest.raises(ReadOnlyError), transaction(engine) as s:
            operation(s, VIEWER)
        with transaction(engine) as s:
            operation(s, ACTOR)
        refused, *ok = entries_after(engine, before)
        assert (refused.action, refused.outcome, refused.actor) == (action, "refused", "bob")
        assert refused.target_type == target_type and refused.target_name, action
        assert "read-only" in refused.details["reason"]
        assert [(e.action, e.outcome) for e in ok] == [(action, "ok")], action
        assert ok[0].target_type == target_type


def test_a_refusal_after_writes_is_audited_once_and_the_writes_roll_back(world):
    """apply_segment_file stages the CSV (writes), then refuses an unknown external id: the
    change rolls back and exactly one refusal is written after it, on either backend."""
    engine = world
    before = last_id(engine)
    with pytest.raises(DomainError, match="NOPE"), transaction(engine) as s:
        imports.apply_segment_file(
            s, ACTOR, segments.get_segment(s, "static"), "replace", csv("P001", "NOPE")
        )
    [refusal] = entries_after(engine, before)
    assert (refusal.action, refusal.outcome, refusal.target_name) == (
        "segment.replace",
        "refused",
        "static",
    )
    with Session(engine) as s:
        assert segments.get_segment(s, "static").member_count == 0


def test_a_refusal_caught_by_the_caller_is_still_audited_when_it_commits(world):
    engine = world
    before = last_id(engine)
    with transaction(engine) as s:
        with pytest.raises(DomainError):
            campaigns.activate(s, ACTOR, _campaign("active")(s))
        mailings.set_manual_pause(s, ACTOR, mailings.get_mailing(s, "weekly"), True)
    assert [(e.action, e.outcome) for e in entries_after(engine, before)] == [
        ("mailing.pause", "ok"),
        ("campaign.activate", "refused"),
    ]


def test_operations_return_the_builds_they_queued(world):
    """Clients need not re-query for what an operation queued (issue 10 item 2)."""
    engine = world
    with transaction(engine) as s:
        build = campaigns.activate(s, ACTOR, _campaign("draft")(s))
        assert build.reason == "activation" and build.status == "queued"
    with transaction(engine) as s:
        # "seg" is the audience of both active campaigns; a newcomer queues an incremental
        # build per active campaign (R2c), and the result names them.
        db_id = profiles.get_database(s, "db").id
        add_profiles(s, db_id, [("NEW1", "Moscow", 1, False)])
        change = imports.apply_segment_file(
            s, ACTOR, segments.get_segment(s, "seg"), "add", csv("NEW1")
        )
        assert change.added == 1
        assert sorted(campaigns.get_campaign(s, n).id for n in ("active", "draft")) == sorted(
            b.campaign_id for b in change.builds
        )
        result = segments.refresh(s, ACTOR, segments.get_segment(s, "dyn"))
        assert result.builds == ()  # no campaign on "dyn"
