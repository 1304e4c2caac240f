"""The first load of an empty profile database goes straight into `profile`
(store/profile_load.py); the result must be what the general path gives, and a file that
is not a plain list of new profiles must be reported exactly as before, leaving nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from load_helpers import import_file, stored_profiles

from store import imports, profiles
from store.db import transaction
from store.imports import READ_BATCH, ImportRejected

FIELDS = [("region", "text"), ("int_field", "int"), ("signup", "date"), ("score", "float")]
HEADER = "external_id,region,int_field,signup,score"


def make_file(count: int) -> list[str]:
    return [
        f"P{i:05d},{'' if i % 7 == 0 else 'Kazan'},{i - 500},"
        f"{'' if i % 5 == 0 else f'2024-02-{1 + i % 29:02d}'},{i / 8}"
        for i in range(count)
    ]


def load(engine, actor, database: str, lines: list[str]) -> imports.ImportResult:
    return import_file(engine, actor, database, (HEADER + "\n" + "\n".join(lines) + "\n").encode())


def stored(engine, database: str) -> dict[str, tuple]:
    return stored_profiles(engine, database, "t0", "i0", "d0", "f0", "in_gcg", "created_at")


def test_a_first_load_stores_what_the_general_path_stores(engine, operator):
    with transaction(engine) as session:
        profiles.create_database(session, operator, "first", FIELDS)
        profiles.create_database(session, operator, "general", FIELDS)
    lines = make_file(READ_BATCH + 321)
    load(engine, operator, "general", ["EXISTING,Sochi,1,,"])  # not empty: general path
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = load(engine, operator, "first", lines)
    general = load(engine, operator, "general", lines)
    assert (first.rows, first.inserted, first.updated) == (len(lines), len(lines), 0)
    assert (general.rows, general.inserted, general.updated) == (len(lines), len(lines), 0)
    loaded, reference = stored(engine, "first"), stored(engine, "general")
    del reference["EXISTING"]
    assert {k: v[:5] for k, v in loaded.items()} == {k: v[:5] for k, v in reference.items()}
    assert loaded["P00003"][:5] == ("Kazan", -497, datetime(2024, 2, 4).date(), 0.375, False)
    assert all(before <= v[5] <= datetime.now(UTC) for v in loaded.values())
    with transaction(engine) as session:
        assert profiles.get_database(session, "first").profile_count == len(lines)


@pytest.mark.parametrize("where", ["first batch", "later batch"])
def test_a_duplicate_in_a_first_load_is_reported_and_leaves_nothing(engine, operator, where):
    with transaction(engine) as session:
        profiles.create_database(session, operator, "retail", FIELDS)
    lines = make_file(2 * READ_BATCH + 50)
    at = 20 if where == "first batch" else 2 * READ_BATCH + 10  # rows before it are written
    lines[at] = lines[4]
    with pytest.raises(ImportRejected) as info:
        load(engine, operator, "retail", lines)
    assert [(p.line, p.column, p.reason) for p in info.value.problems] == [
        (at + 2, "external_id", "duplicate external_id 'P00004' (first on line 6)")
    ]
    assert stored(engine, "retail") == {}
    with transaction(engine) as session:
        assert profiles.get_database(session, "retail").profile_count == 0
    # The same database then takes a clean file by the first-load path.
    assert load(engine, operator, "retail", make_file(10)).inserted == 10


def test_a_bad_cell_in_a_later_batch_of_a_first_load_leaves_nothing(engine, operator):
    with transaction(engine) as session:
        profiles.create_database(session, operator, "retail", FIELDS)
    lines = make_file(2 * READ_BATCH + 50)
    lines[2 * READ_BATCH + 3] = "LATE,Kazan,many,2024-01-01,1"
    with pytest.raises(ImportRejected) as info:
        load(engine, operator, "retail", lines)
    assert [(p.line, p.column) for p in info.value.problems] == [(2 * READ_BATCH + 5, "int_field")]
    assert stored(engine, "retail") == {}


def test_a_first_load_decides_the_gcg_of_each_new_profile_by_the_percent(engine, operator):
    """R11a: a new profile's GCG membership is decided when it is created, also when it is
    created by the first load of a database whose GCG percent was set while it was empty."""
    from store import gcg

    with transaction(engine) as session:
        for name in ("first", "general"):
            db = profiles.create_database(session, operator, name, FIELDS)
            gcg.set_percent(session, operator, db, "20")
    with transaction(engine) as session:  # the same seed, so the same choice of profiles
        first, general = (profiles.get_database(session, n) for n in ("first", "general"))
        general.gcg_seed = first.gcg_seed
        session.add(general)
    lines = make_file(READ_BATCH + 321)
    load(engine, operator, "general", ["EXISTING,Sochi,1,,"])  # not empty: general path
    load(engine, operator, "first", lines)
    load(engine, operator, "general", lines)
    loaded, reference = stored(engine, "first"), stored(engine, "general")
    del reference["EXISTING"]
    held = {k for k, v in loaded.items() if v[4]}
    assert held == {k for k, v in reference.items() if v[4]}
    assert 0.15 * len(lines) < len(held) < 0.25 * len(lines)
