"""Audience builds (R1–R11) on real SQLite and PostgreSQL (`engine` fixture).

Helpers at the top are reused by tests/test_audience_properties.py and test_campaigns.py.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from store import build_plan, builds, campaigns, lcg, mailings, profiles, segments, validity
from store.actors import Actor
from store.db import transaction
from store.hashing import CURRENT_VERSION, campaign_hash
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    CampaignStratum,
    GcgException,
    Mailing,
    Profile,
    ProfileEvent,
    utcnow,
)

ACTOR = Actor(user="alice", role="operator", origin="local")
FIELDS = [("region", "text"), ("int_field", "int"), ("ltv", "float"), ("signup", "date")]
# R10 worked example: (int_field, region, size)
R10_STRATA = [
    (20, "Moscow", 6),
    (20, "SPb", 7),
    (20, "Kazan", 7),
    (80, "Moscow", 28),
    (80, "SPb", 26),
    (80, "Kazan", 26),
]


# --------------------------------------------------------------------------- helpers


def make_db(engine, rows, name="db"):
    """rows: [(external_id, region, int_field, in_gcg)] -> database id."""
    with transaction(engine) as s:
        db = profiles.create_database(s, ACTOR, name, FIELDS)
        add_profiles(s, db.id, rows)
        return db.id


def add_profiles(s, db_id, rows):
    slots = {f.name: f.slot for f in profiles.database_fields(s, db_id)}
    s.execute(
        sa.insert(Profile),
        [
            {
                "database_id": db_id,
                "external_id": ext,
                "in_gcg": gcg,
                "created_at": utcnow(),
                slots["region"]: region,
                slots["int_field"]: iv,
                slots["ltv"]: 1.5,
                slots["signup"]: date(2024, 1, 1),
            }
            for ext, region, iv, gcg in rows
        ],
    )


def r10_rows(prefix="P"):
    rows, i = [], 0
    for iv, region, n in R10_STRATA:
        for _ in range(n):
            i += 1
            rows.append((f"{prefix}{i:03d}", region, iv, False))
    return rows


def ext_filter(external_ids):
    ids = ", ".join(f"'{e}'" for e in external_ids)
    return sa.text(f"external_id IN ({ids})")


def make_segment(engine, name="seg", db_id=None, external_ids=None):
    with transaction(engine) as s:
        seg = segments.create_segment(s, ACTOR, name)
        if external_ids is None:
            segments.add_profiles_where(s, ACTOR, seg, sa.text(f"database_id = {db_id}"))
        elif external_ids:
            segments.add_profiles_where(s, ACTOR, seg, ext_filter(external_ids))
        return seg.id


def seg_add(engine, external_ids, name="seg"):
    with transaction(engine) as s:
        segments.add_profiles_where(
            s, ACTOR, segments.get_segment(s, name), ext_filter(external_ids)
        )


def seg_remove(engine, external_ids, name="seg"):
    with transaction(engine) as s:
        segments.remove_profiles_where(
            s, ACTOR, segments.get_segment(s, name), ext_filter(external_ids)
        )


def new_campaign(engine, name="c", seg="seg", db="db", activate=True, run=True, **lcg_kw):
    with transaction(engine) as s:
        campaigns.create_campaign(
            s,
            ACTOR,
            name,
            profiles.get_database(s, db),
            segments.get_segment(s, seg),
            seed=lcg_kw.pop("seed", 12345),
            **lcg_kw,
        )
    if activate:
        with transaction(engine) as s:
            campaigns.activate(s, ACTOR, campaigns.get_campaign(s, name))
    if run:
        builds.run_pending(engine)
    return get(engine, name)


def get(engine, name="c") -> Campaign:
    with Session(engine) as s:
        return campaigns.get_campaign(s, name)


def edit(engine, name="c", **kw):
    with transaction(engine) as s:
        return campaigns.edit_lcg(s, ACTOR, campaigns.get_campaign(s, name), **kw)


def members(engine, name="c", open_only=True):
    """{external_id: group} of the campaign's (open) members."""
    with Session(engine) as s:
        c = campaigns.get_campaign(s, name)
        q = (
            sa.select(Profile.external_id, CampaignMember.group)
            .join(Profile, Profile.id == CampaignMember.profile_id)
            .where(CampaignMember.campaign_id == c.id)
        )
        if open_only:
            q = q.where(CampaignMember.left_at.is_(None))
        return dict(s.execute(q).all())


def member_rows(engine, name="c"):
    with Session(engine) as s:
        c = campaigns.get_campaign(s, name)
        return sorted(
            s.execute(
                sa.select(
                    Profile.external_id,
                    CampaignMember.group,
                    CampaignMember.joined_group,
                    CampaignMember.source,
                    CampaignMember.stratum_key,
                    CampaignMember.cohort,
                    CampaignMember.left_at.is_(None),
                )
                .join(Profile, Profile.id == CampaignMember.profile_id)
                .where(CampaignMember.campaign_id == c.id)
            ).all()
        )


def events(engine, name="c"):
    with Session(engine) as s:
        c = campaigns.get_campaign(s, name)
        return sorted(
            s.execute(
                sa.select(Profile.external_id, ProfileEvent.kind, ProfileEvent.group)
                .join(Profile, Profile.id == ProfileEvent.profile_id)
                .where(ProfileEvent.campaign_id == c.id)
            ).all()
        )


def strata_rows(engine, name="c"):
    with Session(engine) as s:
        c = campaigns.get_campaign(s, name)
        return {
            r.stratum_key: (r.members, r.cohort, r.control, r.quota)
            for r in s.scalars(
                sa.select(CampaignStratum).where(CampaignStratum.campaign_id == c.id)
            )
        }


def assert_counters_match_rows(engine, name="c"):
    """Counters (Campaign, CampaignStratum) equal what the member rows say."""
    with Session(engine) as s:
        c = campaigns.get_campaign(s, name)
        rows = s.execute(
            sa.text(
                """SELECT stratum_key, COUNT(*),
                          SUM(CASE WHEN cohort = :cur THEN 1 ELSE 0 END),
                          SUM(CASE WHEN "group" = 'control' THEN 1 ELSE 0 END)
                   FROM campaign_member WHERE campaign_id = :cid AND left_at IS NULL
                   GROUP BY stratum_key"""
            ),
            {"cid": c.id, "cur": c.lcg_cohort},
        ).all()
        actual = {k: (int(m), int(n), int(cc)) for k, m, n, cc in rows}
        counters = {k: v[:3] for k, v in strata_rows(engine, name).items() if v[:3] != (0, 0, 0)}
        assert counters == actual
        assert c.members == sum(v[0] for v in actual.values())
        assert c.cohort_size == sum(v[1] for v in actual.values())
        assert c.control_count == sum(v[2] for v in actual.values())
        assert c.test_count == c.members - c.control_count


def expected_control(seed, strata_members, quotas):
    """R9 in plain Python: per stratum the q_s smallest (hash, external_id)."""
    out = set()
    for key, exts in strata_members.items():
        ranked = sorted(exts, key=lambda e: (campaign_hash(CURRENT_VERSION, seed, e), e.encode()))
        out.update(ranked[: quotas.get(key, 0)])
    return out


def validity_of(engine, campaign):
    with Session(engine) as s:
        return validity.campaign_validity(s, campaign)


def last_build(engine, name="c") -> AudienceBuild:
    with Session(engine) as s:
        c = campaigns.get_campaign(s, name)
        return s.scalar(
            sa.select(AudienceBuild)
            .where(AudienceBuild.campaign_id == c.id)
            .order_by(AudienceBuild.id.desc())
            .limit(1)
        )


# --------------------------------------------------------------------------- R9 / R10


def test_r10_worked_example_quotas_and_exact_r9_groups(engine):
    """R9/R10: 100 profiles, 15 % -> 15 control with quotas 1,1,1,4,4,4, and exactly the
    smallest-hash profiles of each stratum are control (same on both backends)."""
    rows = r10_rows()
    db_id = make_db(engine, rows)
    make_segment(engine, db_id=db_id)
    c = new_campaign(engine, lcg_percent="15", lcg_strata=["int_field", "region"], seed=777)
    assert (c.members, c.control_count, c.test_count, c.cohort_size) == (100, 15, 85, 100)
    quota_by = {
        f"{iv}\x1f{region}": q
        for (iv, region, _n), q in zip(R10_STRATA, [1, 1, 1, 4, 4, 4], strict=True)
    }
    st = strata_rows(engine)
    assert {k: v[3] for k, v in st.items()} == quota_by
    assert {k: v[2] for k, v in st.items()} == quota_by
    by_stratum: dict[str, list[str]] = {}
    for ext, region, iv, _g in rows:
        by_stratum.setdefault(f"{iv}\x1f{region}", []).append(ext)
    got = {e for e, g in members(engine).items() if g == "control"}
    assert got == expected_control(777, by_stratum, quota_by)
    assert c.warnings == []
    assert_counters_match_rows(engine)


def test_r10_limit_12_quotas_and_stratification_warning(engine):
    """R10: with a limit of 12 the control group is 12 (1,1,1,3,3,3) and the build records
    the stratification_violation warning naming the strata with ideal shares 0.72/0.84/0.84."""
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    c = new_campaign(engine, lcg_percent="15", lcg_limit=12, lcg_strata=["int_field", "region"])
    assert c.control_count == 12
    st = strata_rows(engine)
    assert [st[f"{iv}\x1f{r}"][3] for iv, r, _n in R10_STRATA] == [1, 1, 1, 3, 3, 3]
    assert [st[f"{iv}\x1f{r}"][2] for iv, r, _n in R10_STRATA] == [1, 1, 1, 3, 3, 3]
    (warning,) = c.warnings
    assert warning["code"] == "stratification_violation"
    ideal = {o["label"]: o["ideal"] for o in warning["strata"]}
    assert ideal == {
        "int_field=20, region=Moscow": 0.72,
        "int_field=20, region=SPb": 0.84,
        "int_field=20, region=Kazan": 0.84,
    }
    assert last_build(engine).warnings == c.warnings
    v = validity_of(engine, c)
    assert (v.target, v.actual, v.deficit, v.limit_binds) == (12, 12, 0, True)
    assert [s.ideal for s in v.strata if s.label.startswith("int_field=20")] == [0.84, 0.72, 0.84]
    assert not v.srm_flagged


# --------------------------------------------------------------------------- R3


def test_r3_draft_defers_campaign_events_to_activation(engine):
    """R3: only the final state counts; a profile that was pending at creation and left
    gets left_campaign stamped at activation; remove+re-add before activation: nothing."""
    db_id = make_db(engine, [(f"P{i}", "Moscow", 20, False) for i in range(6)])
    make_segment(engine, external_ids=["P0", "P1", "P2", "P3"])
    new_campaign(engine, activate=False, run=False, lcg_percent="50")
    seg_remove(engine, ["P1", "P2", "P3"])  # P1 leaves for good
    seg_add(engine, ["P2", "P4"])  # P2 back, P4 new
    seg_add(engine, ["P3"])
    seg_remove(engine, ["P3"])  # P3 back and gone again
    assert members(engine) == {} and events(engine) == []  # nothing at campaign level
    with transaction(engine) as s:
        campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "c"))
    builds.run_pending(engine)
    c = get(engine)
    assert set(members(engine)) == {"P0", "P2", "P4"}
    assert events(engine) == [("P1", "left_campaign", None), ("P3", "left_campaign", None)]
    with Session(engine) as s:
        stamps = set(s.scalars(sa.select(ProfileEvent.at).where(ProfileEvent.campaign_id == c.id)))
        build_ids = set(
            s.scalars(sa.select(ProfileEvent.build_id).where(ProfileEvent.campaign_id == c.id))
        )
    assert stamps == {c.activated_at}
    assert build_ids == {last_build(engine).id}
    assert {r[3] for r in member_rows(engine)} == {"activation"}
    assert c.segment_watermark > 0
    del db_id


# --------------------------------------------------------------------------- R1


def test_r1_only_campaign_database_and_gcg_exception(engine):
    """R1: profiles of other databases are ignored; GCG profiles excluded unless the
    campaign is on the database's exception list."""
    db_id = make_db(engine, [("A1", "Moscow", 20, False), ("A2", "Moscow", 20, True)])
    with transaction(engine) as s:
        other = profiles.create_database(s, ACTOR, "other", FIELDS)
        add_profiles(s, other.id, [("B1", "Moscow", 20, False)])
    make_segment(engine, external_ids=["A1", "A2", "B1"])
    new_campaign(engine, name="plain")
    assert set(members(engine, "plain")) == {"A1"}
    c = new_campaign(engine, name="excepted", activate=False, run=False)
    with transaction(engine) as s:
        s.add(GcgException(database_id=db_id, campaign_id=c.id))
    with transaction(engine) as s:
        campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "excepted"))
    builds.run_pending(engine)
    assert set(members(engine, "excepted")) == {"A1", "A2"}


# --------------------------------------------------------------------------- R4


def test_r4_leave_closes_at_once_and_rejoin_restores_former_group(engine):
    """R4: leaving closes the membership immediately (counters follow); re-entering
    gets the former group back, so leaving and rejoining never moves test -> control."""
    db_id = make_db(engine, [(f"P{i:02d}", "Moscow", 20, False) for i in range(40)])
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="25")
    before = members(engine)
    control = sorted(e for e, g in before.items() if g == "control")
    test = sorted(e for e, g in before.items() if g == "test")
    assert len(control) == 10
    seg_remove(engine, [control[0], test[0]])
    c = get(engine)
    assert (c.members, c.control_count) == (38, 9)  # at once, before any build
    assert control[0] not in members(engine)
    assert_counters_match_rows(engine)
    edit(engine, percent="60")  # larger target: a deficit that only newcomers may fill
    builds.run_pending(engine)
    seg_add(engine, [control[0], test[0]])
    assert last_build(engine).reason == "incremental"
    builds.run_pending(engine)
    after = members(engine)
    assert after[control[0]] == "control" and after[test[0]] == "test"
    for ext in test:
        assert after[ext] == "test"
    with Session(engine) as s:
        rows = s.execute(
            sa.select(CampaignMember.source, CampaignMember.left_at.is_(None))
            .join(Profile, Profile.id == CampaignMember.profile_id)
            .where(Profile.external_id == test[0])
            .order_by(CampaignMember.id)
        ).all()
    assert rows == [("activation", False), ("segment", True)]  # history kept (R12)
    assert_counters_match_rows(engine)


def test_r2c_incremental_build_takes_only_newcomers(engine):
    """R2c/R9: newcomers fill each stratum's deficit with their smallest hashes; members
    already assigned keep their group."""
    rows = [(f"P{i:03d}", "Moscow" if i % 2 else "Kazan", 20, False) for i in range(200)]
    make_db(engine, rows)
    first = [r[0] for r in rows[:100]]
    make_segment(engine, external_ids=first)
    new_campaign(engine, lcg_percent="10", lcg_strata=["region"], seed=5)
    before = members(engine)
    seg_add(engine, [r[0] for r in rows[100:]])
    builds.run_pending(engine)
    after = members(engine)
    assert all(after[e] == g for e, g in before.items())
    st = strata_rows(engine)
    assert {k: (v[1], v[2], v[3]) for k, v in st.items()} == {
        "Kazan": (100, 10, 10),
        "Moscow": (100, 10, 10),
    }
    new_control = {e for e in after if e not in before and after[e] == "control"}
    for region in ("Kazan", "Moscow"):
        newcomers = [r[0] for r in rows[100:] if r[1] == region]
        need = 10 - sum(
            1
            for e, g in before.items()
            if g == "control" and e in dict((r[0], r[1]) for r in rows if r[1] == region)
        )
        exp = expected_control(5, {region: newcomers}, {region: need})
        assert {e for e in new_control if e in newcomers} == exp
    assert {r[3] for r in member_rows(engine) if r[0] not in before} == {"segment"}
    assert_counters_match_rows(engine)


# --------------------------------------------------------------------------- R5 / R6 / R7


def test_r5_enable_on_active_only_newcomers_become_control(engine):
    """R5: enabling starts a new cohort; existing members stay test; mailings are paused
    while the build runs and resumed after it."""
    rows = [(f"P{i:03d}", "Moscow", 20, False) for i in range(80)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:50]])
    new_campaign(engine)
    with transaction(engine) as s:
        c = campaigns.get_campaign(s, "c")
        m = mailings.create_mailing(s, ACTOR, "weekly", c, "regular", cron="0 10 * * 1")
        trig = mailings.create_mailing(s, ACTOR, "trig", c, "trigger", event="buy")
        mailing_ids = (m.id, trig.id)
    build = edit(engine, enabled=True, percent="10")
    assert build.pauses_mailings and build.reason == "recalculation"
    claimed = builds.claim_next_build(engine, "w1")
    with Session(engine) as s:
        weekly, trigger = (s.get(Mailing, i) for i in mailing_ids)
        assert weekly.paused_by_build_id == claimed and trigger.paused_by_build_id is None
    assert builds.run_build(engine, claimed, worker="w1") == "done"
    with Session(engine) as s:
        assert s.get(Mailing, mailing_ids[0]).paused_by_build_id is None
    c = get(engine)
    assert (c.control_count, c.cohort_size, c.members) == (0, 0, 50)
    seg_add(engine, [r[0] for r in rows[50:]])
    builds.run_pending(engine)
    c = get(engine)
    assert (c.members, c.cohort_size, c.control_count) == (80, 30, 3)  # 10 % of 30 newcomers
    controls = {e for e, g in members(engine).items() if g == "control"}
    assert controls <= {r[0] for r in rows[50:]}
    assert_counters_match_rows(engine)


def test_r6_surplus_moves_largest_hashes_deficit_waits_for_newcomers(engine):
    """R6: smaller target -> the control members with the largest hashes move to test
    (moved_to_test events); larger target -> nobody moves test -> control."""
    rows = [(f"P{i:03d}", "Moscow", 20, False) for i in range(120)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:100]])
    new_campaign(engine, lcg_percent="20", seed=99)
    control_before = sorted(
        (e for e, g in members(engine).items() if g == "control"),
        key=lambda e: (campaign_hash(CURRENT_VERSION, 99, e), e),
    )
    assert len(control_before) == 20
    build = edit(engine, percent="10")
    assert build.reason == "recalculation" and build.pauses_mailings
    builds.run_pending(engine)
    now_control = {e for e, g in members(engine).items() if g == "control"}
    assert now_control == set(control_before[:10])
    assert events(engine) == sorted((e, "moved_to_test", "test") for e in control_before[10:])
    edit(engine, percent="30")
    builds.run_pending(engine)
    assert {e for e, g in members(engine).items() if g == "control"} == now_control
    v = validity_of(engine, get(engine))
    assert (v.target, v.actual, v.deficit) == (30, 10, 20)
    seg_add(engine, [r[0] for r in rows[100:]])  # 20 newcomers, target 36 of 120
    builds.run_pending(engine)
    c = get(engine)
    assert c.control_count == 30  # 10 kept + all 20 newcomers (deficit 26 > 20)
    assert_counters_match_rows(engine)


def test_r6_strata_change_rekeys_and_recounts(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15")
    edit(engine, strata=["region"])
    builds.run_pending(engine)
    st = strata_rows(engine)
    assert set(st) == {"Moscow", "SPb", "Kazan"}
    assert {k: v[0] for k, v in st.items()} == {"Moscow": 34, "SPb": 33, "Kazan": 33}
    assert sum(v[3] for v in st.values()) == 15
    assert_counters_match_rows(engine)


def test_r7_disable_moves_every_control_member_to_test(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15", lcg_strata=["region"])
    control = {e for e, g in members(engine).items() if g == "control"}
    build = edit(engine, enabled=False)
    assert build.reason == "lcg_disable" and build.pauses_mailings
    builds.run_pending(engine)
    c = get(engine)
    assert (c.control_count, c.test_count, c.cohort_size) == (0, 100, 0)
    assert events(engine) == sorted((e, "moved_to_test", "test") for e in control)
    assert_counters_match_rows(engine)
    # Re-enabling starts a new cohort: old members stay test (R5).
    edit(engine, enabled=True)
    builds.run_pending(engine)
    assert get(engine).control_count == 0


def test_r5_r7_reenabled_before_the_build_runs_old_cohort_control_goes_to_test(engine):
    """R7 then R5 with no build in between: the merged build runs with the LCG on and a
    new cohort, so the old cohort's control members leave control (R9: only the current
    cohort holds control members), each with its moved_to_test event."""
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15", lcg_strata=["region"])
    control = {e for e, g in members(engine).items() if g == "control"}
    assert control
    edit(engine, enabled=False)
    edit(engine, enabled=True)
    builds.run_pending(engine)
    c = get(engine)
    assert (c.control_count, c.test_count, c.cohort_size) == (0, 100, 0)
    assert events(engine) == sorted((e, "moved_to_test", "test") for e in control)
    assert_counters_match_rows(engine)


def statements_of_delta(engine, external_ids, wanted):
    """(statement, parameters) of every statement matching `wanted` that adding
    `external_ids` to the segment and running the builds it queues executed."""
    seen = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if wanted(statement):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        seg_add(engine, external_ids)
        builds.run_pending(engine)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return seen


def test_demote_reads_only_members_outside_the_cohort(sqlite_engine):
    """R9: every build's demote phase looks for control members outside the current cohort
    by ranges of ix_campaign_member_open_control (campaign, cohort). As one OR, SQLite read
    every open control member of the campaign in each incremental build."""
    engine = sqlite_engine
    rows = r10_rows()
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:60]])
    new_campaign(engine, lcg_percent="15", lcg_strata=["region"])
    demotes = statements_of_delta(
        engine,
        [r[0] for r in rows[60:]],
        lambda sql: sql.lstrip().startswith("UPDATE campaign_member SET \"group\" = 'test'"),
    )
    assert len(demotes) == 3  # no cohort, an older one, a newer one
    with engine.connect() as conn:
        for statement, parameters in demotes:
            plan = [
                r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
            searches = [p for p in plan if "ix_campaign_member_open_control" in p]
            assert searches and all("cohort" in p for p in searches), plan


def test_a_delta_build_ranks_its_newcomers_in_one_pass(engine):
    """R9: the plan ranks each stratum's fresh newcomers below a cut of the hash range
    generous enough that no stratum comes up short (each shortfall ranked every candidate
    again). Twelve strata of a few newcomers' picks each: with a cut 25 % above the picks,
    some stratum came up short and a second pass ran; the groups are exact either way."""
    rows = [
        (f"P{i:04d}", ("Moscow", "Kazan", "Sochi", "Omsk")[i % 4], 1 + i // 4 % 3, False)
        for i in range(3000)
    ]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:1000]])
    new_campaign(engine, lcg_percent="5", lcg_strata=["region", "int_field"], seed=77)
    ranks = statements_of_delta(
        engine, [r[0] for r in rows[1000:]], lambda sql: "ROW_NUMBER() OVER" in sql
    )
    assert len(ranks) == 1
    st = strata_rows(engine)
    assert len(st) == 12 and all(v[2] == v[3] for v in st.values())  # control = quota
    assert_counters_match_rows(engine)


def test_a_delta_in_one_chunk_reads_its_candidates_once_and_decides_as_in_chunks(engine):
    """A delta build whose newcomers fit in one chunk plans, assigns and finishes in one
    step, from its candidates read once into a temporary table (build_plan.
    _store_candidates) instead of by each pass. The twin campaign builds the same delta
    in chunks of 40 with the candidate query: the same members, groups, events and
    counters, re-entering members (R4) among the newcomers."""
    rows = [
        (f"P{i:04d}", ("Moscow", "Kazan", "Sochi", "Omsk")[i % 4], 1 + i // 4 % 3, False)
        for i in range(900)
    ]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:500]])
    kw = dict(lcg_percent="10", lcg_strata=["region", "int_field"], seed=99)
    new_campaign(engine, name="stored", **kw)
    new_campaign(engine, name="chunked", **kw)
    leavers = [r[0] for r in rows[:500:9]]  # control and test members among them
    seg_remove(engine, leavers)
    builds.run_pending(engine)
    with Session(engine) as s:
        chunks = {
            campaigns.get_campaign(s, "stored").id: 10_000,
            campaigns.get_campaign(s, "chunked").id: 40,
        }
    reads: dict[int, list[str]] = {cid: [] for cid in chunks}
    running: list[int] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM segment_member sm CROSS JOIN profile p" in statement:
            reads[running[-1]].append(statement)

    seg_add(engine, [r[0] for r in rows[500:]] + leavers)
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        while (bid := builds.claim_next_build(engine, "w")) is not None:
            with Session(engine) as s:
                running.append(s.get(AudienceBuild, bid).campaign_id)
            assert builds.run_build(engine, bid, worker="w", chunk_size=chunks[running[-1]]) == (
                "done"
            )
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    stored, chunked = (get(engine, name).id for name in ("stored", "chunked"))
    assert len(reads[stored]) == 1 and "CREATE TEMP TABLE" in reads[stored][0]
    assert len(reads[chunked]) > 3 and not any("CREATE TEMP" in r for r in reads[chunked])
    assert member_rows(engine, "stored") == member_rows(engine, "chunked")
    assert events(engine, "stored") == events(engine, "chunked")
    assert strata_rows(engine, "stored") == strata_rows(engine, "chunked")
    for name in ("stored", "chunked"):
        assert_counters_match_rows(engine, name)


def test_no_membership_change_commits_while_a_one_step_delta_holds_its_candidates(
    engine, monkeypatch
):
    """R4: a profile leaving the segment between the plan storing the candidates and the
    insert reading them would become a member after on_segment_left closed its other
    memberships. The step locks the segment first (PostgreSQL: FOR SHARE; SQLite: its
    write lock, by writing the build's heartbeat before it reads): a segment change tried
    meanwhile waits, here until it gives up."""
    rows = [(f"P{i:03d}", "Moscow", 20, False) for i in range(80)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:50]])
    new_campaign(engine, lcg_percent="10")
    segment_id = get(engine).segment_id
    tried: list[str] = []
    count_newcomers = build_plan._count_newcomers

    def meanwhile(ctx):
        if ctx.stored:
            if engine.dialect.name == "postgresql":
                with engine.connect() as other:
                    other.exec_driver_sql("SET lock_timeout = '200ms'")
                    with pytest.raises(sa.exc.OperationalError, match="lock timeout") as e:
                        other.exec_driver_sql(
                            f"SELECT id FROM segment WHERE id = {segment_id} FOR UPDATE"
                        )
            else:
                other = sqlite3.connect(engine.url.database, timeout=0.2)
                try:
                    with pytest.raises(sqlite3.OperationalError, match="locked") as e:
                        other.execute(f"UPDATE segment SET name = name WHERE id = {segment_id}")
                finally:
                    other.close()
            tried.append(str(e.value))
        return count_newcomers(ctx)

    monkeypatch.setattr(build_plan, "_count_newcomers", meanwhile)
    seg_add(engine, [r[0] for r in rows[50:]])
    builds.run_pending(engine)
    assert len(tried) == 1
    assert get(engine).members == 80
    assert_counters_match_rows(engine)


# --------------------------------------------------------------------------- R8 / R11


def test_r8_complete_closes_everything_and_is_terminal(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15")
    with transaction(engine) as s:
        c = campaigns.get_campaign(s, "c")
        mailings.create_mailing(s, ACTOR, "weekly", c, "regular", cron="0 10 * * 1")
    seg_remove(engine, ["P001"])
    seg_add(engine, ["P001"])  # queues an incremental build
    assert last_build(engine).status == "queued"
    with transaction(engine) as s:
        campaigns.complete(s, ACTOR, campaigns.get_campaign(s, "c"))
    c = get(engine)
    assert (c.status, c.members, c.control_count) == ("completed", 0, 0)
    assert members(engine) == {}
    assert last_build(engine).status == "cancelled"
    with Session(engine) as s:
        assert s.scalar(sa.select(Mailing.status).where(Mailing.name == "weekly")) == "stopped"
    assert builds.run_pending(engine) == []
    seg_remove(engine, ["P002"])  # R8: no campaign-level effect
    seg_add(engine, ["P003"])
    assert last_build(engine).status == "cancelled"


def test_r11_expansion_adds_mailing_segment_profiles(engine):
    rows = [(f"P{i:03d}", "Moscow", 20, False) for i in range(60)]
    make_db(engine, rows)
    with transaction(engine) as s:
        other = profiles.create_database(s, ACTOR, "other", FIELDS)
        add_profiles(s, other.id, [("X1", "Moscow", 20, False)])
    make_segment(engine, external_ids=[r[0] for r in rows[:40]])
    make_segment(engine, "promo", external_ids=[r[0] for r in rows[30:]] + ["X1"])
    new_campaign(engine, lcg_percent="10")
    with transaction(engine) as s:
        c = campaigns.get_campaign(s, "c")
        m = mailings.create_mailing(
            s,
            ACTOR,
            "drop",
            c,
            "broadcast",
            send_at=utcnow() + timedelta(days=1),
            segment=segments.get_segment(s, "promo"),
            expand_audience=True,
        )
        b = builds.queue_build(s, c, "expansion", ACTOR, mailing=m)
        assert b.mailing_id == m.id and not b.pauses_mailings
    builds.run_pending(engine)
    got = member_rows(engine)
    assert len(got) == 60  # X1 is of another database (R1)
    assert {r[0] for r in got if r[3] == "expansion"} == {r[0] for r in rows[40:]}
    c = get(engine)
    assert c.control_count == 6  # 10 % of 60: the 20 expansion profiles fill the deficit
    assert_counters_match_rows(engine)


# --------------------------------------------------------------------------- machinery


def test_interrupted_build_resumed_equals_uninterrupted(engine):
    """A build stopped between chunks and resumed (even by another worker) produces the
    same members, groups and events as an uninterrupted one; no event twice (R9, R12)."""
    rows = r10_rows() + [(f"Q{i:03d}", "SPb", 80, False) for i in range(60)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in r10_rows()])
    kw = dict(lcg_percent="15", lcg_strata=["int_field", "region"], seed=4242)
    new_campaign(engine, name="straight", **kw)
    new_campaign(engine, name="stopped", activate=False, run=False, **kw)
    with transaction(engine) as s:
        campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "stopped"))
    steps = 0

    def stop_after_3():
        nonlocal steps
        steps += 1
        return steps % 3 == 0

    while True:
        bid = builds.claim_next_build(engine, f"w{steps}")
        if bid is None:
            break
        builds.run_build(engine, bid, worker=f"w{steps}", chunk_size=7, should_stop=stop_after_3)
    for name in ("straight", "stopped"):
        edit(engine, name=name, percent="5", limit=4)
    seg_add(engine, [f"Q{i:03d}" for i in range(60)])
    builds.run_pending(engine, worker="inline")  # "straight" and "stopped" in one go
    # Re-run "stopped" equivalently is covered above; compare the two campaigns now.
    assert member_rows(engine, "straight") == member_rows(engine, "stopped")
    assert events(engine, "straight") == events(engine, "stopped")
    assert strata_rows(engine, "straight") == strata_rows(engine, "stopped")
    assert steps >= 9


def test_resume_after_stop_in_every_phase(engine):
    """Stop after every single chunk of a recalculation + newcomers build."""
    rows = [(f"P{i:03d}", ["Moscow", "SPb", "Kazan"][i % 3], 20 + i % 2, False) for i in range(90)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:60]])
    for name in ("a", "b"):
        new_campaign(engine, name=name, lcg_percent="30", lcg_strata=["region"], seed=1, run=False)
    builds.run_pending(engine)
    for name in ("a", "b"):
        edit(engine, name=name, percent="10", strata=["region", "int_field"])
    seg_add(engine, [r[0] for r in rows[60:]])
    with Session(engine) as s:
        ids = dict(s.execute(sa.select(Campaign.name, Campaign.id)).all())
    while (
        bid := builds.claim_next_build(engine, "x", exclude_campaign_ids=[ids["b"]])
    ) is not None:
        builds.run_build(engine, bid, worker="x", chunk_size=5)
    interruptions = 0
    while (bid := builds.claim_next_build(engine, "y")) is not None:
        out = builds.run_build(engine, bid, worker="y", chunk_size=5, should_stop=lambda: True)
        interruptions += out == "interrupted"
    assert interruptions > 10
    assert member_rows(engine, "a") == member_rows(engine, "b")
    assert events(engine, "a") == events(engine, "b")
    assert strata_rows(engine, "a") == strata_rows(engine, "b")
    assert_counters_match_rows(engine, "b")


def test_one_running_build_per_campaign_and_requeue_abandoned(engine):
    """R2: a second build of the same campaign is not claimed while one runs; a crashed
    worker's build goes back to queued and resumes from its checkpoint."""
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15", run=False)
    first = builds.claim_next_build(engine, "crashed")
    assert (
        builds.run_build(engine, first, worker="crashed", chunk_size=10, should_stop=lambda: False)
        == "done"
    )
    edit(engine, percent="10")
    second = builds.claim_next_build(engine, "crashed")
    seg_remove(engine, ["P001"])
    seg_add(engine, ["P001"])  # the recalculation runs: a new build is queued, not merged
    queued = last_build(engine)
    assert queued.id != second and queued.status == "queued"
    assert builds.claim_next_build(engine, "other") is None  # same campaign is busy
    with transaction(engine) as s:
        s.execute(
            sa.update(AudienceBuild)
            .where(AudienceBuild.id == second)
            .values(heartbeat_at=utcnow() - timedelta(minutes=10))
        )
    assert builds.requeue_abandoned(engine, timedelta(minutes=5)) == [second]
    assert builds.claim_next_build(engine, "rescuer") == second
    assert builds.run_build(engine, second, worker="crashed") == "interrupted"  # not ours
    assert builds.run_build(engine, second, worker="rescuer") == "done"
    builds.run_pending(engine)
    assert get(engine).control_count == 10
    assert_counters_match_rows(engine)


def test_queued_requests_merge(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15")
    b1 = edit(engine, percent="10")
    seg_remove(engine, ["P001"])
    seg_add(engine, ["P001"])
    b2 = edit(engine, enabled=False)
    assert b1.id == b2.id == last_build(engine).id
    assert last_build(engine).reason == "lcg_disable"
    assert builds.run_pending(engine) == [b1.id]
    assert get(engine).control_count == 0


def test_cancel_build_resumes_mailings(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15")
    with transaction(engine) as s:
        c = campaigns.get_campaign(s, "c")
        mailings.create_mailing(s, ACTOR, "weekly", c, "regular", cron="0 10 * * 1")
    edit(engine, percent="10")
    bid = builds.claim_next_build(engine, "w")
    with transaction(engine) as s:
        builds.cancel_build(s, ACTOR, s.get(AudienceBuild, bid))
    with Session(engine) as s:
        assert s.scalar(sa.select(Mailing.paused_by_build_id)) is None
    assert builds.run_build(engine, bid, worker="w") == "cancelled"


def test_target_matches_pure_function(engine):
    assert lcg.target_total(525, 1000, None) == 53  # 52.5 -> 53 (half up)
