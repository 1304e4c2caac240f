"""References between rows hold on both backends (revisions 0008 and 0009).

SQLite checks them by foreign key. PostgreSQL checks the references that bulk writes
repeat on every row (store.migrate.STATEMENT_CHECKED) once per statement, by trigger: a row
naming a missing parent undoes its statement, and a parent still referenced cannot be
deleted, renumbered or truncated. The same assertions run on both backends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store import migrate
from store.models import (
    AudienceBuild,
    Campaign,
    CampaignMember,
    Profile,
    ProfileDatabase,
    Segment,
    SegmentMember,
    UTCDateTime,
)

WHEN = datetime(2026, 3, 1, tzinfo=UTC)
MISSING = 999_999


@dataclass(frozen=True)
class World:
    database: int
    profiles: tuple[int, int]
    segment: int
    campaign: int
    build: int


@pytest.fixture
def world(engine: Engine) -> World:
    return _world(engine)


def _world(engine: Engine) -> World:
    with Session(engine) as s:
        database = ProfileDatabase(name="retail")
        s.add(database)
        s.flush()
        profiles = [Profile(database_id=database.id, external_id=f"P{i}") for i in (1, 2)]
        segment = Segment(name="vip", database_id=database.id)
        s.add_all([*profiles, segment])
        s.flush()
        campaign = Campaign(name="c", database_id=database.id, segment_id=segment.id, seed=1)
        s.add(campaign)
        s.flush()
        build = AudienceBuild(campaign_id=campaign.id, reason="activation", checkpoint={})
        s.add(build)
        s.commit()
        return World(
            database.id,
            (profiles[0].id, profiles[1].id),
            segment.id,
            campaign.id,
            build.id,
        )


def _member(w: World, profile: int, **refs: object) -> CampaignMember:
    values = {"campaign_id": w.campaign, "joined_build_id": w.build, **refs}
    return CampaignMember(
        profile_id=profile,
        group="test",
        joined_group="test",
        source="activation",
        assignment_hash=1,
        joined_at=WHEN,
        **values,
    )


# (table, column) -> (parent table, the child row for profile i naming `ref`)
ROWS: dict[tuple[str, str], tuple[str, Callable[[World, int, int | None], object]]] = {
    ("profile", "database_id"): (
        "profile_database",
        lambda w, i, ref: Profile(database_id=ref, external_id=f"N{i}"),
    ),
    ("segment_member", "segment_id"): (
        "segment",
        lambda w, i, ref: SegmentMember(
            segment_id=ref, profile_id=w.profiles[i], entered_at=WHEN, entered_by="t"
        ),
    ),
    # Both rows name one profile: the second is a closed interval (one open per profile).
    ("segment_member", "profile_id"): (
        "profile",
        lambda w, i, ref: SegmentMember(
            segment_id=w.segment,
            profile_id=ref,
            entered_at=WHEN,
            entered_by="t",
            left_at=WHEN if i else None,
        ),
    ),
    ("campaign_member", "profile_id"): (
        "profile",
        lambda w, i, ref: _member(w, ref, left_at=WHEN if i else None),
    ),
    ("campaign_member", "campaign_id"): (
        "campaign",
        lambda w, i, ref: _member(w, w.profiles[i], campaign_id=ref),
    ),
    ("campaign_member", "joined_build_id"): (
        "audience_build",
        lambda w, i, ref: _member(w, w.profiles[i], joined_build_id=ref),
    ),
    ("campaign_member", "left_build_id"): (
        "audience_build",
        lambda w, i, ref: _member(
            w, w.profiles[i], joined_build_id=None, left_build_id=ref, left_at=WHEN
        ),
    ),
}


def test_the_rows_here_cover_every_statement_checked_reference():
    assert set(ROWS) == migrate.STATEMENT_CHECKED


def _parent_id(w: World, parent: str) -> int:
    return {
        "profile_database": w.database,
        "segment": w.segment,
        "campaign": w.campaign,
        "audience_build": w.build,
        "profile": w.profiles[0],
    }[parent]


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


def _refused(error: pytest.ExceptionInfo[sa.exc.IntegrityError], name: str = "") -> None:
    """Refused as a broken reference; on PostgreSQL, by the reference `name` (the
    `table_column_fkey` of the one under test), not another table's foreign key."""
    text = str(error.value)
    assert "foreign key" in text.lower(), text
    if "psycopg" in text:
        assert name in text, text


@pytest.mark.parametrize("reference", sorted(ROWS), ids="{0[0]}.{0[1]}".format)
def test_a_row_naming_a_missing_parent_undoes_its_statement(engine, world, reference):
    table, column = reference
    parent, row = ROWS[reference]
    good = _parent_id(world, parent)
    before = _count(engine, table)
    with Session(engine) as s:
        s.add_all([row(world, 0, good), row(world, 1, MISSING)])
        with pytest.raises(sa.exc.IntegrityError) as error:
            s.commit()
    _refused(error, f"{table}_{column}_fkey")
    assert _count(engine, table) == before

    with Session(engine) as s:  # the same rows with existing parents are stored
        s.add_all([row(world, 0, good), row(world, 1, good)])
        s.commit()
    assert _count(engine, table) == before + 2


@pytest.mark.parametrize("reference", sorted(ROWS), ids="{0[0]}.{0[1]}".format)
def test_an_update_to_a_missing_parent_is_refused(engine, world, reference):
    table, column = reference
    parent, row = ROWS[reference]
    with Session(engine) as s:
        s.add(row(world, 0, _parent_id(world, parent)))
        s.commit()
    with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError) as error:
            conn.exec_driver_sql(f"UPDATE {table} SET {column} = {MISSING}")
        conn.rollback()
        _refused(error, f"{table}_{column}_fkey")
        assert (
            conn.exec_driver_sql(
                f"SELECT count(*) FROM {table} WHERE {column} = {MISSING}"
            ).scalar_one()
            == 0
        )


@pytest.mark.parametrize("reference", sorted(ROWS), ids="{0[0]}.{0[1]}".format)
def test_a_referenced_parent_cannot_be_deleted_or_renumbered(engine, world, reference):
    """Other tables' foreign keys refuse some of these too (a campaign's builds): on
    PostgreSQL the refusal must name this reference."""
    table, column = reference
    parent, row = ROWS[reference]
    referenced = _parent_id(world, parent)
    with Session(engine) as s:
        s.add(row(world, 0, referenced))
        s.commit()
    with engine.connect() as conn:
        for statement in (
            f"UPDATE {parent} SET id = {MISSING} WHERE id = {referenced}",
            f"DELETE FROM {parent} WHERE id = {referenced}",
        ):
            with pytest.raises(sa.exc.IntegrityError) as error:
                conn.exec_driver_sql(statement)
            conn.rollback()
            _refused(error, f"{table}_{column}_fkey")
        assert (
            conn.exec_driver_sql(
                f"SELECT count(*) FROM {parent} WHERE id = {referenced}"
            ).scalar_one()
            == 1
        )


def test_an_unreferenced_parent_can_be_deleted(engine, world):
    with Session(engine) as s:
        s.add(ProfileDatabase(name="spare"))
        s.commit()
    with engine.begin() as conn:
        deleted = conn.exec_driver_sql("DELETE FROM profile_database WHERE name = 'spare'")
        assert deleted.rowcount == 1


# ---------------------------------------------------------------- PostgreSQL: triggers


def _database(engine: Engine) -> int:
    with Session(engine) as s:
        database = ProfileDatabase(name="retail")
        s.add(database)
        s.commit()
        return database.id


@pytest.mark.postgres
def test_postgresql_checks_the_bulk_references_by_statement_and_keeps_the_others(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        inspector = sa.inspect(engine)
        for table, column in migrate.STATEMENT_CHECKED:
            columns = [fk["constrained_columns"] for fk in inspector.get_foreign_keys(table)]
            assert [column] not in columns, (table, column)
        # The references that no bulk write repeats stay foreign keys.
        for table in ("profile_event", "delivery"):
            columns = [fk["constrained_columns"] for fk in inspector.get_foreign_keys(table)]
            assert ["profile_id"] in columns, table
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_referenced_parent_cannot_be_truncated(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with Session(engine) as s:
            s.add(Profile(database_id=_database(engine), external_id="P1"))
            s.commit()
        with engine.connect() as conn:
            with pytest.raises(sa.exc.IntegrityError) as error:
                conn.exec_driver_sql("TRUNCATE profile_database CASCADE")
            _refused(error, "profile_database_id_fkey")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_parent_locked_by_a_pending_insert_cannot_be_deleted_meanwhile(postgres_url):
    """The statement's check locks the parent rows it found (FOR KEY SHARE, as a foreign
    key does): a concurrent delete waits for the insert's transaction instead of leaving
    an orphan behind it."""
    engine = sa.create_engine(postgres_url)
    try:
        database_id = _database(engine)
        with Session(engine) as writer, engine.connect() as deleter:
            writer.add(Profile(database_id=database_id, external_id="P1"))
            writer.flush()  # inserted and checked, not committed
            deleter.exec_driver_sql("SET lock_timeout = '200ms'")
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                deleter.exec_driver_sql("DELETE FROM profile_database")
            deleter.rollback()
            writer.commit()
            with pytest.raises(sa.exc.IntegrityError) as error:  # it sees the committed row
                deleter.exec_driver_sql("DELETE FROM profile_database")
            _refused(error, "profile_database_id_fkey")
    finally:
        engine.dispose()


def test_one_statement_naming_several_parents_is_checked_for_each(engine, world):
    """A bulk write names one parent per reference (PostgreSQL locks that one row); a
    statement naming several is checked for every one of them."""
    with Session(engine) as s:
        other = AudienceBuild(campaign_id=world.campaign, reason="incremental", checkpoint={})
        s.add(other)
        s.commit()
        builds = (world.build, other.id)
    insert = (
        'INSERT INTO campaign_member (campaign_id, profile_id, "group", joined_group, source, '
        "stratum_key, assignment_hash, joined_at, joined_build_id, joined_by) VALUES "
        "(:c, :p1, 'test', 'test', 'activation', '', 1, :at, :b1, 't'), "
        "(:c, :p2, 'test', 'test', 'activation', '', 1, :at, :b2, 't')"
    )
    params = {"c": world.campaign, "p1": world.profiles[0], "p2": world.profiles[1], "at": WHEN}
    with engine.connect() as conn:
        statement = sa.text(insert).bindparams(sa.bindparam("at", type_=UTCDateTime()))
        with pytest.raises(sa.exc.IntegrityError) as error:
            conn.execute(statement, {**params, "b1": builds[0], "b2": MISSING})
        conn.rollback()
        _refused(error, "campaign_member_joined_build_id_fkey")
        conn.execute(statement, {**params, "b1": builds[0], "b2": builds[1]})
        conn.commit()
    assert _count(engine, "campaign_member") == 2


# ------------------------------------------- PostgreSQL: member -> profile, under a lock


def _segment_member(w: World, profile: int) -> SegmentMember:
    return SegmentMember(segment_id=w.segment, profile_id=profile, entered_at=WHEN, entered_by="t")


@pytest.mark.postgres
def test_a_referenced_profile_cannot_be_truncated(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        w = _world(engine)
        with Session(engine) as s:
            s.add(_segment_member(w, w.profiles[0]))
            s.commit()
        with engine.connect() as conn:
            with pytest.raises(sa.exc.IntegrityError) as error:
                conn.exec_driver_sql("TRUNCATE profile CASCADE")
            _refused(error, "segment_member_profile_id_fkey")
        assert _count(engine, "profile") == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_profile_delete_waits_for_a_pending_member_insert_and_then_sees_it(postgres_url):
    """Member inserts lock no profile row (revision 0009): they hold the profile table's
    reference lock shared until they end, and a delete of profiles takes it exclusive
    first, so it waits, then finds the member and is refused: no orphan either way."""
    engine = sa.create_engine(postgres_url)
    try:
        w = _world(engine)
        with Session(engine) as writer, engine.connect() as deleter:
            writer.add(_segment_member(w, w.profiles[0]))
            writer.flush()  # inserted and checked, not committed
            deleter.exec_driver_sql("SET lock_timeout = '200ms'")
            delete = f"DELETE FROM profile WHERE id = {w.profiles[0]}"
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                deleter.exec_driver_sql(delete)
            deleter.rollback()
            writer.commit()
            with pytest.raises(sa.exc.IntegrityError) as error:  # it sees the committed row
                deleter.exec_driver_sql(delete)
            _refused(error, "segment_member_profile_id_fkey")
        assert _count(engine, "segment_member") == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_member_insert_waits_for_a_pending_profile_delete_and_then_fails(postgres_url):
    """The other order: a delete in progress keeps member writers out until it ends; a
    writer then finds the profile gone and its statement is undone."""
    engine = sa.create_engine(postgres_url)
    try:
        w = _world(engine)
        insert = (
            'INSERT INTO campaign_member (campaign_id, profile_id, "group", joined_group, '
            "source, stratum_key, assignment_hash, joined_at, joined_build_id, joined_by) "
            f"VALUES ({w.campaign}, {w.profiles[1]}, 'test', 'test', 'activation', '', 1, "
            f"'2026-03-01', {w.build}, 't')"
        )
        with engine.connect() as deleter, engine.connect() as writer:
            assert (
                deleter.exec_driver_sql(f"DELETE FROM profile WHERE id = {w.profiles[1]}").rowcount
                == 1
            )  # not committed
            writer.exec_driver_sql("SET lock_timeout = '200ms'")
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                writer.exec_driver_sql(insert)
            writer.rollback()
            deleter.commit()
            with pytest.raises(sa.exc.IntegrityError) as error:
                writer.exec_driver_sql(insert)
            _refused(error, "campaign_member_profile_id_fkey")
        assert _count(engine, "campaign_member") == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_under_repeatable_read_members_lock_their_profiles_and_deletes_are_refused(
    postgres_url,
):
    """A snapshot older than the lock could miss a delete (or, deleting, a member)
    committed meanwhile: a writer under REPEATABLE READ locks the profiles it names, as a
    foreign key does, and a delete under it is refused with the reason."""
    engine = sa.create_engine(postgres_url)
    try:
        w = _world(engine)
        repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
        with Session(repeatable) as s:  # still checked, by row lock
            s.add_all([_segment_member(w, w.profiles[0]), _segment_member(w, MISSING)])
            with pytest.raises(sa.exc.IntegrityError) as error:
                s.commit()
            _refused(error, "segment_member_profile_id_fkey")
        with Session(repeatable) as s:
            s.add(_segment_member(w, w.profiles[0]))
            s.commit()
        with repeatable.connect() as conn:
            for statement in (
                f"DELETE FROM profile WHERE id = {w.profiles[1]}",  # unreferenced, even
                f"DELETE FROM segment WHERE id = {w.segment}",  # 0008's parents too
            ):
                with pytest.raises(sa.exc.InternalError, match="needs READ COMMITTED"):
                    conn.exec_driver_sql(statement)
                conn.rollback()
        assert _count(engine, "profile") == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_repeatable_read_writer_cannot_reference_a_profile_deleted_after_its_snapshot(
    postgres_url,
):
    engine = sa.create_engine(postgres_url)
    try:
        w = _world(engine)
        repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
        with Session(repeatable) as writer:
            assert writer.get(Profile, w.profiles[1]) is not None  # its snapshot is taken
            with engine.begin() as deleter:
                deleter.exec_driver_sql(f"DELETE FROM profile WHERE id = {w.profiles[1]}")
            writer.add(_segment_member(w, w.profiles[1]))
            with pytest.raises(sa.exc.OperationalError, match="could not serialize"):
                writer.commit()
        assert _count(engine, "segment_member") == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_profile_check_plans_for_itself_whatever_the_writer_turned_off(postgres_url):
    """A delta build turns hash and merge joins off for its transaction. The check of the
    members it inserts must not inherit that: where the statistics misjudged the profiles
    it names, it became a nested loop over a materialised range of profiles, comparing
    every member with every profile of the range (3.5 s for 10,000 members). Here the
    writer turns off every way but that one; the check's plan, as auto_explain reports
    it, still reads the profiles by index or hash."""
    engine = sa.create_engine(postgres_url)
    try:
        w = _world(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO profile (database_id, external_id, hash_key, in_gcg, created_at) "
                f"SELECT {w.database}, 'A' || x, x, false, now() FROM generate_series(1, 3000) x"
            )
        plans: list[str] = []
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            raw.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
            for setting in (
                "LOAD 'auto_explain'",
                "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_nested_statements = on",
                "SET client_min_messages = log",
                "SET enable_hashjoin = off",  # as StepContext.prefer_index_joins does
                "SET enable_mergejoin = off",
                "SET enable_indexscan = off",  # and what the statistics' misjudging did
                "SET enable_indexonlyscan = off",
                "SET enable_bitmapscan = off",
            ):
                conn.exec_driver_sql(setting)
            conn.exec_driver_sql(
                "INSERT INTO segment_member (segment_id, profile_id, entered_at, entered_by) "
                f"SELECT {w.segment}, id, now(), 't' FROM profile"
            )
            conn.rollback()
        checks = [plan for plan in plans if "NOT EXISTS" in plan and "new_rows" in plan]
        assert len(checks) == 1, plans
        assert "Materialize" not in checks[0], checks[0]
        assert "Hash Anti Join" in checks[0] or "Index Only Scan" in checks[0], checks[0]
    finally:
        engine.dispose()
