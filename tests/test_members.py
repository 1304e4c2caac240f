"""Campaign members (issue 13 §1): keyset pages and the streamed export, on both backends."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session
from test_builds import make_db, make_segment, members, new_campaign, r10_rows, seg_remove

from console.cli.export import MEMBER_COLUMNS, write_members_csv, write_members_json
from store import members as store_members
from store.db import open_store, transaction
from store.errors import NotFoundError, ValidationError
from store.members import MemberFilter, MemberStream, member_page, parse_stratum
from store.models import CampaignMember


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


def _streamed(session, flt=None, name="c"):
    return [
        r for batch in MemberStream(session, name, flt or MemberFilter()).batches() for r in batch
    ]


def _csv(session, flt=None, name="c") -> str:
    out = io.StringIO()
    write_members_csv(MemberStream(session, name, flt or MemberFilter()), out)
    return out.getvalue()


def _csv_line(row) -> str:
    """How the export must render a member the pages show (docs/cli.md)."""
    out = io.StringIO()
    cells = (row.external_id, row.group, row.stratum_label, row.joined_at.isoformat())
    csv.writer(out, lineterminator="\n").writerow((*cells, row.source, row.cohort))
    return out.getvalue()


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
        streamed = _streamed(s)
        assert sorted(r.external_id for r in streamed) == paged
        control = _streamed(s, MemberFilter(group="control"))
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


@pytest.mark.parametrize(
    "flt",
    [
        MemberFilter(),
        MemberFilter(group="control"),
        MemberFilter(group="test", stratum=(("region", "Kazan"),)),
        MemberFilter(stratum=(("int_field", "80"), ("region", "Moscow"))),
    ],
    ids=["all", "control", "test+Kazan", "stratum"],
)
def test_export_over_many_batches_is_exactly_the_pages(engine, monkeypatch, flt):
    """Exact for uplift analysis: every current member once, nobody else, each rendered as
    the pages render it, however many batches the stream takes."""
    _r10_campaign(engine)
    seg_remove(engine, ["P001", "P050", "P077"])  # R4: closed memberships are left out
    monkeypatch.setattr(store_members, "STREAM_BATCH", 7)  # 100 members: 14 batches
    with Session(engine) as s:
        paged = _all_pages(s, flt, limit=9)
        assert paged and "P001" not in {r.external_id for r in paged}
        assert sorted(_streamed(s, flt)) == sorted(paged)  # every field, every member
        lines = _csv(s, flt).splitlines(keepends=True)
    assert lines[0] == ",".join(MEMBER_COLUMNS) + "\n"
    assert sorted(lines[1:]) == sorted(_csv_line(r) for r in paged)


def test_export_cells_pin_time_zone_precision_and_empty_cohort(engine):
    """joined_at is ISO 8601 in UTC with microseconds when there are any; a member whose
    group was decided with the LCG off has an empty cohort (CSV) / null (JSON)."""
    _r10_campaign(engine)
    new_campaign(engine, name="off")  # same segment, LCG off: cohort None, stratum 'all'
    _fix_join_instants(engine)
    with Session(engine) as s:
        rows = list(csv.DictReader(io.StringIO(_csv(s))))
        off = list(csv.DictReader(io.StringIO(_csv(s, name="off"))))
        off_json = io.StringIO()
        write_members_json(MemberStream(s, "off"), off_json)
    assert {r["joined_at"] for r in rows} == {
        "2026-01-02T03:04:05.000120+00:00",
        "2026-01-02T03:04:06+00:00",
    }
    assert {(r["stratum"], r["cohort"]) for r in off} == {("all", "")}
    assert len(off) == 100 and {r["cohort"] for r in rows} == {"1"}
    assert '"cohort": null' in off_json.getvalue() and '"stratum": {}' in off_json.getvalue()


def _fix_join_instants(engine) -> None:
    """Known join instants (one with microseconds, one without) through the column type."""
    with transaction(engine) as s:
        for parity, at in (
            (0, datetime(2026, 1, 2, 3, 4, 5, 120, UTC)),
            (1, datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)),
        ):
            s.execute(
                sa.update(CampaignMember)
                .where(CampaignMember.profile_id % 2 == parity)
                .values(joined_at=at)
            )


def _exports(engine) -> tuple[str, str]:
    _r10_campaign(engine)
    new_campaign(engine, name="off")
    _fix_join_instants(engine)
    with Session(engine) as s:
        as_json = io.StringIO()
        write_members_json(MemberStream(s, "c"), as_json)
        return _csv(s) + _csv(s, name="off"), as_json.getvalue()


@pytest.mark.postgres
def test_both_backends_export_identical_files(sqlite_engine, postgres_url):
    postgres = open_store(postgres_url)
    try:
        assert _exports(postgres) == _exports(sqlite_engine)
    finally:
        postgres.dispose()


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def test_export_memory_follows_the_batch_not_the_campaign(engine, monkeypatch):
    """Constant memory: the stream holds one batch of rows at a time, so its peak is set by
    STREAM_BATCH, not by the number of members (on PostgreSQL a server-side cursor keeps
    the result; a client-side one would hold every row)."""
    rows = [(f"M{i:05d}", ("North", "South")[i % 2], 10 * (i % 3), False) for i in range(3000)]
    make_segment(engine, db_id=make_db(engine, rows))
    new_campaign(engine, lcg_percent="10", lcg_strata=["region"])

    def peak(batch: int) -> tuple[int, int]:
        monkeypatch.setattr(store_members, "STREAM_BATCH", batch)
        with Session(engine) as s:
            write_members_csv(MemberStream(s, "c"), io.StringIO())  # warm: compile, caches
            tracemalloc.start()
            try:
                count = write_members_csv(MemberStream(s, "c"), _Discard())
                return count, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    (whole, whole_peak), (streamed, streamed_peak) = peak(3000), peak(100)
    assert whole == streamed == 3000
    assert streamed_peak * 3 < whole_peak, (streamed_peak, whole_peak)
    if engine.dialect.name == "postgresql":
        with Session(engine) as s:
            batches = MemberStream(s, "c").stored_batches()
            next(batches)
            cursors = s.connection().exec_driver_sql("SELECT name FROM pg_cursors").scalars().all()
            assert [c for c in cursors if c.startswith("campaign_members_")], cursors
            batches.close()
            assert not s.connection().exec_driver_sql("SELECT name FROM pg_cursors").all()


def test_a_stratum_filter_value_may_hold_commas():
    """A comma starts the next FIELD=VALUE only before a field name and "=": a region
    "Kazan, Tatarstan" (CSV files quote such values) can be selected, as its label shows it."""
    assert parse_stratum("region=Kazan, Tatarstan,int_field=80") == (
        ("region", "Kazan, Tatarstan"),
        ("int_field", "80"),
    )
    assert parse_stratum("region=North, int_field=80") == (
        ("region", "North"),
        ("int_field", "80"),
    )
    assert parse_stratum("region=a,b") == (("region", "a,b"),)
    assert parse_stratum(" ") == ()
