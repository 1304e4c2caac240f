"""Campaign members (issue 13 §1): keyset pages and the streamed export, on both backends."""

from __future__ import annotations

import pytest
from sqlmodel import Session
from test_builds import make_db, make_segment, members, new_campaign, r10_rows, seg_remove

from store.errors import NotFoundError, ValidationError
from store.members import MemberFilter, iter_members, member_page, parse_stratum


def _r10_campaign(engine, **kw):
    make_db(engine, r10_rows() + [("X001", "Moscow", 20, True)])  # X001: in the GCG (R1)
    make_segment(engine, db_id=None, external_ids=[r[0] for r in r10_rows()] + ["X001"])
    return new_campaign(engine, lcg_percent="15", lcg_strata=["int_field", "region"], **kw)


def _all_pages(session, flt=None, limit=7):
    flt = flt or MemberFilter()
    out, after = [], None
    while True:
        page = member_page(session, "c", flt, after=after, limit=limit)
        out.extend(page.rows)
        if page.next_after is None:
            return out
        after = page.next_after


def test_pages_walk_every_current_member_once_in_external_id_order(engine):
    _r10_campaign(engine)
    seg_remove(engine, ["P001", "P050"])  # R4: closed memberships are not current members
    stored = members(engine)
    with Session(engine) as s:
        rows = _all_pages(s)
    assert [r.external_id for r in rows] == sorted(stored)
    assert {r.external_id: r.group for r in rows} == stored
    assert "P001" not in stored and "X001" not in stored


def test_group_and_stratum_filters_keep_exactly_the_matching_members(engine):
    _r10_campaign(engine)
    stored = members(engine)
    with Session(engine) as s:
        control = _all_pages(s, MemberFilter(group="control"))
        assert [r.external_id for r in control] == sorted(
            e for e, g in stored.items() if g == "control"
        )
        assert len(control) == 15  # R10 worked example: quotas 1, 1, 1, 4, 4, 4
        kazan80 = _all_pages(s, MemberFilter(stratum=parse_stratum("region=Kazan,int_field=80")))
        assert len(kazan80) == 26
        assert {r.stratum_label for r in kazan80} == {"int_field=80, region=Kazan"}
        assert {r.stratum["int_field"] for r in kazan80} == {80}
        kazan_control = member_page(
            s, "c", MemberFilter(group="control", stratum=(("region", "Kazan"),))
        )
        assert sum(1 for r in kazan_control.rows) == 1 + 4
        assert kazan_control.matching == 5


def test_prefix_filter_and_empty_results(engine):
    _r10_campaign(engine)
    with Session(engine) as s:
        rows = _all_pages(s, MemberFilter(prefix="P01"))
        assert [r.external_id for r in rows] == [f"P01{i}" for i in range(10)]
        assert member_page(s, "c", MemberFilter(prefix="Q")).rows == []
        assert member_page(s, "c", MemberFilter(stratum=(("region", "Paris"),))).rows == []


def test_export_streams_the_same_members_as_the_pages(engine):
    _r10_campaign(engine)
    with Session(engine) as s:
        paged = sorted(r.as_dict()["external_id"] for r in _all_pages(s, limit=13))
        streamed = list(iter_members(s, "c"))
        assert sorted(r.external_id for r in streamed) == paged
        control = list(iter_members(s, "c", MemberFilter(group="control")))
        assert len(control) == 15 and {r.group for r in control} == {"control"}
        row = streamed[0].as_dict()
        assert set(row) == {"external_id", "group", "stratum", "joined_at", "source", "cohort"}
        assert row["source"] == "activation" and row["cohort"] == 1


def test_bad_filters_are_refused_with_the_reason(engine):
    _r10_campaign(engine)
    with Session(engine) as s:
        with pytest.raises(ValidationError, match="not a strata field"):
            member_page(s, "c", MemberFilter(stratum=(("tier", "1"),)))
        with pytest.raises(ValidationError, match="test or control"):
            member_page(s, "c", MemberFilter(group="vip"))
        with pytest.raises(ValidationError, match="FIELD=VALUE"):
            parse_stratum("region")
        with pytest.raises(NotFoundError):
            member_page(s, "nope")
