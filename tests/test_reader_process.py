"""SQLite first loads of large files read, parse and hash the file in a forked reader
process while the calling process inserts (store/profile_load.py). What is stored, what
is reported and what is left after a problem must be what the same load gives in one
process; a reader process that dies changes nothing but the speed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from load_helpers import import_file, stored_profiles

from store import gcg, profile_load, profiles
from store.db import transaction
from store.imports import READ_BATCH, ImportRejected

FIELDS = [("region", "text"), ("int_field", "int"), ("signup", "date"), ("score", "float")]
HEADER = "external_id,region,int_field,signup,score"
SCRIPT = Path(sys.executable).parent / "campaign-console"


def make_file(count: int) -> list[str]:
    return [
        f"P{i:06d},{'' if i % 7 == 0 else 'Kazan'},{i - 500},"
        f"{'' if i % 5 == 0 else f'2024-02-{1 + i % 29:02d}'},{i / 8}"
        for i in range(count)
    ]


def as_bytes(lines: list[str]) -> bytes:
    return (HEADER + "\n" + "\n".join(lines) + "\n").encode()


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """Every file takes the reader process (no minimum size); counts the loads that did."""
    monkeypatch.setattr(profile_load, "PIPELINE_MIN_BYTES", 0)
    used: list[int] = []
    real = profile_load._from_reader_process

    def counted(batches):
        used.append(1)
        return real(batches)

    monkeypatch.setattr(profile_load, "_from_reader_process", counted)
    return used


load = import_file


def stored(engine, database: str) -> dict[str, tuple]:
    return stored_profiles(engine, database, "t0", "i0", "d0", "f0", "in_gcg", "hash_key")


def children() -> set[str]:
    """The processes this one started and has not reaped."""
    found: set[str] = set()
    for task in Path("/proc/self/task").iterdir():
        found |= set((task / "children").read_text().split())
    return found


def databases(engine, operator, *names: str) -> None:
    with transaction(engine) as session:
        for name in names:
            db = profiles.create_database(session, operator, name, FIELDS)
            gcg.set_percent(session, operator, db, "20")
            db.gcg_seed = 12345  # the same GCG choice in every database
            session.add(db)


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the reader process is Linux's")


def test_a_load_through_the_reader_process_stores_what_one_process_stores(
    sqlite_engine, operator, monkeypatch
):
    databases(sqlite_engine, operator, "piped", "direct")
    data = as_bytes(make_file(3 * READ_BATCH + 17))
    monkeypatch.setattr(profile_load, "PIPELINE_MIN_BYTES", len(data))  # direct: too small
    direct = load(sqlite_engine, operator, "direct", data)
    monkeypatch.setattr(profile_load, "PIPELINE_MIN_BYTES", 0)
    piped = load(sqlite_engine, operator, "piped", data)
    assert piped.rows == piped.inserted == direct.inserted == 3 * READ_BATCH + 17
    rows = stored(sqlite_engine, "piped")
    assert rows == stored(sqlite_engine, "direct")
    assert rows["P000003"][:4] == ("Kazan", -497, date(2024, 2, 4), 0.375)
    assert 0 < sum(v[4] for v in rows.values()) < len(rows)  # R11a: some held out
    assert children() == set()


def test_a_bad_cell_in_a_later_batch_is_reported_as_in_one_process(sqlite_engine, operator, forks):
    databases(sqlite_engine, operator, "retail")
    lines = make_file(3 * READ_BATCH)
    lines[2 * READ_BATCH + 3] = "LATE,Kazan,many,2024-01-01,1"
    with pytest.raises(ImportRejected) as info:
        load(sqlite_engine, operator, "retail", as_bytes(lines))
    assert forks == [1]
    assert [(p.line, p.column) for p in info.value.problems] == [(2 * READ_BATCH + 5, "int_field")]
    assert stored(sqlite_engine, "retail") == {}
    assert children() == set()


def test_a_duplicate_stops_the_reader_process_and_leaves_nothing(sqlite_engine, operator, forks):
    databases(sqlite_engine, operator, "retail")
    lines = make_file(3 * READ_BATCH)
    lines[READ_BATCH + 10] = lines[4]  # found by the insert, while the reader reads on
    with pytest.raises(ImportRejected) as info:
        load(sqlite_engine, operator, "retail", as_bytes(lines))
    assert forks == [1]
    assert [(p.line, p.column, p.reason) for p in info.value.problems] == [
        (READ_BATCH + 12, "external_id", "duplicate external_id 'P000004' (first on line 6)")
    ]
    assert stored(sqlite_engine, "retail") == {}
    assert children() == set()
    assert load(sqlite_engine, operator, "retail", as_bytes(make_file(10))).inserted == 10


def test_a_bad_encoding_is_reported_at_its_line(sqlite_engine, operator, forks):
    databases(sqlite_engine, operator, "retail")
    data = as_bytes(make_file(2 * READ_BATCH))
    at = data.index(b"P001500")
    data = data[:at] + b"\xff" + data[at + 1 :]
    with pytest.raises(ImportRejected) as info:
        load(sqlite_engine, operator, "retail", data)
    assert forks == [1]
    assert [(p.line, p.reason[:30]) for p in info.value.problems] == [
        (1502, "bad encoding: byte 0xff at pos")
    ]
    assert stored(sqlite_engine, "retail") == {}


def test_a_reader_process_that_dies_changes_nothing_but_the_speed(
    sqlite_engine, operator, forks, monkeypatch
):
    databases(sqlite_engine, operator, "retail")
    parent = os.getpid()
    real = profile_load._ProfileWriter.prepare
    calls = []

    def dying(self, converted):
        calls.append(1)
        if os.getpid() != parent and len(calls) == 2:
            os._exit(9)  # killed in the middle of the file
        return real(self, converted)

    monkeypatch.setattr(profile_load._ProfileWriter, "prepare", dying)
    lines = make_file(3 * READ_BATCH)
    result = load(sqlite_engine, operator, "retail", as_bytes(lines))
    assert forks == [1]
    assert (result.rows, result.inserted) == (len(lines), len(lines))  # by the general path
    assert len(stored(sqlite_engine, "retail")) == len(lines)
    assert children() == set()


def test_the_command_line_loads_a_large_file_through_the_reader_process(sqlite_url, tmp_path):
    """The real CLI (one thread, a file above PIPELINE_MIN_BYTES); then the same file with
    a duplicate near its end is refused with the message of the general path."""
    env = {**os.environ, "CAMPAIGN_CONSOLE_CONFIG": os.devnull}
    env.pop("CAMPAIGN_CONSOLE_DB", None)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT), "--db", sqlite_url, *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    fields = "region:text,int_field:int,signup:date,score:float"
    for name in ("big", "other"):
        assert run("database", "create", name, "--fields", fields).returncode == 0
    lines = make_file(120_000)
    assert len(as_bytes(lines)) > profile_load.PIPELINE_MIN_BYTES
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_bytes(as_bytes(lines))
    lines[-3] = lines[7]
    bad.write_bytes(as_bytes(lines))
    done = run("import", "profiles", "--database", "big", str(good))
    assert done.returncode == 0, done.stderr
    assert "120,000 rows into 'big': 120,000 new" in done.stdout
    refused = run("import", "profiles", "--database", "other", str(bad))
    assert refused.returncode == 3
    assert (
        "line 119999, column external_id: duplicate external_id 'P000007' (first on line 9)"
        in refused.stderr
    )
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.text(
                    "SELECT d.name, COUNT(p.id) FROM profile_database d "
                    "LEFT JOIN profile p ON p.database_id = d.id GROUP BY d.name"
                )
            ).all()
        )
        row = conn.execute(
            sa.text("SELECT t0, i0, f0 FROM profile WHERE external_id = 'P000003'")
        ).one()
    engine.dispose()
    assert counts == {"big": 120_000, "other": 0}
    assert tuple(row) == ("Kazan", -497, 0.375)
