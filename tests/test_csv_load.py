"""The shared skeleton of the CSV file loads (store/csv_load.py), on SQLite and PostgreSQL:
the pieces every load now takes from it, checked on the loads that took them last (GCG
files, event files)."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from store import events, gcg, imports, profiles
from store.db import transaction
from store.imports import READ_BATCH, ImportRejected
from store.models import Profile

IDS = [f"G{n:05d}" for n in range(READ_BATCH + 200)]  # more than one read batch


@pytest.fixture
def shop(engine, operator) -> str:
    with transaction(engine) as session:
        profiles.create_database(session, operator, "shop", [("region", "text")])
    ids = io.BytesIO(("external_id\n" + "".join(f"{i}\n" for i in IDS)).encode())
    with transaction(engine) as session:
        imports.import_profiles(session, operator, profiles.get_database(session, "shop"), ids)
    return "shop"


def apply_gcg(engine, actor, action: str, data: str) -> gcg.GcgFileResult:
    with transaction(engine) as session:
        database = profiles.get_database(session, "shop")
        return gcg.apply_gcg_file(session, actor, database, action, io.BytesIO(data.encode()))


def gcg_size(engine) -> int:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).where(Profile.in_gcg.is_(True))) or 0


def test_gcg_file_reports_ragged_rows_and_empty_ids_in_any_batch_and_changes_nothing(
    engine, operator, shop
):
    """R11a: a GCG file is all or nothing, each bad row reported at its line, in the
    second read batch as in the first."""
    rows = [f"{i}\n" for i in IDS]
    rows[3] = "G00003,extra\n"  # line 5
    rows[READ_BATCH + 50] = " \n"  # line READ_BATCH + 52: an empty external_id
    with pytest.raises(ImportRejected) as info:
        apply_gcg(engine, operator, "add", "external_id\n" + "".join(rows))
    found = [(p.line, p.column, p.reason) for p in info.value.problems]
    assert found == [
        (5, None, "ragged row: 2 cells where the header has 1"),
        (READ_BATCH + 52, "external_id", "empty external_id"),
    ]
    assert gcg_size(engine) == 0


def test_gcg_file_of_many_batches_applies_every_row(engine, operator, shop):
    result = apply_gcg(engine, operator, "add", "external_id\n" + "".join(f"{i}\n" for i in IDS))
    assert (result.rows, result.changed, result.unchanged) == (len(IDS), len(IDS), 0)
    assert gcg_size(engine) == len(IDS)


def test_header_only_gcg_file_changes_nothing_but_header_only_event_file_is_rejected(
    engine, operator, shop
):
    result = apply_gcg(engine, operator, "add", "external_id\n")
    assert result.as_dict() == {
        "database": "shop",
        "action": "add",
        "rows": 0,
        "changed": 0,
        "unchanged": 0,
    }
    header_only = io.BytesIO(b"external_id,event,at\n")
    with (
        pytest.raises(ImportRejected, match="a header but no rows"),
        transaction(engine) as session,
    ):
        events.import_events(session, operator, profiles.get_database(session, "shop"), header_only)


def test_load_results_print_their_fields_in_order_with_seconds_to_the_millisecond(
    engine, operator, shop
):
    data = io.BytesIO(b"external_id,event\nG00001,purchase\n")
    with transaction(engine) as session:
        database = profiles.get_database(session, "shop")
        result = events.import_events(session, operator, database, data)
    shown = result.as_dict()
    assert list(shown) == ["database", "rows", "first_id", "last_id", "seconds"]
    assert shown["seconds"] == round(result.seconds, 3)
    assert (shown["rows"], shown["first_id"]) == (1, shown["last_id"])
