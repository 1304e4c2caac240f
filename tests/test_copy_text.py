"""COPY rows built column by column (store.csv_import.copy_text) read back exactly as
psycopg's own `write_row` writes them, and anything that would need escaping falls back
to `write_row`."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.csv_import import copy_text, write_copy_rows

TABLE = "CREATE TEMP TABLE t (n BIGINT, x DOUBLE PRECISION, s TEXT, b BOOLEAN, d DATE)"


def test_plain_columns_become_tab_separated_lines_with_nulls():
    columns = [[1, None], [0.1, 2.0], ["a b", None], [True, False], ["2024-02-29", ""]]
    assert copy_text(columns) == "1\t0.1\ta b\tt\t2024-02-29\n\\N\t2.0\t\\N\tf\t\n"
    assert copy_text([[], []]) == ""


@pytest.mark.parametrize(
    "column", [["tab\there"], ["new\nline"], ["cr\r"], ["back\\slash"], [1, "1"], [b"x"]]
)
def test_values_that_need_escaping_or_another_type_go_row_by_row(column):
    assert copy_text([column]) is None


@pytest.fixture
def pg(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        yield conn.connection.driver_connection
    engine.dispose()


# The table is dropped and made again for each example: the fixture may be shared.
def _round_trip(conn: psycopg.Connection, columns, *, by_row: bool) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS t")
        cur.execute(TABLE)
        with cur.copy("COPY t FROM STDIN") as copy:
            if by_row:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
            else:
                write_copy_rows(copy, columns)
        cur.execute("SELECT n, x, s, b, d FROM t")
        return cur.fetchall()


texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.none() | st.integers(-(2**63), 2**63 - 1),
            st.none() | st.floats(allow_nan=False, allow_infinity=False),
            st.none() | texts,
            st.none() | st.booleans(),
            st.none() | st.dates().map(lambda d: d.isoformat()),
        ),
        max_size=20,
    )
)
def test_copy_text_stores_what_write_row_stores(pg, rows):
    columns = [list(column) for column in zip(*rows, strict=True)] or [[]] * 5
    assert _round_trip(pg, columns, by_row=False) == _round_trip(pg, columns, by_row=True)
