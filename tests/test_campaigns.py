"""Campaign lifecycle (R2, R3, R5–R8): validations, refusals that change nothing,
the optimistic version check, audit entries. Both backends (`engine` fixture)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session
from test_builds import (
    ACTOR,
    edit,
    get,
    make_db,
    make_segment,
    new_campaign,
    r10_rows,
)

from store import builds, campaigns, profiles, segments
from store.actors import Actor
from store.db import transaction
from store.errors import (
    ConflictError,
    InvalidStateError,
    ReadOnlyError,
    ValidationError,
)
from store.models import AuditEntry, Campaign

VIEWER = Actor(user="bob", role="read_only")
TABLES = (
    "campaign",
    "campaign_member",
    "campaign_stratum",
    "audience_build",
    "audit_log",
    "mailing",
    "profile_event",
    "gcg_exception",
    "segment_member",
)


def snapshot(engine):
    with engine.connect() as conn:
        return {
            t: sorted(map(repr, conn.execute(sa.text(f"SELECT * FROM {t}")).all())) for t in TABLES
        }


def unchanged_but_refusals(engine, before, *actions):
    """Nothing changed except one refused audit entry per action, written by the store
    itself (issue 10 item 2), in this order."""
    after = snapshot(engine)
    assert {t: v for t, v in after.items() if t != "audit_log"} == {
        t: v for t, v in before.items() if t != "audit_log"
    }
    with Session(engine) as s:
        new = list(
            s.scalars(
                sa.select(AuditEntry).order_by(AuditEntry.id).offset(len(before["audit_log"]))
            )
        )
    assert [(e.action, e.outcome) for e in new] == [(a, "refused") for a in actions]
    assert all(e.details["reason"] for e in new)


@pytest.fixture
def world(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, name="draft", activate=False, run=False, lcg_percent="15")
    new_campaign(engine, name="active", lcg_percent="15", lcg_strata=["region"])
    new_campaign(engine, name="done", lcg_percent="15")
    with transaction(engine) as s:
        campaigns.complete(s, ACTOR, campaigns.get_campaign(s, "done"))
    return engine


def _create(**kw):
    def op(s):
        args = dict(kw)
        return campaigns.create_campaign(
            s,
            args.pop("actor", ACTOR),
            args.pop("name", "new"),
            profiles.get_database(s, "db"),
            segments.get_segment(s, "seg"),
            **args,
        )

    return op


def _edit(name, actor=ACTOR, **kw):
    return lambda s: campaigns.edit_lcg(s, actor, campaigns.get_campaign(s, name), **kw)


REFUSALS = [
    ("percent not a number", _create(lcg_percent="abc"), ValidationError),
    ("percent 0", _create(lcg_percent="0"), ValidationError),
    ("percent 100", _create(lcg_percent=100), ValidationError),
    ("percent three decimals", _create(lcg_percent="5.255"), ValidationError),
    ("limit 0", _create(lcg_percent="5", lcg_limit=0), ValidationError),
    ("limit not whole", _create(lcg_percent="5", lcg_limit="2.5"), ValidationError),
    ("unknown strata field", _create(lcg_percent="5", lcg_strata=["nope"]), ValidationError),
    ("float strata field", _create(lcg_percent="5", lcg_strata=["ltv"]), ValidationError),
    ("limit without percent", _create(lcg_limit=3), ValidationError),
    ("duplicate name", _create(name="active"), ValidationError),
    ("seed out of range", _create(seed=2**63), ValidationError),
    ("read-only create", _create(actor=VIEWER), ReadOnlyError),
    (
        "activate active",
        lambda s: campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "active")),
        InvalidStateError,
    ),
    (
        "activate completed",
        lambda s: campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "done")),
        InvalidStateError,
    ),
    (
        "activate read-only",
        lambda s: campaigns.activate(s, VIEWER, campaigns.get_campaign(s, "draft")),
        ReadOnlyError,
    ),
    (
        "activate stale version",
        lambda s: campaigns.activate(
            s, ACTOR, campaigns.get_campaign(s, "draft"), expected_version=0
        ),
        ConflictError,
    ),
    ("edit percent text", _edit("active", percent="five"), ValidationError),
    ("edit percent 150", _edit("active", percent="150"), ValidationError),
    ("edit percent negative", _edit("active", percent="-1"), ValidationError),
    ("edit limit -3", _edit("active", limit=-3), ValidationError),
    ("edit strata unknown", _edit("active", strata=["region", "zzz"]), ValidationError),
    ("edit strata float", _edit("active", strata=["ltv"]), ValidationError),
    ("edit strata twice", _edit("active", strata=["region", "region"]), ValidationError),
    ("edit nothing", _edit("active", percent="15"), ValidationError),
    ("edit completed", _edit("done", percent="10"), InvalidStateError),
    ("edit read-only", _edit("active", actor=VIEWER, percent="10"), ReadOnlyError),
    ("edit stale version", _edit("active", percent="10", expected_version=0), ConflictError),
    ("toggle completed", _edit("done", enabled=False), InvalidStateError),
    (
        "complete completed",
        lambda s: campaigns.complete(s, ACTOR, campaigns.get_campaign(s, "done")),
        InvalidStateError,
    ),
    (
        "complete read-only",
        lambda s: campaigns.complete(s, VIEWER, campaigns.get_campaign(s, "active")),
        ReadOnlyError,
    ),
    (
        "complete stale version",
        lambda s: campaigns.complete(
            s, ACTOR, campaigns.get_campaign(s, "active"), expected_version=99
        ),
        ConflictError,
    ),
]


def test_every_refusal_changes_nothing(world):
    """Issue 3 item 1: each refusal raises its typed error and writes nothing, even when
    the caller commits its session afterwards."""
    engine = world
    for label, op, error in REFUSALS:
        before = snapshot(engine)
        with Session(engine) as s:
            with pytest.raises(error) as info:
                op(s)
                pytest.fail(f"{label}: not refused")
            s.commit()
        assert str(info.value), label
        verb = label.split()[0]
        action = {
            "activate": "campaign.activate",
            "edit": "campaign.lcg_edit",
            "toggle": "campaign.lcg_edit",
            "complete": "campaign.complete",
        }.get(verb, "campaign.create")
        unchanged_but_refusals(engine, before, action)


def test_strata_cap_counts_distinct_combinations(engine):
    """More than MAX_STRATA distinct strata over the audience is refused (create and edit)."""
    rows = [(f"P{i:04d}", "Moscow", i, False) for i in range(campaigns.MAX_STRATA + 1)]
    db_id = make_db(engine, rows)
    make_segment(engine, db_id=db_id)
    new_campaign(engine, name="ok", lcg_percent="5", lcg_strata=["region"])
    before = snapshot(engine)
    with Session(engine) as s:
        with pytest.raises(ValidationError, match="1001 strata"):
            _create(lcg_percent="5", lcg_strata=["int_field"])(s)
        with pytest.raises(ValidationError, match="at most 1000"):
            _edit("ok", strata=["region", "int_field"])(s)
        s.commit()
    unchanged_but_refusals(engine, before, "campaign.create", "campaign.lcg_edit")


def test_concurrent_edit_is_reported_not_lost(engine):
    """Optimistic check: two sessions read version v; the second writer gets ConflictError
    from the atomic UPDATE ... WHERE version = v, and its change is not applied."""
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15")
    stale = get(engine)  # detached, as a console screen holds it
    with Session(engine) as s1, Session(engine) as s2:
        c1 = campaigns.get_campaign(s1, "c")
        c2 = campaigns.get_campaign(s2, "c")
        v = c1.version
        campaigns.edit_lcg(s1, ACTOR, c1, percent="10")
        s1.commit()
        with pytest.raises(ConflictError, match="changed by someone else"):
            campaigns.edit_lcg(s2, ACTOR, c2, percent="20")
        s2.rollback()
    c = get(engine)
    assert c.lcg_percent_bp == 1000 and c.version == v + 1
    # A detached, stale object from another session is also caught.
    with pytest.raises(ConflictError):
        edit_with(engine, stale, percent="30")


def edit_with(engine, campaign, **kw):
    with transaction(engine) as s:
        return campaigns.edit_lcg(s, ACTOR, campaign, **kw)


def test_every_change_bumps_version_and_is_audited(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    c = new_campaign(engine, activate=False, run=False, lcg_percent="5.25")
    assert (c.version, c.lcg_percent_bp, c.status, c.lcg_enabled) == (1, 525, "draft", True)
    assert 0 <= c.seed < 2**63
    assert edit(engine, limit=3) is None  # a draft only stores settings
    with transaction(engine) as s:
        b = campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "c"), expected_version=2)
        assert b.reason == "activation" and b.pauses_mailings
    builds.run_pending(engine)
    assert edit(engine, strata=["region", "int_field"]).reason == "recalculation"
    with transaction(engine) as s:
        b = campaigns.set_lcg_enabled(s, ACTOR, campaigns.get_campaign(s, "c"), False)
        assert b.reason == "lcg_disable"
    builds.run_pending(engine)
    assert edit(engine, percent="7").reason == "recalculation"  # R6, LCG off: re-key only
    builds.run_pending(engine)
    with transaction(engine) as s:
        campaigns.complete(s, ACTOR, campaigns.get_campaign(s, "c"))
    c = get(engine)
    assert c.version == 7 and c.status == "completed"
    with Session(engine) as s:
        actions = list(
            s.scalars(
                sa.select(AuditEntry.action)
                .where(AuditEntry.target_type == "campaign")
                .order_by(AuditEntry.id)
            )
        )
    assert actions == [
        "campaign.create",
        "campaign.lcg_edit",
        "campaign.activate",
        "campaign.lcg_edit",
        "campaign.lcg_edit",
        "campaign.lcg_edit",
        "campaign.complete",
    ]


def test_preview_writes_nothing_and_matches_build(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15")
    before = snapshot(engine)
    with Session(engine) as s:
        p = campaigns.preview_lcg(
            s,
            campaigns.get_campaign(s, "c"),
            percent="15",
            limit=12,
            strata=["int_field", "region"],
        )
        s.commit()
    assert snapshot(engine) == before
    assert (p.target, p.unlimited_target, p.limit_binds) == (12, 15, True)
    assert [r.quota for r in p.rows] == [1, 1, 1, 3, 3, 3]  # keys sorted: 20/Kazan, Moscow, SPb
    assert p.warnings and p.warnings[0]["code"] == "stratification_violation"
    with Session(engine) as s, pytest.raises(ValidationError):
        campaigns.preview_lcg(s, campaigns.get_campaign(s, "c"), percent="0", strata=[])
    # Preview of a draft: its pending audience.
    new_campaign(engine, name="d", activate=False, run=False)
    with Session(engine) as s:
        p = campaigns.preview_lcg(s, campaigns.get_campaign(s, "d"), percent="15", strata=[])
    assert (p.cohort_size, p.target) == (100, 15)


def test_create_refuses_dynamic_segment_of_other_database(engine):
    make_db(engine, r10_rows())
    with transaction(engine) as s:
        other = profiles.create_database(s, ACTOR, "other", [("region", "text")])
        segments.create_segment(s, ACTOR, "dyn", database=other, rule="region = 'x'")
    with Session(engine) as s, pytest.raises(ValidationError, match="another database"):
        campaigns.create_campaign(
            s, ACTOR, "x", profiles.get_database(s, "db"), segments.get_segment(s, "dyn")
        )
    with Session(engine) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0
