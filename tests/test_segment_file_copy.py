"""Segment files on PostgreSQL: a plain file is streamed into the stage as it is and
parsed by the server (store.csv_import.copy_plain_csv); any other file is read row by row
as on SQLite. Whichever way a file goes, the outcome is the one SQLite gives: the same
members, or the same rejection with the same problems, and nothing left of the attempt.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from load_helpers import import_file, segment_members

from store import csv_import, imports, profiles, segments
from store.db import open_store, transaction
from store.errors import ValidationError
from store.imports import ImportRejected
from store.models import Segment

pytestmark = pytest.mark.postgres

# External ids of the profiles: some that a file must quote (a quote, a comma),
# and some that look like COPY's own syntax (a backslash, the end-of-data marker).
RETAIL = ["A", "B", "C", "a b", " lead", "trail ", "back\\slash", "\\.", "\\N", "é"]
RETAIL += ["x,y", 'q"t', "qt"]
WHOLESALE = ["A", "W"]


def _workspace(engine, operator) -> None:
    with transaction(engine) as session:
        profiles.create_database(session, operator, "retail", [])
        profiles.create_database(session, operator, "wholesale", [])
    for name, ids in (("retail", RETAIL), ("wholesale", WHOLESALE)):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([["external_id"], *[[e] for e in ids]])
        import_file(engine, operator, name, out.getvalue().encode())


@pytest.fixture
def engines(sqlite_engine, postgres_url, operator):
    postgres = open_store(postgres_url)
    for engine in (sqlite_engine, postgres):
        _workspace(engine, operator)
    yield sqlite_engine, postgres
    postgres.dispose()


@pytest.fixture
def copies(monkeypatch):
    """What each call of copy_plain_csv returned (the real function, observed)."""
    returned: list[int | None] = []
    real = imports.copy_plain_csv

    def observed(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(imports, "copy_plain_csv", observed)
    return returned


@contextmanager
def piped(data: bytes) -> Iterator[IO[bytes]]:
    """`data` as standard input gives it when a command is piped: a real pipe, read
    once, that cannot seek."""
    read, write = os.pipe()

    def feed() -> None:
        with os.fdopen(write, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with os.fdopen(read, "rb") as stream:
        assert not stream.seekable()
        yield stream
    writer.join(timeout=30)


@contextmanager
def in_memory(data: bytes) -> Iterator[IO[bytes]]:
    yield io.BytesIO(data)


def outcome(engine, operator, data: bytes, database: str | None, source=in_memory):
    """What adding `data` (given by `source`) to a new segment gives: its members, or the
    rejection."""
    with transaction(engine) as session:  # named alike on both engines, by its rank
        name = f"s{session.scalar(sa.select(sa.func.count()).select_from(Segment)) + 1}"
        segments.create_segment(session, operator, name)
    try:
        with transaction(engine) as session:
            seg = segments.get_segment(session, name)
            db = profiles.get_database(session, database) if database else None
            with source(data) as stream:
                result = imports.apply_segment_file(
                    session, operator, seg, "add", stream, database=db
                )
    except ImportRejected as rejected:
        problems = [(p.line, p.column, p.reason) for p in rejected.problems]
        return "rejected", problems, rejected.total, segment_members(engine, name)
    except ValidationError as invalid:
        return "invalid", str(invalid), segment_members(engine, name)
    return "added", result.rows, result.added, segment_members(engine, name)


PLAIN = {
    "one id per line": (b"external_id\nA\nB\n", "retail"),
    "BOM, CRLF, no last line end": (b"\xef\xbb\xbfexternal_id\r\nA\r\nB", "retail"),
    "COPY's escapes are text in CSV": (b"external_id\nback\\slash\n\\N\n", "retail"),
    "spaces are part of the id": (b"external_id \n lead\ntrail \na b\n", "retail"),
    "a database column": (b"database,external_id\nretail,A\nwholesale,W\nretail,B\n", None),
    "the segment's database, no column": (b"external_id\nW\n", "wholesale"),
    "a header and no rows": (b"external_id\n", "retail"),
    # Blank lines: csv.reader skips them, the server reads a NULL, deleted again.
    "a blank line": (b"external_id\nA\n\nB\n", "retail"),
    "blank lines first and last": (b"external_id\r\n\r\nA\r\n\r\n\r\n", "retail"),
    "a blank line across two chunks": ("external_id\né\n\nA\n".encode(), "retail"),
    # Quotes around whole values, as exporters write them: read alike by both parsers.
    "a quoted id": (b'external_id\n"A"\nB\n', "retail"),
    "a quote inside a quoted id": (b'external_id\n"q""t"\nA\n', "retail"),
    "a quoted comma": (b'external_id\n"x,y"\n', "retail"),
    "a quoted header": (b'"external_id"\nA\n', "retail"),
    "a quoted end-of-data marker is text": (b'external_id\n"\\."\nA\n', "retail"),
    "every value quoted, CRLF": (
        b'"database","external_id"\r\n"retail","A"\r\n"wholesale","W"\r\n',
        None,
    ),
    "a quoted id without its line end": (b'external_id\nA\n"B"', "retail"),
}


@pytest.mark.parametrize(("data", "database"), PLAIN.values(), ids=PLAIN.keys())
@pytest.mark.parametrize("chunk", [3, csv_import.COPY_CHUNK])
def test_a_plain_file_is_parsed_by_the_server_and_adds_what_sqlite_adds(
    engines, operator, copies, monkeypatch, data, database, chunk
):
    """Chunks of 3 bytes: a line end or a blank line falls across two chunks."""
    monkeypatch.setattr(csv_import, "COPY_CHUNK", chunk)
    sqlite, postgres = engines
    expected = outcome(sqlite, operator, data, database)
    assert copies == []  # SQLite reads every file in Python
    assert outcome(postgres, operator, data, database) == expected
    assert expected[0] == "added" and copies == [expected[1]]  # every row, by the server


OTHER = {
    "a quote inside an unquoted id": (b'external_id\nq"t\nA\n', "retail"),
    # The server would read qt (a quoted t), csv.reader q"t" (no profile has that id).
    "quotes inside an unquoted id": (b'external_id\nq"t"\nA\n', "retail"),
    # The server would read ' lead' (a space, then a quoted value), csv.reader ' "lead"'.
    "a space before a quoted id": (b'external_id\n "lead"\nA\n', "retail"),
    "a space after a quoted id": (b'external_id\n"trail" \nA\n', "retail"),
    "the same, last, without its line end": (b'external_id\nA\n "lead"', "retail"),
    "text after a quoted id": (b'external_id\n"A"B\nC\n', "retail"),
    "a quoted line end": (b'external_id\n"a\nb"\nA\n', "retail"),
    "a quoted carriage return": (b'external_id\n"A\rB"\nC\n', "retail"),
    "a quote never closed": (b'external_id\nA\n"B\nC\n', "retail"),
    "a quoted blank id": (b'external_id\nA\n""\n', "retail"),
    "quotes pairing across values": (b'external_id,database\nA",x,"retail\n', None),
    "a quote inside a header name": (b'external_id,data"base"\nA,retail\n', None),
    "a blank line and a database column": (b"external_id,database\nA,retail\n\n", None),
    "blank lines, mixed line ends": (b"external_id\nA\n\n\r\n", "retail"),
    "a blank first line": (b"\nexternal_id\nA\n", "retail"),
    "the end-of-data marker": (b"external_id\nA\n\\.\nB\n", "retail"),
    "a lone carriage return": (b"external_id\nA\rB\n", "retail"),
    "mixed line ends": (b"external_id\nA\r\nB\n", "retail"),
    "an unknown id": (b"external_id\nA\nZ\n", "retail"),
    "a repeated id": (b"external_id\nA\nB\nA\n", "retail"),
    "a blank id": (b"external_id\nA\n\nB\n \n", "retail"),
    "a ragged row": (b"external_id\nA,B\nC\n", "retail"),
    "an empty database cell": (b"external_id,database\nA,\nB,retail\n", None),
    "an unknown database": (b"external_id,database\nA,nowhere\n", None),
    "an unknown column": (b"external_id,region\nA,x\n", "retail"),
    "no database": (b"external_id\nA\n", None),
    "a NUL byte": (b"external_id\nA\x00\nB\n", "retail"),
    "not UTF-8": (b"external_id\nA\n\xe9\nB\n", "retail"),
    "the same id in two databases": (b"external_id,database\nA,retail\nA,wholesale\n", None),
}


@pytest.mark.parametrize(("data", "database"), OTHER.values(), ids=OTHER.keys())
@pytest.mark.parametrize("chunk", [4, csv_import.COPY_CHUNK])
def test_any_other_file_gives_what_sqlite_gives(
    engines, operator, monkeypatch, data, database, chunk
):
    """Small chunks: a quote found after the copy began abandons it midway."""
    monkeypatch.setattr(csv_import, "COPY_CHUNK", chunk)
    sqlite, postgres = engines
    assert outcome(postgres, operator, data, database) == outcome(sqlite, operator, data, database)


def test_a_file_the_server_refuses_midway_leaves_no_trace(engines, operator, copies, monkeypatch):
    """The copy fails after rows went in: the attempt is undone, the file read again."""
    monkeypatch.setattr(csv_import, "COPY_CHUNK", 4)
    _sqlite, postgres = engines
    data = b"external_id\nA\nB\nC\nA,x\n"  # the last row is ragged
    kind, problems, total, members = outcome(postgres, operator, data, "retail")
    assert copies == [None]
    assert (kind, problems, total, members) == (
        "rejected",
        [(5, None, "ragged row: 2 cells where the header has 1")],
        1,
        [],
    )
    added = outcome(postgres, operator, b"external_id\nA\nB\n", "retail")
    assert added == ("added", 2, 2, ["retail:A", "retail:B"])  # the stage was not left over
    assert copies == [None, 2]


@pytest.mark.parametrize(
    ("data", "copied"),
    [
        ("external_id\nA\nB\né\n".encode(), [3]),
        (b'"external_id"\r\n"A"\r\n"x,y"\r\n', [2]),  # quoted whole values
        (b"external_id\nA\nB\nC\nA,x\n", [None]),  # refused by the server midway
        (b'external_id\nA\nq"t\nB\n', [None]),  # a stray quote: abandoned midway
        (b"external_id\nA\nZ\n", [2]),  # copied, then one id found missing: undone
    ],
    ids=["plain", "quoted", "ragged-last-row", "stray-quote", "unknown-id"],
)
def test_standard_input_takes_the_servers_path_and_gives_what_sqlite_gives(
    engines, operator, copies, monkeypatch, data, copied
):
    """A piped file (`segment add NAME -`) cannot seek: PostgreSQL keeps a copy of it, so
    that a plain one is parsed by the server and any other one is read again and gives
    SQLite's outcome, problems and all."""
    monkeypatch.setattr(csv_import, "COPY_CHUNK", 4)  # a copy abandoned after rows went in
    sqlite, postgres = engines
    expected = outcome(sqlite, operator, data, "retail", source=piped)
    assert copies == []
    assert outcome(postgres, operator, data, "retail", source=piped) == expected
    assert copies == copied
    assert expected == outcome(sqlite, operator, data, "retail")  # as from a file


CELLS = st.sampled_from([*RETAIL, "Z", "", " ", "W", "\\.", "a\nb"])
LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(CELLS, max_size=8),
    databases=st.lists(st.sampled_from(["retail", "wholesale", "", "nowhere"]), min_size=8),
    column=st.booleans(),
    quoting=st.sampled_from([None, csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    line_end=LINE_ENDS,
    blank_lines=st.lists(st.integers(0, 9), max_size=2),
    last_line_end=st.booleans(),
    bom=st.booleans(),
    chunk=st.sampled_from([3, 64]),
)
def test_every_file_gives_the_outcome_sqlite_gives(
    engines,
    operator,
    monkeypatch,
    ids,
    databases,
    column,
    quoting,
    line_end,
    blank_lines,
    last_line_end,
    bom,
    chunk,
):
    """Files a person or a spreadsheet may write: quoted or not (None: cells joined by
    commas, as a naive exporter does), any line end, stray blank lines, a BOM."""
    monkeypatch.setattr(csv_import, "COPY_CHUNK", chunk)
    header = ["external_id", "database"] if column else ["external_id"]
    rows = [[e, db] if column else [e] for e, db in zip(ids, databases, strict=False)]
    if quoting is None:
        lines = [",".join(row) for row in [header, *rows]]
    else:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n", quoting=quoting).writerows([header, *rows])
        lines = out.getvalue().split("\n")[:-1]
    for where in blank_lines:
        lines.insert(min(where, len(lines)), "")
    text = line_end.join(lines) + (line_end if last_line_end else "")
    data = ("\ufeff" if bom else "").encode() + text.encode()
    database = None if column else "retail"
    sqlite, postgres = engines
    assert outcome(postgres, operator, data, database) == outcome(sqlite, operator, data, database)
