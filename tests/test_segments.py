"""Segment membership: static add/remove/replace and dynamic refresh (R3, R4, R12).

Every test runs on a real SQLite file and a real PostgreSQL schema (`engine` fixture).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from store import profiles, segments
from store.db import open_store, transaction
from store.errors import InvalidStateError, NotFoundError, ReadOnlyError, ValidationError
from store.models import AuditEntry, Profile, Segment, SegmentMember
from store.rules import RuleError
from store.segment_views import segment_overview

FIELDS = [("region", "text"), ("tier", "int"), ("ltv", "float"), ("signup", "date")]
REGIONS = ["Moscow", "Kazan", "Sochi"]


def make_database(engine, actor, name="retail", n=30, prefix="P"):
    """A database of n profiles: region cycles over REGIONS, tier = i % 3 + 1."""
    with transaction(engine) as session:
        database = profiles.create_database(session, actor, name, FIELDS)
        slots = {f.name: f.slot for f in profiles.database_fields(session, database.id)}
        for i in range(n):
            values = {
                slots["region"]: REGIONS[i % 3],
                slots["tier"]: i % 3 + 1,
                slots["ltv"]: float(i),
                slots["signup"]: date(2024, 1, 1 + i % 28),
            }
            session.add(Profile(database_id=database.id, external_id=f"{prefix}{i:03d}", **values))
    return database


def ids_where(engine, clause, **params):
    with Session(engine) as session:
        return sorted(session.scalars(sa.text(f"SELECT id FROM profile WHERE {clause}"), params))


def open_member_ids(engine, segment_name):
    with Session(engine) as session:
        segment = segments.get_segment(session, segment_name)
        return sorted(
            session.scalars(
                sa.select(SegmentMember.profile_id).where(
                    SegmentMember.segment_id == segment.id, SegmentMember.left_at.is_(None)
                )
            )
        )


def intervals(engine, segment_name):
    with Session(engine) as session:
        segment = segments.get_segment(session, segment_name)
        return list(
            session.scalars(
                sa.select(SegmentMember)
                .where(SegmentMember.segment_id == segment.id)
                .order_by(SegmentMember.id)
            )
        )


def counter(engine, segment_name):
    with Session(engine) as session:
        segment = segments.get_segment(session, segment_name)
        return segment.member_count, segment.version


def assert_counter_matches(engine, segment_name):
    count, _version = counter(engine, segment_name)
    assert count == len(open_member_ids(engine, segment_name))


# --------------------------------------------------------------------------- creation


def test_create_static_segment_and_get_it(engine, operator):
    with transaction(engine) as session:
        created = segments.create_segment(session, operator, "newsletter")
    with Session(engine) as session:
        segment = segments.get_segment(session, "newsletter")
        assert segment.id == created.id
        assert segment.kind == "static"
        assert segment.member_count == 0
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "segment.create"))
        assert entry.actor == "alice" and entry.target_name == "newsletter"
        with pytest.raises(NotFoundError):
            segments.get_segment(session, "nope")


def test_create_segment_refuses_duplicate_name_and_bad_schedule(engine, operator):
    database = make_database(engine, operator, n=3)
    with transaction(engine) as session:
        segments.create_segment(session, operator, "dup")
    cases = [
        dict(name="dup"),
        dict(name=" "),
        dict(name="s1", every_seconds=60),  # static: no schedule
        dict(name="s2", database=database, rule="tier = 1", every_seconds=0),
        dict(name="s3", database=database, rule="tier = 1", every_seconds=5, cron="* * * * *"),
        dict(name="s4", database=database, rule="tier = 1", cron="not a cron"),
        dict(name="s5", rule="tier = 1"),  # dynamic without a database
        dict(name="s6", database=database, rule="tier = 'one'"),
        dict(name="s7", database=database, rule="colour = 'red'"),
    ]
    for kwargs in cases:
        name = kwargs.pop("name")
        with pytest.raises(ValidationError), transaction(engine) as session:
            segments.create_segment(session, operator, name, **kwargs)
    with Session(engine) as session:
        assert session.scalars(sa.select(Segment.name)).all() == ["dup"]


def test_create_dynamic_segment_with_schedule(engine, operator):
    database = make_database(engine, operator, n=3)
    with transaction(engine) as session:
        segments.create_segment(
            session, operator, "t1", database=database, rule="tier = 1", every_seconds=30
        )
        segments.create_segment(
            session, operator, "t2", database=database, rule="tier = 2", cron="*/5 * * * *"
        )
    with Session(engine) as session:
        t1 = segments.get_segment(session, "t1")
        assert (t1.kind, t1.rule, t1.refresh_every_seconds) == ("dynamic", "tier = 1", 30)
        assert segments.get_segment(session, "t2").refresh_cron == "*/5 * * * *"


# --------------------------------------------------------------------------- static changes


def test_add_profiles_where_is_set_based_and_idempotent(engine, operator):
    database = make_database(engine, operator)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "moscow")
        moscow = sa.text("database_id = :db AND t0 = 'Moscow'").bindparams(db=database.id)
        assert segments.add_profiles_where(session, operator, segment, moscow) == 10
        # Adding a profile already in the segment is a no-op.
        assert segments.add_profiles_where(session, operator, segment, moscow) == 0
        assert segment.member_count == 10
    assert open_member_ids(engine, "moscow") == ids_where(engine, "t0 = 'Moscow'")
    rows = intervals(engine, "moscow")
    assert len(rows) == 10
    assert {r.entered_by for r in rows} == {"alice"}
    assert len({r.entered_at for r in rows}) == 1  # one timestamp per operation
    assert_counter_matches(engine, "moscow")


def test_add_and_remove_by_ids_with_noops(engine, operator):
    make_database(engine, operator, n=10)
    all_ids = ids_where(engine, "1 = 1")
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "picked")
        assert segments.add_profiles(session, operator, segment, all_ids[:5]) == 5
        assert segments.add_profiles(session, operator, segment, all_ids[3:7]) == 2
        assert segments.remove_profiles(session, operator, segment, [all_ids[0], all_ids[9]]) == 1
        assert segments.remove_profiles(session, operator, segment, [all_ids[0]]) == 0
        assert segments.add_profiles(session, operator, segment, []) == 0
    assert open_member_ids(engine, "picked") == all_ids[1:7]
    assert_counter_matches(engine, "picked")
    closed = [r for r in intervals(engine, "picked") if r.left_at is not None]
    assert [(r.profile_id, r.left_by) for r in closed] == [(all_ids[0], "alice")]


def test_remove_and_readd_opens_a_new_interval(engine, operator):
    make_database(engine, operator, n=3)
    pid = ids_where(engine, "1 = 1")[0]
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "s")
        segments.add_profiles(session, operator, segment, [pid])
    with transaction(engine) as session:
        segments.remove_profiles(session, operator, segments.get_segment(session, "s"), [pid])
    with transaction(engine) as session:
        segments.add_profiles(session, operator, segments.get_segment(session, "s"), [pid])
    rows = intervals(engine, "s")
    assert [(r.left_at is None) for r in rows] == [False, True]
    assert rows[0].entered_at < rows[0].left_at <= rows[1].entered_at
    assert counter(engine, "s")[0] == 1


def test_remove_profiles_where_closes_with_one_timestamp(engine, operator):
    make_database(engine, operator, n=12)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "all")
        segments.add_profiles_where(session, operator, segment, sa.text("1 = 1"))
    with transaction(engine) as session:
        segment = segments.get_segment(session, "all")
        removed = segments.remove_profiles_where(
            session, operator, segment, sa.text("t0 = 'Kazan'")
        )
        assert removed == 4
        # Removing non-members is a no-op.
        assert (
            segments.remove_profiles_where(session, operator, segment, sa.text("t0 = 'Kazan'")) == 0
        )
    closed = [r for r in intervals(engine, "all") if r.left_at is not None]
    assert len(closed) == 4 and len({r.left_at for r in closed}) == 1
    assert open_member_ids(engine, "all") == ids_where(engine, "t0 <> 'Kazan'")
    assert_counter_matches(engine, "all")


def test_replace_profiles_where_applies_the_exact_diff(engine, operator):
    make_database(engine, operator, n=12)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "r")
        segments.add_profiles_where(session, operator, segment, sa.text("t0 = 'Moscow'"))
    with transaction(engine) as session:
        segment = segments.get_segment(session, "r")
        added, removed = segments.replace_profiles_where(
            session, operator, segment, sa.text("i0 = 2 OR t0 = 'Moscow' AND i0 = 1")
        )
    # Moscow is tier 1 here, Kazan tier 2: Moscow members stay, Kazan ones join.
    assert (added, removed) == (4, 0)
    with transaction(engine) as session:
        segment = segments.get_segment(session, "r")
        assert segments.replace_profiles_where(session, operator, segment, "t0 = 'Sochi'") == (
            4,
            8,
        )
        assert segments.replace_profiles_where(session, operator, segment, "t0 = 'Sochi'") == (
            0,
            0,
        )
    assert open_member_ids(engine, "r") == ids_where(engine, "t0 = 'Sochi'")
    assert_counter_matches(engine, "r")


def test_static_segment_holds_profiles_of_several_databases(engine, operator):
    first = make_database(engine, operator, name="first", n=4, prefix="A")
    second = make_database(engine, operator, name="second", n=4, prefix="B")
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "mixed")
        segments.add_profiles_where(session, operator, segment, sa.text("1 = 1"))
    with Session(engine) as session:
        segment = segments.get_segment(session, "mixed")
        dbs = session.scalars(
            sa.select(Profile.database_id)
            .distinct()
            .join(SegmentMember, SegmentMember.profile_id == Profile.id)
            .where(SegmentMember.segment_id == segment.id)
        ).all()
    assert sorted(dbs) == sorted([first.id, second.id])
    assert counter(engine, "mixed")[0] == 8


def test_version_bumps_only_when_members_change(engine, operator):
    make_database(engine, operator, n=3)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "v")
    v0 = counter(engine, "v")[1]
    with transaction(engine) as session:
        segment = segments.get_segment(session, "v")
        segments.add_profiles_where(session, operator, segment, sa.text("1 = 1"))
    v1 = counter(engine, "v")[1]
    with transaction(engine) as session:
        segment = segments.get_segment(session, "v")
        segments.add_profiles_where(session, operator, segment, sa.text("1 = 1"))
    assert v1 == v0 + 1
    assert counter(engine, "v")[1] == v1


def test_every_change_writes_one_audit_entry(engine, operator):
    make_database(engine, operator, n=6)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "a")
        segments.add_profiles_where(session, operator, segment, sa.text("1 = 1"))
        segments.remove_profiles_where(session, operator, segment, sa.text("t0 = 'Sochi'"))
        segments.replace_profiles_where(session, operator, segment, sa.text("t0 = 'Kazan'"))
    with Session(engine) as session:
        entries = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.target_type == "segment").order_by(AuditEntry.id)
        ).all()
    assert [(e.action, e.details.get("added"), e.details.get("removed")) for e in entries] == [
        ("segment.create", None, None),
        ("segment.add", 6, 0),
        ("segment.remove", 0, 2),
        ("segment.replace", 0, 2),
    ]
    assert {e.origin for e in entries} == {"ssh 203.0.113.7:50022"}


def test_read_only_actor_is_refused_and_nothing_changes(engine, operator, viewer):
    database = make_database(engine, operator, n=6)
    with transaction(engine) as session:
        segment = segments.create_segment(session, operator, "s")
        segments.add_profiles_where(session, operator, segment, sa.text("t0 = 'Moscow'"))
        segments.create_segment(session, operator, "d", database=database, rule="tier = 1")
    before = (intervals(engine, "s"), counter(engine, "s"))
    with Session(engine) as session:
        audit_before = session.scalar(sa.select(sa.func.max(AuditEntry.id)))
    attempts = [
        lambda s, seg: segments.create_segment(s, viewer, "new"),
        lambda s, seg: segments.add_profiles_where(s, viewer, seg, sa.text("1 = 1")),
        lambda s, seg: segments.add_profiles(s, viewer, seg, [1]),
        lambda s, seg: segments.remove_profiles(s, viewer, seg, [1]),
        lambda s, seg: segments.remove_profiles_where(s, viewer, seg, sa.text("1 = 1")),
        lambda s, seg: segments.replace_profiles_where(s, viewer, seg, sa.text("1 = 0")),
        lambda s, seg: segments.refresh(s, viewer, segments.get_segment(s, "d")),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyError), transaction(engine) as session:
            attempt(session, segments.get_segment(session, "s"))
    assert (intervals(engine, "s"), counter(engine, "s")) == before
    assert open_member_ids(engine, "d") == []
    with Session(engine) as session:
        refusals = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.id > audit_before).order_by(AuditEntry.id)
        ).all()
        assert session.scalar(sa.select(Segment.id).where(Segment.name == "new")) is None
    # The store audits each refusal itself, under the operation's action (issue 10 item 2).
    assert [(e.action, e.outcome, e.actor) for e in refusals] == [
        (action, "refused", viewer.user)
        for action in (
            "segment.create",
            "segment.add",
            "segment.add",
            "segment.remove",
            "segment.remove",
            "segment.replace",
            "segment.refresh",
        )
    ]


def test_static_changes_are_refused_on_a_dynamic_segment(engine, operator):
    database = make_database(engine, operator, n=3)
    with transaction(engine) as session:
        segments.create_segment(session, operator, "d", database=database, rule="tier = 1")
    with pytest.raises(InvalidStateError, match="dynamic"), transaction(engine) as session:
        segments.add_profiles_where(
            session, operator, segments.get_segment(session, "d"), sa.text("1 = 1")
        )
    assert open_member_ids(engine, "d") == []


# --------------------------------------------------------------------------- dynamic refresh


def set_tier(engine, external_ids, tier):
    with transaction(engine) as session:
        session.execute(
            sa.update(Profile).where(Profile.external_id.in_(external_ids)).values(i0=tier)
        )


def test_refresh_applies_the_diff_exactly_and_records_intervals(engine, operator):
    database = make_database(engine, operator, n=9)
    with transaction(engine) as session:
        segments.create_segment(
            session, operator, "gold", database=database, rule="tier = 3 and region != 'Kazan'"
        )
    with transaction(engine) as session:
        result = segments.refresh(session, operator, segments.get_segment(session, "gold"))
    # tier 3 is every third profile, all in Sochi (i % 3 == 2).
    assert result == segments.RefreshResult(entered=3, left=0)
    assert open_member_ids(engine, "gold") == ids_where(engine, "i0 = 3")

    set_tier(engine, ["P002", "P005"], 1)  # two leave
    set_tier(engine, ["P000", "P003"], 3)  # two Moscow profiles join
    with transaction(engine) as session:
        segment = segments.get_segment(session, "gold")
        result = segments.refresh(session, operator, segment)
        assert segment.last_refreshed_at is not None
    assert result == segments.RefreshResult(entered=2, left=2)
    assert open_member_ids(engine, "gold") == ids_where(
        engine, "external_id IN ('P000', 'P003', 'P008')"
    )
    rows = intervals(engine, "gold")
    left = [r for r in rows if r.left_at is not None]
    assert len(rows) == 5 and len(left) == 2
    assert left[0].left_at == max(r.entered_at for r in rows)  # one stamp per refresh
    assert_counter_matches(engine, "gold")
    with Session(engine) as session:  # the segments screen's figures, stored by the refresh
        shown = segment_overview(session, "gold")
        assert (shown.last_refresh_entered, shown.last_refresh_left) == (2, 2)

    with transaction(engine) as session:
        again = segments.refresh(session, operator, segments.get_segment(session, "gold"))
    assert again == segments.RefreshResult(entered=0, left=0)
    assert len(intervals(engine, "gold")) == 5
    with Session(engine) as session:
        shown = segment_overview(session, "gold")
        assert (shown.last_refresh_entered, shown.last_refresh_left) == (0, 0)


def test_refresh_only_considers_the_segment_database(engine, operator):
    first = make_database(engine, operator, name="first", n=6, prefix="A")
    make_database(engine, operator, name="second", n=6, prefix="B")
    with transaction(engine) as session:
        segments.create_segment(session, operator, "t1", database=first, rule="tier = 1")
        result = segments.refresh(session, operator, segments.get_segment(session, "t1"))
    assert result.entered == 2
    assert open_member_ids(engine, "t1") == ids_where(
        engine, "database_id = :db AND i0 = 1", db=first.id
    )


def test_refresh_with_dates_floats_in_lists_and_nulls(engine, operator):
    database = make_database(engine, operator, n=12)
    with transaction(engine) as session:
        session.execute(sa.update(Profile).where(Profile.external_id == "P001").values(t0=None))
        segments.create_segment(
            session,
            operator,
            "mixed",
            database=database,
            rule="(signup >= '2024-01-05' and ltv < 9.5 and region not in ('Sochi')) "
            "or region is null",
        )
        segments.refresh(session, operator, segments.get_segment(session, "mixed"))
    # signup day = 1 + i: i in 4..9 with ltv < 9.5 -> i in 4..9; not Sochi -> 4, 6, 7, 9
    # (5 and 8 are Sochi); plus P001 whose region is missing.
    assert open_member_ids(engine, "mixed") == ids_where(
        engine, "external_id IN ('P001', 'P004', 'P006', 'P007', 'P009')"
    )


def test_refresh_of_a_static_segment_is_refused(engine, operator):
    with transaction(engine) as session:
        segments.create_segment(session, operator, "s")
    with pytest.raises(InvalidStateError, match="static"), transaction(engine) as session:
        segments.refresh(session, operator, segments.get_segment(session, "s"))


def test_injection_attempt_stays_a_literal(engine, operator):
    database = make_database(engine, operator, n=6)
    with transaction(engine) as session:
        segments.create_segment(
            session,
            operator,
            "evil",
            database=database,
            rule="region = 'x'' OR 1=1; DROP TABLE profile; --'",
        )
        result = segments.refresh(session, operator, segments.get_segment(session, "evil"))
    assert result.entered == 0
    assert len(ids_where(engine, "1 = 1")) == 6


def test_bad_rule_message_names_position(engine, operator):
    database = make_database(engine, operator, n=1)
    expected = r"position 1: unknown field 'colour'.*region"
    with pytest.raises(RuleError, match=expected), transaction(engine) as session:
        segments.create_segment(session, operator, "bad", database=database, rule="colour = 'red'")


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.postgres
def test_concurrent_adds_serialise_on_the_segment_row(postgres_url, operator):
    """Two transactions adding the same profiles: the second waits, then finds no-ops
    (no unique-index failure, one interval per profile, exact counter)."""
    engine = open_store(postgres_url)
    try:
        make_database(engine, operator, n=6)
        with transaction(engine) as session:
            segments.create_segment(session, operator, "c")
        everyone = sa.text("1 = 1")
        first_done = threading.Event()
        release = threading.Event()
        results: dict[str, object] = {}

        def first():
            with transaction(engine) as session:
                seg = segments.get_segment(session, "c")
                results["first"] = segments.add_profiles_where(session, operator, seg, everyone)
                first_done.set()
                release.wait(10)

        def second():
            try:
                with transaction(engine) as session:
                    seg = segments.get_segment(session, "c")
                    results["second"] = segments.add_profiles_where(
                        session, operator, seg, everyone
                    )
            except Exception as exc:  # reported below
                results["second"] = exc

        t1 = threading.Thread(target=first)
        t1.start()
        assert first_done.wait(10)
        t2 = threading.Thread(target=second)
        t2.start()

        def second_is_waiting_on_a_lock():
            with engine.connect() as conn:
                return conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )

        _wait_until(second_is_waiting_on_a_lock)
        release.set()
        t1.join(10)
        t2.join(10)
        assert results == {"first": 6, "second": 0}
        assert len(intervals(engine, "c")) == 6
        assert_counter_matches(engine, "c")
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- properties

_ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "replace", "add_where", "remove_where"]),
        st.frozensets(st.integers(0, 7), max_size=8),
    ),
    min_size=1,
    max_size=8,
)


@given(ops=_ops)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_sequence_of_static_changes_matches_a_set_model(engine, operator, ops):
    """R12: after any sequence of add/remove/replace the open intervals equal the model
    set, the counter matches, each (re)entry is its own interval, and the card shows one
    entered_segment per entry and one left_segment per exit."""
    from store import history

    with Session(engine) as session:
        database = session.scalar(
            sa.select(profiles.ProfileDatabase).where(profiles.ProfileDatabase.name == "retail")
        )
    if database is None:
        make_database(engine, operator, n=8)
    all_ids = ids_where(engine, "1 = 1")
    name = f"prop-{uuid.uuid4().hex[:8]}"
    with transaction(engine) as session:
        segments.create_segment(session, operator, name)
    model: set[int] = set()
    entries: dict[int, int] = {}
    exits: dict[int, int] = {}
    for op, picks in ops:
        ids = {all_ids[i] for i in picks}
        id_list = ", ".join(map(str, sorted(ids))) or "NULL"
        where = sa.text(f"id IN ({id_list})")
        with transaction(engine) as session:
            segment = segments.get_segment(session, name)
            if op == "add":
                got = segments.add_profiles(session, operator, segment, ids)
                want = len(ids - model)
            elif op == "add_where":
                got = segments.add_profiles_where(session, operator, segment, where)
                want = len(ids - model)
            elif op == "remove":
                got = segments.remove_profiles(session, operator, segment, ids)
                want = len(ids & model)
            elif op == "remove_where":
                got = segments.remove_profiles_where(session, operator, segment, where)
                want = len(ids & model)
            else:
                got = segments.replace_profiles_where(session, operator, segment, where)
                want = (len(ids - model), len(model - ids))
        assert got == want, (op, sorted(picks))
        joined = ids - model if op in ("add", "add_where", "replace") else set()
        left = (ids & model) if op in ("remove", "remove_where") else set()
        if op == "replace":
            left = model - ids
        for pid in joined:
            entries[pid] = entries.get(pid, 0) + 1
        for pid in left:
            exits[pid] = exits.get(pid, 0) + 1
        model = (model | joined) - left
    assert open_member_ids(engine, name) == sorted(model)
    assert counter(engine, name)[0] == len(model)
    rows = intervals(engine, name)
    for pid in all_ids:
        mine = sorted((r for r in rows if r.profile_id == pid), key=lambda r: r.entered_at)
        assert len(mine) == entries.get(pid, 0)
        assert sum(r.left_at is None for r in mine) == (1 if pid in model else 0)
        for earlier, later in zip(mine, mine[1:], strict=False):
            assert earlier.left_at is not None and earlier.left_at <= later.entered_at
    with Session(engine) as session:
        external = dict(session.execute(sa.select(Profile.id, Profile.external_id)).all())
        for pid in all_ids:
            events = [
                e.kind
                for e in history.profile_card(session, "retail", external[pid]).events
                if e.segment == name
            ]
            assert events.count("entered_segment") == entries.get(pid, 0)
            assert events.count("left_segment") == exits.get(pid, 0)


def test_a_scheduled_refresh_with_nothing_to_do_is_not_audited(engine, operator):
    from store.actors import system_actor

    database = make_database(engine, operator, n=6)
    scheduler = system_actor()
    with transaction(engine) as session:
        segments.create_segment(session, operator, "d", database=database, rule="tier = 1")
    for _ in range(2):
        with transaction(engine) as session:
            segments.refresh(session, scheduler, segments.get_segment(session, "d"))
    with transaction(engine) as session:
        segments.refresh(session, operator, segments.get_segment(session, "d"))
    with Session(engine) as session:
        rows = session.execute(
            sa.select(AuditEntry.actor, AuditEntry.details)
            .where(AuditEntry.action == "segment.refresh")
            .order_by(AuditEntry.id)
        ).all()
        assert segments.get_segment(session, "d").last_refreshed_at is not None
    # The first scheduled refresh changed members; the second did not; the operator's
    # manual refresh is always recorded.
    assert [(actor, d["added"]) for actor, d in rows] == [("scheduler", 2), ("alice", 0)]
