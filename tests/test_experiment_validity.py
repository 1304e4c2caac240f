"""Issue 11: experiment validity. Regression tests for the five engine defects, and tests
for rules whose breaking used to leave the suite green, on real SQLite and PostgreSQL.

Each test names the SPEC rule it guards (R4, R4a, R5, R9, R10, R11) and, where it was
written against a mutation of the engine, the mutation it catches.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session
from test_builds import (
    ACTOR,
    assert_counters_match_rows,
    edit,
    get,
    last_build,
    make_db,
    make_segment,
    members,
    new_campaign,
    r10_rows,
    seg_add,
    seg_remove,
    validity_of,
)

from store import builds, campaigns, history, lcg, mailings, segments, views
from store.db import transaction
from store.errors import InvalidStateError
from store.hashing import CURRENT_VERSION, campaign_hash
from store.models import AudienceBuild, CampaignMember, Mailing, Profile, utcnow


def forty(engine, extra=1):
    """40 profiles in the segment (one stratum) and `extra` more outside it."""
    rows = [(f"P{i:02d}", "Moscow", 20, False) for i in range(40 + extra)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:40]])


def control_of(engine, name="c"):
    return sorted(e for e, g in members(engine, name).items() if g == "control")


# --------------------------------------------------------------------------- defect 1 (R4)


def test_r4_returning_control_member_finds_no_room_and_goes_to_test(engine):
    """Issue 11 defect 1: the limit is a hard maximum, also for re-entering members."""
    forty(engine)
    new_campaign(engine, lcg_percent="25", lcg_limit=10)
    control = control_of(engine)
    assert len(control) == 10
    seg_remove(engine, [control[0]])
    assert get(engine).control_count == 9
    seg_add(engine, ["P40"])  # the newcomer fills the free place (T = 10 of 40)
    builds.run_pending(engine)
    assert members(engine)["P40"] == "control"
    assert get(engine).control_count == 10
    seg_add(engine, [control[0]])  # back, but control is full
    builds.run_pending(engine)
    c = get(engine)
    assert members(engine)[control[0]] == "test"
    assert (c.control_count, c.lcg_limit) == (10, 10)
    v = validity_of(engine, c)
    assert (v.target, v.actual, v.deficit) == (10, 10, 0)
    assert_counters_match_rows(engine)


def test_r4_returning_control_members_share_the_room_left_by_smallest_hash(engine):
    """Two former control members return while one place is free: the one with the
    smaller (assignment hash, external_id) gets it (R9 order), the other goes to test."""
    forty(engine)
    new_campaign(engine, lcg_percent="25", lcg_limit=10, seed=31)
    control = control_of(engine)
    seg_remove(engine, control[:2])  # control 8, cohort 38
    seg_add(engine, ["P40"])  # T = round(9.75) = 10: the newcomer fills one place
    builds.run_pending(engine)
    assert get(engine).control_count == 9
    seg_add(engine, control[:2])
    builds.run_pending(engine)
    first, second = sorted(
        control[:2], key=lambda e: (campaign_hash(CURRENT_VERSION, 31, e), e.encode())
    )
    now = members(engine)
    assert (now[first], now[second]) == ("control", "test")
    assert get(engine).control_count == 10
    assert_counters_match_rows(engine)


def test_r4_former_control_member_of_an_ended_cohort_returns_to_test(engine):
    """R4 (mutation: letting a re-entering former control member back into control after
    the LCG was disabled and re-enabled): a new cohort never takes old control back."""
    forty(engine)
    new_campaign(engine, lcg_percent="25")
    control = control_of(engine)
    seg_remove(engine, [control[0]])
    edit(engine, enabled=False)
    builds.run_pending(engine)
    edit(engine, enabled=True)
    builds.run_pending(engine)
    seg_add(engine, [control[0]])
    builds.run_pending(engine)
    assert members(engine)[control[0]] == "test"
    assert get(engine).control_count == 0
    assert_counters_match_rows(engine)


# --------------------------------------------------------------------------- defect 2 (R4a)


def card_events(engine, external_id):
    """(kind, at) of one profile's card, in card order."""
    with Session(engine) as s:
        card = history.profile_card(s, "db", external_id)
    return [(e.kind, e.at) for e in card.events]


def assert_causal(events):
    """R4a: no campaign event precedes the segment event that caused it."""
    entered = [at for kind, at in events if kind == "entered_segment"]
    left = [at for kind, at in events if kind == "left_segment"]
    for kind, at in events:
        if kind == "entered_campaign":
            assert any(e <= at for e in entered), events
        if kind == "left_campaign":
            assert any(x <= at for x in left), events


def test_r4a_activation_takes_the_segment_as_it_stood_at_activation(engine):
    """Issue 11 defect 2: activation queued, then one profile leaves and one joins before
    the build runs. The leaver entered at activation and left at its own left_segment;
    the joiner enters through a later build, after its entered_segment."""
    forty(engine)
    new_campaign(engine, lcg_percent="25", run=False)
    seg_remove(engine, ["P05"])
    seg_add(engine, ["P40"])
    builds.run_pending(engine)
    c = get(engine)
    with Session(engine) as s:
        rows = {
            ext: (m.source, m.joined_at, m.left_at)
            for ext, m in s.execute(
                sa.select(Profile.external_id, CampaignMember)
                .join(Profile, Profile.id == CampaignMember.profile_id)
                .where(CampaignMember.campaign_id == c.id)
            ).all()
        }
    source, joined, left = rows["P05"]
    assert (source, joined) == ("activation", c.activated_at) and left is not None
    assert left > c.activated_at
    source, joined, left = rows["P40"]
    assert source == "segment" and joined > c.activated_at and left is None
    for ext in ("P05", "P40"):
        assert_causal(card_events(engine, ext))
    kinds = [k for k, _at in card_events(engine, "P05")]
    assert kinds == ["entered_segment", "entered_campaign", "left_segment", "left_campaign"]
    assert (c.members, c.cohort_size) == (40, 40)  # 39 of the snapshot + the newcomer
    assert_counters_match_rows(engine)


def test_r4a_a_profile_leaving_during_a_long_activation_build(engine):
    """A profile that leaves while the activation build runs, before its chunk is reached,
    entered at activation and left when it left the segment; never open afterwards."""
    forty(engine)
    new_campaign(engine, lcg_percent="25", run=False)
    bid = builds.claim_next_build(engine, "w")
    stops = iter([False, False, True])  # demote, plan, the first chunk of assign
    out = builds.run_build(engine, bid, worker="w", chunk_size=5, should_stop=lambda: next(stops))
    assert out == "interrupted"
    assert len(members(engine)) == 5 and "P39" not in members(engine)  # not reached yet
    seg_remove(engine, ["P39"])
    assert builds.run_pending(engine) == [bid]
    c = get(engine)
    assert "P39" not in members(engine)
    kinds = [k for k, _at in card_events(engine, "P39")]
    assert kinds == ["entered_segment", "entered_campaign", "left_segment", "left_campaign"]
    assert_causal(card_events(engine, "P39"))
    assert c.members == 39
    assert_counters_match_rows(engine)


# --------------------------------------------------------------------------- defect 3 (R9)


def two_regions(engine, more_b=0):
    """10 profiles of region A and 10 of B in the segment; `more_b` B profiles (M..) not."""
    rows = [(f"A{i:02d}", "A", 20, False) for i in range(10)]
    rows += [(f"B{i:02d}", "B", 20, False) for i in range(10)]
    make_db(engine, rows + [(f"M{i:02d}", "B", 20, False) for i in range(more_b)])
    make_segment(engine, external_ids=[r[0] for r in rows])
    return rows


def test_quotas_target_and_deficit_follow_the_live_cohort(engine):
    """Issue 11 defect 3: every B profile leaves; B is no stratum any more, the quotas sum
    to the target of the live cohort and no deficit that can never be filled is shown."""
    rows = two_regions(engine)
    new_campaign(engine, lcg_percent="20", lcg_strata=["region"])
    v = validity_of(engine, get(engine))
    assert [(s.label, s.quota) for s in v.strata] == [("region=A", 2), ("region=B", 2)]
    seg_remove(engine, [r[0] for r in rows if r[1] == "B"])
    c = get(engine)
    v = validity_of(engine, c)
    assert [(s.label, s.members, s.quota) for s in v.strata] == [("region=A", 10, 2)]
    assert (v.cohort_size, v.target, v.actual, v.deficit) == (10, 2, 2, 0)
    assert sum(s.quota for s in v.strata) == v.target
    with Session(engine) as s:
        shown = views.campaign_detail(s, c.name)  # what console and CLI show
    assert shown.target == 2 and shown.deficit == 0
    assert [s.quota for s in shown.strata] == [2]


def test_no_deficit_is_shown_while_control_is_at_the_limit(engine):
    """Issue 11 defect 3 (and R10, mutation: removing the limit cap on newcomers in
    incremental builds): A keeps a surplus an incremental build may not trim, B has a
    deficit, but control = limit = target: no newcomer may go to control and no deficit
    is shown."""
    two_regions(engine, more_b=10)
    new_campaign(engine, lcg_percent="20", lcg_limit=4, lcg_strata=["region"])
    assert get(engine).control_count == 4  # quotas 2 and 2
    seg_add(engine, [f"M{i:02d}" for i in range(10)])  # N = 30, T = 4: quotas A 1, B 3
    builds.run_pending(engine)
    c = get(engine)
    assert c.control_count == 4  # the limit holds
    v = validity_of(engine, c)
    assert (v.target, v.actual, v.deficit) == (4, 4, 0)
    assert [(s.label, s.quota, s.control) for s in v.strata] == [
        ("region=A", 1, 2),
        ("region=B", 3, 2),
    ]
    assert sum(s.quota for s in v.strata) == v.target
    assert_counters_match_rows(engine)


# --------------------------------------------------------------------------- defect 4


def test_a_build_that_only_reenters_members_reports_them_as_processed(engine):
    """Issue 11 defect 4: processed/total count every profile a build assigned, also
    re-entering members of an older cohort or with the LCG off."""
    forty(engine)
    new_campaign(engine)  # no LCG
    seg_remove(engine, ["P01", "P02"])
    seg_add(engine, ["P01", "P02"])
    builds.run_pending(engine)
    build = last_build(engine)
    assert build.reason == "incremental"
    assert (build.processed, build.total) == (2, 2)
    with Session(engine) as s:
        shown = views.builds(s, campaign="c")
    assert (shown[0].processed, shown[0].total) == (2, 2)


def test_a_build_reentering_an_older_cohort_reports_them_as_processed(engine):
    forty(engine)
    new_campaign(engine, lcg_percent="25")
    test = sorted(e for e, g in members(engine).items() if g == "test")
    seg_remove(engine, test[:3])
    edit(engine, enabled=False)
    builds.run_pending(engine)
    edit(engine, enabled=True)  # a new cohort: the three are of the older one
    builds.run_pending(engine)
    seg_add(engine, test[:3])
    builds.run_pending(engine)
    build = last_build(engine)
    assert (build.reason, build.processed, build.total) == ("incremental", 3, 3)


# --------------------------------------------------------------------------- defect 5 (R8)


def test_a_completed_campaign_shows_no_live_quotas_deficit_or_warnings(engine):
    """Issue 11 defect 5: after completion no quotas, deficit or warnings are shown; the
    history stays in the builds."""
    make_db(engine, r10_rows())
    make_segment(engine, external_ids=[r[0] for r in r10_rows()])
    new_campaign(engine, lcg_percent="15", lcg_limit=12, lcg_strata=["int_field", "region"])
    assert get(engine).warnings
    with transaction(engine) as s:
        campaigns.complete(s, ACTOR, campaigns.get_campaign(s, "c"))
    c = get(engine)
    assert c.warnings == []
    v = validity_of(engine, c)
    assert (v.target, v.actual, v.deficit, v.strata) == (0, 0, 0, [])
    with Session(engine) as s:
        shown = views.campaign_detail(s, "c")  # what console and CLI show
        listed = {r.name: r for r in views.campaign_rows(s)}
    assert shown.strata == [] and shown.warnings == () and shown.deficit == 0
    assert listed["c"].warnings == ()
    assert last_build(engine).warnings  # history stays with the build


# --------------------------------------------------------------------------- R9 / R10


def test_r9_equal_remainders_go_to_the_larger_stratum_then_the_smaller_key():
    """R9 ties (mutation: the smaller stratum wins a remainder tie). T = 3 over N = 6:
    "a" (size 1) and "b" (size 3) both have remainder 3/6 exactly; one unit is left and
    goes to the larger stratum "b", although "a" has the smaller key."""
    assert lcg.apportion(3, {"a": 1, "b": 3, "c": 2}) == {"a": 0, "b": 2, "c": 1}
    # Equal remainders and equal sizes: the smaller key (Python string order) wins.
    assert lcg.apportion(1, {"Moscow": 1, "Kazan": 1, "SPb": 1}) == {
        "Moscow": 0,
        "Kazan": 1,
        "SPb": 0,
    }


def test_r10_warns_when_a_stratum_is_off_its_share_and_the_limit_leaves_no_room():
    """R10 second criterion (mutation: dropping it): every ideal share is at least 1, the
    limit binds, control is at the limit and a stratum is one off its ideal share."""
    sizes = {"A": 10, "B": 10}
    assert lcg.limit_binds(5000, 20, 4)
    (warning,) = lcg.stratification_warnings(5000, 4, sizes, {"A": 3, "B": 1})
    assert {o["stratum"]: o["ideal"] for o in warning["strata"]} == {"A": 2.0, "B": 2.0}
    assert all("ideal share below 1" not in o["reasons"] for o in warning["strata"])
    # Room left under the limit: newcomers can still correct it, no warning.
    assert lcg.stratification_warnings(5000, 4, sizes, {"A": 2, "B": 1}) == []


def test_r10_build_records_the_off_share_warning_when_control_is_full(engine):
    """The same criterion through real builds: 20 B newcomers make A's ideal share 1 and
    B's 3 while control stays 2 and 2 at the limit (an incremental build may not trim)."""
    two_regions(engine, more_b=20)
    new_campaign(engine, lcg_percent="50", lcg_limit=4, lcg_strata=["region"])
    assert get(engine).control_count == 4 and get(engine).warnings == []
    seg_add(engine, [f"M{i:02d}" for i in range(20)])
    builds.run_pending(engine)
    c = get(engine)
    assert c.control_count == 4
    (warning,) = c.warnings
    assert {o["label"]: (o["ideal"], o["control"]) for o in warning["strata"]} == {
        "region=A": (1.0, 2),
        "region=B": (3.0, 2),
    }
    assert all("ideal share below 1" not in o["reasons"] for o in warning["strata"])


# --------------------------------------------------------------------------- R11


def expanding_mailing(engine, status):
    rows = [(f"P{i:03d}", "Moscow", 20, False) for i in range(60)]
    make_db(engine, rows)
    make_segment(engine, external_ids=[r[0] for r in rows[:40]])
    make_segment(engine, "promo", external_ids=[r[0] for r in rows[30:]])
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
        build = builds.queue_build(s, c, "expansion", ACTOR, mailing=m)
        m.status = status  # the mailing completes before its expansion build runs
        s.add(m)
        return build.id


def test_r11_no_expansion_from_a_completed_mailing(engine):
    """R11 (mutation: expansion from a completed mailing): only non-completed mailings
    expand; a broadcast that was sent, or a stopped mailing, adds nobody."""
    expanding_mailing(engine, "sent")
    builds.run_pending(engine)
    assert set(members(engine)) == {f"P{i:03d}" for i in range(40)}
    assert last_build(engine).status == "done"


def test_r11_queueing_an_expansion_for_a_completed_mailing_is_refused(engine):
    expanding_mailing(engine, "stopped")
    with transaction(engine) as s:
        c = campaigns.get_campaign(s, "c")
        m = s.scalar(sa.select(Mailing).where(Mailing.name == "drop"))
        try:
            builds.queue_build(s, c, "expansion", ACTOR, mailing=m)
        except InvalidStateError as exc:
            assert "stopped" in str(exc) and "R11" in str(exc)
        else:
            raise AssertionError("an expansion for a stopped mailing was queued")


# --------------------------------------------------------------------------- R5


def inject_failure(engine):
    """A real database error for every later change of campaign_member rows."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER cc_test_fail BEFORE UPDATE ON campaign_member "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION cc_test_fail() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER cc_test_fail BEFORE UPDATE ON campaign_member "
                "FOR EACH ROW EXECUTE FUNCTION cc_test_fail()"
            )


def test_r5_mailings_resume_after_a_build_that_failed(engine):
    """R5 (mutation: mailings not resumed after a failed build): a recalculation fails
    for real at its second chunk; its paused mailings run again."""
    make_db(engine, r10_rows())
    make_segment(engine, external_ids=[r[0] for r in r10_rows()])
    new_campaign(engine, lcg_percent="15")
    with transaction(engine) as s:
        c = campaigns.get_campaign(s, "c")
        weekly = mailings.create_mailing(s, ACTOR, "weekly", c, "regular", cron="0 10 * * 1")
        weekly_id = weekly.id
    edit(engine, percent="10")
    bid = builds.claim_next_build(engine, "w")
    with Session(engine) as s:
        assert s.get(Mailing, weekly_id).paused_by_build_id == bid

    def fail_from_now_on():
        inject_failure(engine)
        return False

    out = builds.run_build(engine, bid, worker="w", chunk_size=10, should_stop=fail_from_now_on)
    assert out == "failed"
    with Session(engine) as s:
        build = s.get(AudienceBuild, bid)
        assert build.status == "failed" and "injected failure" in build.error
        assert s.get(Mailing, weekly_id).paused_by_build_id is None
