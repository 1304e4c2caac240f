"""The batched CSV path of the imports (issue 14, loads): records read in batches keep the
exact line numbers of the record-by-record reader, whole-column parsing accepts exactly
what the cell parsers accept, and a file spanning several batches reports every problem
at its line on both backends."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import imports, profiles
from store.csv_import import COLUMN_PARSERS, PARSERS, Problems, Records, universal_breaks
from store.db import transaction
from store.imports import READ_BATCH, ImportRejected


def reference_records(text: str) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """The record-by-record reader the batches replaced: (first line, cells) of each
    non-blank record, and (line, reason) of a malformed record that stops the reading."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    found, problems, end = [], [], 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return found, problems
        except csv.Error as exc:
            problems.append((reader.line_num, f"malformed CSV ({exc}); reading stopped here"))
            return found, problems
        start, end = end + 1, reader.line_num
        if row:
            found.append((start, row))


def batched_records(text: str, size: int) -> tuple[list[tuple[int, list[str]]], list]:
    problems = Problems()
    records = Records(io.StringIO(text, newline=""), problems, universal_breaks)
    found = [
        (line, row)
        for lines, rows in records.batches(size)
        for line, row in zip(lines, rows, strict=True)
    ]
    return found, [(p.line, p.reason) for p in problems.found]


CELL = st.text(alphabet=st.sampled_from(["a", "é", ",", '"', "\n", "\r", " ", "1"]), max_size=4)
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def csv_texts(draw) -> str:
    """Files csv.writer makes (quoted newlines of every kind), with blank lines between
    records and, sometimes, a malformed record somewhere."""
    parts = []
    for cells in draw(st.lists(st.lists(CELL, min_size=1, max_size=3), max_size=12)):
        out = io.StringIO()
        csv.writer(out, lineterminator=draw(LINE_END)).writerow(cells)
        parts.append(out.getvalue())
        parts.append(draw(st.sampled_from(["", "", "\n", "\r\n\r\n"])))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), 'x,"unclosed\n')
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(text=csv_texts(), size=st.integers(1, 7))
def test_batches_give_each_record_the_line_of_the_record_by_record_reader(text, size):
    assert batched_records(text, size) == reference_records(text)


TYPED_CELL = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.floats().map(repr),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["", " 7", "1_000", "2024-02-30", "2024-W01-1", "٣", "nan", "-inf", "1e400"]),
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(sorted(COLUMN_PARSERS)), cells=st.lists(TYPED_CELL, min_size=1))
def test_a_parsed_column_holds_exactly_what_the_cell_parsers_give(kind, cells):
    """A column is either refused (then each cell goes through PARSERS, which reports the
    bad ones) or holds, cell for cell, the value PARSERS gives; never a bad cell accepted."""
    column = COLUMN_PARSERS[kind](tuple(cells))
    if column is None:
        return
    expected = [None if cell == "" else PARSERS[kind](cell) for cell in cells]
    assert list(column) == expected


FIELDS = [("region", "text"), ("int_field", "int"), ("signup", "date"), ("score", "float")]


def test_problems_in_a_later_batch_are_reported_at_their_lines_and_nothing_changes(
    engine, operator
):
    with transaction(engine) as session:
        profiles.create_database(session, operator, "retail", FIELDS)
    rows = [f'P{i:05d},"Kazan",{i},2024-01-{1 + i % 28:02d},{i / 4}' for i in range(3 * READ_BATCH)]
    rows[3] = 'P00003,"two\nlines",3,2024-01-04,0.75'  # batch 1: a record of two lines
    rows[READ_BATCH + 10] = f"P{READ_BATCH + 10:05d},Kazan,ten,2024-01-01,1"  # batch 2
    rows[2 * READ_BATCH + 5] = ",Kazan,1,2024-13-01,x"  # batch 3: three problems
    text = "external_id,region,int_field,signup,score\n" + "\n".join(rows) + "\n\n"
    with pytest.raises(ImportRejected) as info, transaction(engine) as session:
        database = profiles.get_database(session, "retail")
        imports.import_profiles(session, operator, database, io.BytesIO(text.encode()))
    # Line = header (1) + index + 1, plus 1 after the two-line record.
    assert [(p.line, p.column) for p in info.value.problems] == [
        (READ_BATCH + 13, "int_field"),
        (2 * READ_BATCH + 8, "signup"),
        (2 * READ_BATCH + 8, "score"),
        (2 * READ_BATCH + 8, "external_id"),
    ]
    with transaction(engine) as session:
        assert profiles.get_database(session, "retail").profile_count == 0


def test_a_file_of_several_batches_imports_every_row(engine, operator):
    with transaction(engine) as session:
        profiles.create_database(session, operator, "retail", FIELDS)
    rows = [f"P{i:05d},,{i},,{i / 4}" for i in range(2 * READ_BATCH + 7)]
    text = "external_id,region,int_field,signup,score\n" + "\n".join(rows) + "\n"
    with transaction(engine) as session:
        database = profiles.get_database(session, "retail")
        result = imports.import_profiles(session, operator, database, io.BytesIO(text.encode()))
    assert (result.rows, result.inserted) == (2 * READ_BATCH + 7, 2 * READ_BATCH + 7)
