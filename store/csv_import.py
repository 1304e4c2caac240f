"""Reading CSV import files and staging them: the part shared by every import.

Files are streamed (memory does not grow with them) through the C UTF-8 decoder and
csv.reader; a file with a byte that is not UTF-8 is read again line by line so every such
line is reported. Rows go into a temporary staging table in batches (executemany on
SQLite, COPY on PostgreSQL), where set-based checks (duplicates) run before anything is
applied. Problems are collected, not raised one by one: `Problems.raise_if_any` rejects
the whole file with all of them (`ImportRejected`, exit code 3).

Line numbers count physical lines with the header as line 1; a record spanning several
lines (a quoted newline) is reported at its first line.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import Connection

from store.errors import ValidationError
from store.locations import is_postgres

MAX_PROBLEMS = 50
MAX_FIELD_CHARS = csv.field_size_limit()  # 131,072 characters per value (docs/cli.md)
SHOWN_NAME_CHARS = 40  # a column name quoted in a problem is cut here (no 20 KB headers)
BINARY_PROBE = 8192
BATCH_SIZE = 10_000
# Records parsed at once: large enough that the per-batch work is negligible, small
# enough that the batch's row lists do not pile up for the garbage collector to scan.
READ_BATCH = 1_000
BOM = b"\xef\xbb\xbf"
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
STAGE_SQL_TYPES = {"text": "TEXT", "int": "BIGINT", "float": "DOUBLE PRECISION", "date": "DATE"}


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an import file."""

    line: int  # physical line of the file, the header is line 1; 0 for the whole file
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        if self.column:
            where += f", column {shown_name(self.column)}"
        return f"{where}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line or None, "column": self.column, "reason": self.reason}


class ImportRejected(ValidationError):
    """The file was rejected as a whole; nothing was changed."""

    def __init__(self, source: str, problems: list[Problem], total: int) -> None:
        self.source = source
        self.problems = problems
        self.total = total
        more = total - len(problems)
        lines = [str(p) for p in problems]
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(
            f"{source}: rejected, nothing imported ({total} problem{'s' if total != 1 else ''}):\n  "
            + "\n  ".join(lines)
        )


def shown_name(name: str) -> str:
    """A header cell as quoted in a message: printable and at most SHOWN_NAME_CHARS long."""
    from store.names import printable

    if len(name) > SHOWN_NAME_CHARS:
        name = name[: SHOWN_NAME_CHARS - 1] + "…"
    return printable(name)


@dataclass
class Problems:
    cap: int = MAX_PROBLEMS
    found: list[Problem] = field(default_factory=list)
    total: int = 0

    def add(self, line: int, column: str | None, reason: str) -> None:
        self.total += 1
        if len(self.found) < self.cap:
            self.found.append(Problem(line, column, reason))

    def raise_if_any(self, source: str) -> None:
        if self.total:
            found = sorted(self.found, key=lambda p: p.line)  # stable: a line keeps its order
            raise ImportRejected(source, found[: self.cap], self.total)


# --------------------------------------------------------------------------- reading


def open_source(source: str | Path | IO[bytes]) -> tuple[IO[bytes], str, bool]:
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            return path.open("rb"), str(path), True
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return source, getattr(source, "name", "<stream>"), False


def _decoded_lines(binary: IO[bytes], problems: Problems) -> Iterator[str]:
    # The slow path of _scan: only files with a byte that is not UTF-8 come here.
    """Physical lines decoded as UTF-8; a bad line is reported and decoded leniently."""
    for number, raw in enumerate(binary, 1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(
                number,
                None,
                f"bad encoding: byte 0x{raw[exc.start]:02x} at position {exc.start + 1} "
                "is not UTF-8 (save the file as UTF-8)",
            )
            yield raw.decode("utf-8", "replace")


def _csv_error(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return (
            f"a value is longer than {MAX_FIELD_CHARS:,} characters (the per-value limit); "
            "reading stopped here"
        )
    if "new-line character seen in unquoted field" in text:
        return (
            "a carriage return inside an unquoted value: not a CSV file, or quote the value; "
            "reading stopped here"
        )
    return f"malformed CSV ({text}); reading stopped here"


def universal_breaks(cell: str) -> int:
    """Line breaks in a cell as the text reader splits lines (\\n, \\r\\n or a lone \\r)."""
    return cell.count("\n") + cell.count("\r") - cell.count("\r\n")


def _newline_breaks(cell: str) -> int:
    """Line breaks in a cell as the byte-line reader splits lines (\\n only)."""
    return cell.count("\n")


class Records:
    """The non-blank CSV records of a file with the physical line each starts on.

    Iterating gives `(line, cells)` one record at a time (the header); `batches(size)`
    gives `(lines, rows)` for up to `size` records at once, which the import loops use:
    while every record of a batch is one physical line (the usual case), its line numbers
    are a range and no Python code runs per record. Otherwise each record's lines are
    counted from the line breaks inside its quoted cells, which is what the csv reader
    consumed. A malformed record is reported after the records before it, and ends the
    reading.
    """

    def __init__(
        self, lines: Iterable[str], problems: Problems, breaks: Callable[[str], int]
    ) -> None:
        self._reader = csv.reader(self._watch_nul(lines), strict=True)
        self._problems = problems
        self._breaks = breaks
        self._end = 0  # physical lines consumed so far
        self._stopped = False
        self._nul_seen = False
        self._header: list[str] | None = None

    def _watch_nul(self, lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            if "\x00" in line:
                self._nul_seen = True
            yield line

    def _refuse_nul(self, lines: Sequence[int], rows: list[list[str]]) -> None:
        """A NUL byte is a problem of its line and column on both backends (SQLite would
        store it, never to be found again; PostgreSQL cannot store it). It is removed from
        what is staged: the file is rejected anyway (issue 15.9)."""
        header = self._header or []
        for line, row in zip(lines, rows, strict=True):
            for index, cell in enumerate(row):
                if "\x00" in cell:
                    column = header[index] if index < len(header) else f"#{index + 1}"
                    self._problems.add(line, column, "a NUL byte (\\x00) in the value")
                    row[index] = cell.replace("\x00", "")

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        for lines, rows in self.batches(1):
            return lines[0], rows[0]
        raise StopIteration

    def batches(self, size: int) -> Iterator[tuple[Sequence[int], list[list[str]]]]:
        while not self._stopped:
            rows: list[list[str]] = []
            error: csv.Error | None = None
            try:
                rows.extend(islice(self._reader, size))  # keeps the rows before an error
            except csv.Error as exc:
                error = exc
            end = self._reader.line_num
            if not rows and error is None:
                return
            lines: Sequence[int]
            if error is None and end - self._end == len(rows) and [] not in rows:
                lines = range(self._end + 1, end + 1)  # one line per record
            else:
                lines, rows = self._count_lines(rows, end if error is None else None)
            self._end = end
            if rows and self._nul_seen:
                self._refuse_nul(lines, rows)
            if rows and self._header is None:
                self._header = [cell.strip() for cell in rows[0]]
            if rows:
                yield lines, rows
            if error is not None:
                self._problems.add(end, None, _csv_error(error))
                self._stopped = True

    def _count_lines(
        self, rows: list[list[str]], end: int | None
    ) -> tuple[list[int], list[list[str]]]:
        """First lines of the non-blank records; blank lines are skipped."""
        position, lines, kept = self._end, [], []
        for row in rows:
            if row:
                lines.append(position + 1)
                kept.append(row)
            position += 1 + sum(map(self._breaks, row))
        if end is not None and position != end:  # the counting disagrees with the reader
            raise AssertionError(f"line count {position} != {end}: report this file")
        return lines, kept


_paused = 0  # loads under way with the collector paused (threads of one process)
_paused_lock = threading.Lock()
_collector_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a file is read and written in batches.

    A load allocates millions of short-lived row lists and tuples and no reference cycles;
    each of them counts towards the collector's thresholds, so it ran over and over,
    full passes walking every live object of the process (SQLAlchemy's and the store's
    classes): 0.3-1 CPU-s per million rows. Reference counting still frees every row.
    Nested and concurrent loads (threads) share one pause: the collector is enabled again,
    if it was, when the last one ends.
    """
    global _paused, _collector_was_enabled
    with _paused_lock:
        if _paused == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _collector_was_enabled:
                gc.enable()


def _looks_binary(binary: IO[bytes]) -> bool:
    """A NUL byte and bytes that are not UTF-8 in the first 8 KB: an image, an archive,
    a spreadsheet, not a CSV file (a stray NUL in a text file is reported by line)."""
    start = binary.tell()
    probe = binary.read(BINARY_PROBE)
    binary.seek(start)
    if b"\x00" not in probe:
        return False
    try:
        probe.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(probe) - 4  # not just a character cut at the probe's end
    return False


def scan_records(
    binary: IO[bytes],
    max_problems: int,
    scan: Callable[[Records, Problems], Any],
) -> tuple[Any, Problems]:
    """Run `scan(records, problems)` over the file's CSV records.

    The C decoder reads the file first (fast). If it meets a byte that is not UTF-8, the
    file is read again line by line so every badly encoded line is reported, with what
    else is wrong. Streams that cannot seek are read line by line from the start. The
    garbage collector is paused meanwhile (`collector_paused`).
    """
    with collector_paused():
        return _scan_records(binary, max_problems, scan)


def _scan_records(
    binary: IO[bytes],
    max_problems: int,
    scan: Callable[[Records, Problems], Any],
) -> tuple[Any, Problems]:
    if binary.seekable():
        start = binary.tell()
        problems = Problems(cap=max_problems)
        if _looks_binary(binary):
            problems.add(0, None, "not a CSV file (binary data); export the data as UTF-8 CSV")
            return scan(iter(()), problems), problems
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        try:
            return scan(Records(text, problems, universal_breaks), problems), problems
        except UnicodeDecodeError:
            pass
        finally:
            text.detach()  # leave `binary` open: its owner closes it
        binary.seek(start)
    problems = Problems(cap=max_problems)
    records = Records(_decoded_lines(binary, problems), problems, _newline_breaks)
    return scan(records, problems), problems


# --------------------------------------------------------------------------- typed cells


def _parse_int(value: str) -> int:
    if "_" in value:
        raise ValueError
    number = int(value)
    if not INT_MIN <= number <= INT_MAX:
        raise ValueError
    return number


def _parse_float(value: str) -> float:
    number = float(value)
    if "_" in value or not math.isfinite(number):
        raise ValueError
    return number


def _parse_date(value: str) -> str:
    # ISO YYYY-MM-DD only (date.fromisoformat also takes 20240101 and week dates).
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise ValueError
    date.fromisoformat(value)
    return value  # stored as ISO text on SQLite (as SQLAlchemy's Date does), cast on PostgreSQL


PARSERS: dict[str, Callable[[str], Any]] = {
    "text": str,
    "int": _parse_int,
    "float": _parse_float,
    "date": _parse_date,
}
EXPECTED = {
    "int": "a whole number",
    "float": "a number",
    "date": "a date YYYY-MM-DD",
}


# Whole columns of a batch at once (the fast path of the imports): each returns the
# column's values, or None when any cell is not plainly valid, and the batch then goes
# through PARSERS cell by cell, which reports every bad cell. A column accepted here holds
# exactly the values PARSERS would give; the loops run in C (map, join, min/max).
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _numbers(cells: Sequence[str], parse: Callable[[str], Any]) -> tuple[Any, list[Any]]:
    """(values with None for empty cells, the non-empty values); ValueError if one is bad."""
    if "" in cells:
        values = [None if cell == "" else parse(cell) for cell in cells]
        return values, [v for v in values if v is not None]
    values = list(map(parse, cells))
    return values, values


def _int_column(cells: Sequence[str]) -> Sequence[Any] | None:
    if "_" in "".join(cells):
        return None
    try:
        values, numbers = _numbers(cells, int)
    except ValueError:
        return None
    if numbers and (min(numbers) < INT_MIN or max(numbers) > INT_MAX):
        return None
    return values


def _float_column(cells: Sequence[str]) -> Sequence[Any] | None:
    if "_" in "".join(cells):
        return None
    try:
        values, numbers = _numbers(cells, float)
    except ValueError:
        return None
    return values if all(map(math.isfinite, numbers)) else None


def _date_column(cells: Sequence[str]) -> Sequence[Any] | None:
    present = [cell for cell in cells if cell != ""] if "" in cells else cells
    if not all(map(ISO_DATE.fullmatch, present)):
        return None
    try:
        all(map(date.fromisoformat, present))  # a real day of a real month
    except ValueError:
        return None
    return [None if cell == "" else cell for cell in cells] if present is not cells else cells


def _text_column(cells: Sequence[str]) -> Sequence[Any]:
    return [None if cell == "" else cell for cell in cells] if "" in cells else cells


COLUMN_PARSERS: dict[str, Callable[[Sequence[str]], Sequence[Any] | None]] = {
    "text": _text_column,
    "int": _int_column,
    "float": _float_column,
    "date": _date_column,
}


# --------------------------------------------------------------------------- staging


SQLITE_CACHE_KB = 65_536


def use_large_cache(conn: Connection) -> None:
    """SQLite: a 64 MB page cache on this connection (main and temp databases), as builds
    use. A file in random external-id order inserts at random places of the unique index;
    with the default 2 MB cache a 500,000-row first load spent about 20 % more CPU."""
    if not is_postgres(conn):
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KB}")
        conn.exec_driver_sql(f"PRAGMA temp.cache_size = -{SQLITE_CACHE_KB}")


def create_stage(conn: Connection, name: str, columns: list[tuple[str, str]]) -> None:
    """A temporary table private to this connection, gone with the transaction."""
    cols = ", ".join(f"{col} {sql_type}" for col, sql_type in columns)
    if is_postgres(conn):
        # Room for the set-based checks and joins over the whole file to hash in memory
        # instead of spilling sorts to disk; for this transaction only.
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{name}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({cols}) ON COMMIT DROP")
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({cols})")


def drop_stage(conn: Connection, name: str) -> None:
    if is_postgres(conn):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{name}")
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")


COPY_NULL = "\\N"
# Characters COPY's text format escapes; a batch with one goes row by row (`write_row`).
COPY_ESCAPED = ("\\", "\t", "\n", "\r")
_COPY_FORMATS: dict[type, Callable[[Any], str] | None] = {
    str: None,  # as it is
    int: str,
    float: repr,  # the shortest text that reads back as the same double
    bool: lambda value: "t" if value else "f",
}


def copy_text(columns: Sequence[Sequence[Any]]) -> str | None:
    """The rows given column by column, as the lines of a `COPY … FROM STDIN` in text
    format; None when a value is of another type or needs escaping.

    Built a column at a time with `map` and `join` (no Python code per value for the
    usual columns): about half the CPU of `copy.write_row` per row, which formats and
    escapes each value by itself.
    """
    cells: list[Iterable[str]] = []
    for column in columns:
        kinds = set(map(type, column))
        nulls = type(None) in kinds
        kinds.discard(type(None))
        if len(kinds) > 1 or not kinds.issubset(_COPY_FORMATS):
            return None
        to_text = _COPY_FORMATS[kinds.pop()] if kinds else None
        if to_text is None:  # text (or only NULLs): refuse what would need escaping
            present = [v for v in column if v is not None] if nulls else column
            joined = "".join(present)
            if any(char in joined for char in COPY_ESCAPED):
                return None
        if nulls:
            cells.append(
                [COPY_NULL if v is None else v if to_text is None else to_text(v) for v in column]
            )
        else:
            cells.append(column if to_text is None else map(to_text, column))
    lines = "\n".join(map("\t".join, zip(*cells, strict=True)))
    return lines + "\n" if lines else ""


def write_copy_rows(copy: Any, columns: Sequence[Sequence[Any]]) -> None:
    """Write the rows given column by column into a psycopg `Copy` (COPY … FROM STDIN)."""
    text = copy_text(columns)
    if text is not None:
        copy.write(text)
        return
    write_row = copy.write_row
    for row in zip(*columns, strict=True):
        write_row(row)


COPY_CHUNK = 1 << 20  # bytes of a plain file handed to the server at once
_BLANK = (b"\n\n", b"\n\r\n")  # a line with nothing on it
# Well-quoted lines: every value either without a quote, or quoted whole (a quote at its
# start and at its end, quotes inside it doubled) and without a line end inside. Both
# csv.reader and the server's CSV parser read such a line alike (anywhere else a quote
# means something else to each: the server reads q"t" as qt, csv.reader as q"t"). The
# quantifiers never give back (++, *+): one pass, about 0.2 s per million quoted ids.
_VALUE = rb'(?:"(?:[^"\r\n]++|"")*+"|[^",\r\n]*+)'
_RECORD = _VALUE + rb"(?:," + _VALUE + rb")*+"
_WELL_QUOTED = re.compile(rb"(?:" + _RECORD + rb"\r?\n)*+" + _RECORD)
_MAX_LINE = 1 << 20  # bytes; a longer line is read the usual way (which refuses it)


def plain_csv_header(binary: IO[bytes]) -> list[str] | None:
    """The header of a plain file (`copy_plain_csv`), read from `binary`'s position: its
    first line, not blank, well-quoted, split into names as `read_header` splits and
    strips them; None for any other first line (and `binary` is left where it was)."""
    start = binary.tell()
    raw = binary.readline(MAX_FIELD_CHARS)
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        line = ""
    line = line[:-2] if line.endswith("\r\n") else line.removesuffix("\n")
    cut = len(raw) == MAX_FIELD_CHARS and not raw.endswith(b"\n")
    if cut or not line.strip() or not _WELL_QUOTED.fullmatch(line.encode()) or "\x00" in line:
        binary.seek(start)
        return None
    return [name.strip() for name in next(csv.reader([line]))]


class _NotPlain(Exception):
    """A quote in a plain file's data that the server's CSV parser would not read as
    csv.reader does (not around a whole value), or a line too long to check."""


def _check_quotes(text: bytes) -> bytes:
    """Raises _NotPlain unless the whole lines of `text` are well-quoted; returns the
    rest (the start of a line whose end has not been read yet)."""
    end = text.rfind(b"\n") + 1
    if text.find(b'"', 0, end) >= 0 and _WELL_QUOTED.fullmatch(text, 0, end) is None:
        raise _NotPlain
    if len(text) - end > _MAX_LINE:
        raise _NotPlain
    return text[end:]


def copy_plain_csv(
    conn: Connection, binary: IO[bytes], table: str, columns: list[str]
) -> int | None:
    """PostgreSQL: the rest of a plain CSV file streamed as it is into `table`'s `columns`
    (`COPY … FROM STDIN (FORMAT csv)`): the server parses it, no Python code runs per row.
    Returns the records copied, or None when the file is not plain, and the caller, which
    runs this in a savepoint, rolls it back and reads the file the usual way
    (`scan_records`), which reports every problem.

    Plain: one record per line (\\n or \\r\\n), well-quoted (a quote only around a whole
    value, doubled inside it: `_WELL_QUOTED`), valid UTF-8, no NUL. Such a record reads
    the same in both parsers; anything else either makes the server refuse the data (an
    encoding error, a NUL, a ragged row, a lone carriage return) or gives a row count
    different from the line count (an end-of-data marker `\\.`), and both mean None. A
    blank line, which csv.reader skips, is a row of NULL to the server when there is one
    column (its rows are deleted again; with more columns the server refuses it). A blank
    value also arrives as NULL where csv.reader reads '' (a quoted blank as ''): the
    caller must refuse NULLs and blanks (a join on the value does).
    """
    import psycopg  # PostgreSQL only: not imported at start-up

    driver = conn.connection.driver_connection
    if driver.info.encoding != "utf-8":  # the server would read the bytes in another code
        return None
    lines = 0
    tail = b"\n"  # the last two bytes written: the header's line end to begin with
    blank = False
    unfinished = b""  # the last line read, while its end has not come (_check_quotes)
    cursor = driver.cursor()
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    try:
        with cursor.copy(statement) as copy:
            while chunk := binary.read(COPY_CHUNK):
                unfinished = _check_quotes(unfinished + chunk)
                lines += chunk.count(b"\n")
                seam = tail + chunk[:2]  # a blank line across two chunks
                blank = blank or any(b in part for b in _BLANK for part in (seam, chunk))
                tail = (tail + chunk)[-2:]
                copy.write(chunk)
            if unfinished:  # the last record, without its line end
                _check_quotes(unfinished + b"\n")
    except (_NotPlain, psycopg.errors.DataError, psycopg.errors.QueryCanceled):
        return None  # QueryCanceled: the server's answer to the copy abandoned above
    copied = cursor.rowcount
    if not tail.endswith(b"\n"):  # the last record without its line end
        lines += 1
    if copied != lines:
        return None
    if blank and len(columns) == 1:
        deleted = conn.exec_driver_sql(f"DELETE FROM {table} WHERE {columns[0]} IS NULL")
        copied -= deleted.rowcount
    return copied


class StageWriter:
    """Batched writes into a staging table: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, conn: Connection, table: str, columns: list[str], batch_size: int):
        self.conn = conn
        self.table = table
        self.columns = columns
        self.batch_size = batch_size
        self.batch: list[tuple[Any, ...]] = []
        self.written = 0
        self.insert = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )

    def add(self, row: tuple[Any, ...]) -> None:
        self.batch.append(row)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def add_many(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.batch.extend(rows)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        if is_postgres(self.conn):
            cursor = self.conn.connection.driver_connection.cursor()
            with cursor.copy(f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN") as copy:
                write_copy_rows(copy, list(zip(*self.batch, strict=True)))
        else:
            self.conn.exec_driver_sql(self.insert, self.batch)
        self.written += len(self.batch)
        self.batch = []


def report_duplicates(
    conn: Connection, table: str, keys: list[str], label: Callable[[Any], str], problems: Problems
) -> None:
    """Every line repeating an earlier line's key, set-based over the staging table."""
    key_cols = ", ".join(keys)
    repeated = conn.exec_driver_sql(
        f"SELECT 1 FROM {table} GROUP BY {key_cols} HAVING COUNT(*) > 1 LIMIT 1"
    ).first()
    if repeated is None:  # the usual case: one aggregate, no join
        return
    join = " AND ".join(f"s.{k} = d.{k}" for k in keys)
    dup_filter = f"""
        FROM {table} s JOIN (
            SELECT {key_cols}, MIN(line) AS first_line FROM {table}
            GROUP BY {key_cols} HAVING COUNT(*) > 1
        ) d ON {join} AND s.line > d.first_line
    """
    count = conn.exec_driver_sql(f"SELECT COUNT(*) {dup_filter}").scalar_one()
    if not count:
        return
    rows = conn.exec_driver_sql(
        f"SELECT s.line, d.first_line, s.external_id {dup_filter} ORDER BY s.line "
        f"LIMIT {problems.cap}"
    ).all()
    for line, first_line, external_id in rows:
        problems.add(
            line,
            "external_id",
            f"duplicate external_id {label(external_id)} (first on line {first_line})",
        )
    problems.total += count - len(rows)


def read_header(
    records: Iterator[tuple[int, list[str]]], problems: Problems, source: str
) -> list[str]:
    try:
        _line, header = next(records)
    except StopIteration:
        if not problems.total:
            problems.add(0, None, "empty file: expected a header row naming external_id")
        problems.raise_if_any(source)
        raise AssertionError("unreachable") from None
    return [name.strip() for name in header]


def check_header_names(header: list[str], problems: Problems, source: str) -> None:
    """Rejects the file at once when there is no external_id column (no header at all)."""
    if "external_id" not in header:
        problems.add(
            1,
            None,
            "missing header: the first line must name the columns, including external_id "
            f"(found {', '.join(repr(shown_name(h)) for h in header[:5])}"
            f"{' ...' if len(header) > 5 else ''})",
        )
        problems.raise_if_any(source)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.add(1, name, "column appears twice in the header")
        seen.add(name)


def batch_cells(batch: list[list[str]], width: int, id_index: int) -> list[Sequence[str]] | None:
    """The cells of a batch column by column when every record has the header's width and
    an external_id that is not blank, else None (the batch then goes row by row, which
    reports every problem). The first check of each load's column-at-a-time fast path."""
    if len(set(map(len, batch))) != 1 or len(batch[0]) != width:
        return None  # a ragged row
    cells = list(zip(*batch, strict=True))
    external_ids = cells[id_index]
    if "" in external_ids or any(map(str.isspace, external_ids)):
        return None
    return cells


def convert_columns(
    batch: list[list[str]], width: int, id_index: int, columns: Sequence[tuple[int, Any]]
) -> list[Sequence[Any]] | None:
    """[external ids, values of each field] of a batch without a single problem, else None.

    `columns` are (cell index, field) pairs; a field has the `type` of COLUMN_PARSERS.
    """
    cells = batch_cells(batch, width, id_index)
    if cells is None:
        return None
    external_ids = cells[id_index]
    converted: list[Sequence[Any]] = [external_ids]
    for index, f in columns:
        values = COLUMN_PARSERS[f.type](cells[index])
        if values is None:
            return None
        converted.append(values)
    return converted
