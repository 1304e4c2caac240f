"""References between rows hold on both backends (revision 0008).

SQLite checks them by foreign key. PostgreSQL checks the five references that bulk writes
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


def _member(w: World, profile: int, **refs: int | None) -> CampaignMember:
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
        # References to profile stay foreign keys: each row names another profile.
        for table in ("segment_member", "campaign_member"):
            columns = [fk["constrained_columns"] for fk in inspector.get_foreign_keys(table)]
            assert ["profile_id"] in columns
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
