"""CSV import of profiles and of segment membership files.

Both imports stream the file (memory does not grow with it) into a temporary staging
table in batches, check the whole file, and only then change anything with a few
set-based statements, all inside the caller's transaction. Any problem rejects the
whole file: `ImportRejected` lists every problem found (up to `MAX_PROBLEMS`, then a
count of the rest) and nothing is changed.

File format (docs/cli.md): UTF-8 with or without a BOM, a header row, quoted fields,
CRLF or LF line ends. Line numbers count the header as line 1; a record spanning
several physical lines (a quoted newline) is reported at its first line.

Profiles: `external_id` is required; other columns must be declared fields of the
database. An empty cell stores no value (NULL); a column absent from the file leaves
that field of existing profiles unchanged. Segment files: `external_id` and an optional
`database` column (else the database given by the caller, else the segment's own
database, else the only database there is).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from store import audit, profiles, segments
from store.actors import Actor
from store.errors import ValidationError
from store.models import ProfileDatabase, ProfileField, Segment, UTCDateTime, utcnow

MAX_PROBLEMS = 50
BATCH_SIZE = 10_000
BOM = b"\xef\xbb\xbf"
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
PROFILE_STAGE = "cc_import_profile_stage"
SEGMENT_STAGE = "cc_import_segment_stage"
SEGMENT_ACTIONS = ("add", "remove", "replace")
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
            where += f", column {self.column}"
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


@dataclass
class _Problems:
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


def _open(source: str | Path | IO[bytes]) -> tuple[IO[bytes], str, bool]:
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            return path.open("rb"), str(path), True
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return source, getattr(source, "name", "<stream>"), False


def _decoded_lines(binary: IO[bytes], problems: _Problems) -> Iterator[str]:
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


def _records(lines: Iterable[str], problems: _Problems) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of each non-blank CSV record."""
    reader = csv.reader(lines, strict=True)
    end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.add(reader.line_num, None, f"malformed CSV ({exc}); reading stopped here")
            return
        start, end = end + 1, reader.line_num
        if row:  # blank lines are skipped
            yield start, row


def _scan(
    binary: IO[bytes],
    max_problems: int,
    scan: Callable[[Iterator[tuple[int, list[str]]], _Problems], Any],
) -> tuple[Any, _Problems]:
    """Run `scan(records, problems)` over the file's CSV records.

    The C decoder reads the file first (fast). If it meets a byte that is not UTF-8, the
    file is read again line by line so every badly encoded line is reported, with what
    else is wrong. Streams that cannot seek are read line by line from the start.
    """
    if binary.seekable():
        start = binary.tell()
        problems = _Problems(cap=max_problems)
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        try:
            return scan(_records(text, problems), problems), problems
        except UnicodeDecodeError:
            pass
        finally:
            text.detach()  # leave `binary` open: its owner closes it
        binary.seek(start)
    problems = _Problems(cap=max_problems)
    return scan(_records(_decoded_lines(binary, problems), problems), problems), problems


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


# --------------------------------------------------------------------------- staging


def _is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _create_stage(conn: Connection, name: str, columns: list[tuple[str, str]]) -> None:
    """A temporary table private to this connection, gone with the transaction."""
    cols = ", ".join(f"{col} {sql_type}" for col, sql_type in columns)
    if _is_postgres(conn):
        # Room for the set-based checks and joins over the whole file to hash in memory
        # instead of spilling sorts to disk; for this transaction only.
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{name}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({cols}) ON COMMIT DROP")
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({cols})")


def _drop_stage(conn: Connection, name: str) -> None:
    if _is_postgres(conn):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{name}")
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")


class _StageWriter:
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

    def flush(self) -> None:
        if not self.batch:
            return
        if _is_postgres(self.conn):
            cursor = self.conn.connection.driver_connection.cursor()
            with cursor.copy(f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN") as copy:
                for row in self.batch:
                    copy.write_row(row)
        else:
            self.conn.exec_driver_sql(self.insert, self.batch)
        self.written += len(self.batch)
        self.batch = []


def _report_duplicates(
    conn: Connection, table: str, keys: list[str], label: Callable[[Any], str], problems: _Problems
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


def _header(
    records: Iterator[tuple[int, list[str]]], problems: _Problems, source: str
) -> list[str]:
    try:
        _line, header = next(records)
    except StopIteration:
        if not problems.total:
            problems.add(0, None, "empty file: expected a header row naming external_id")
        problems.raise_if_any(source)
        raise AssertionError("unreachable") from None
    return [name.strip() for name in header]


def _check_header_names(header: list[str], problems: _Problems, source: str) -> None:
    """Rejects the file at once when there is no external_id column (no header at all)."""
    if "external_id" not in header:
        problems.add(
            1,
            None,
            "missing header: the first line must name the columns, including external_id "
            f"(found {', '.join(repr(h) for h in header[:5])}{' ...' if len(header) > 5 else ''})",
        )
        problems.raise_if_any(source)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.add(1, name, "column appears twice in the header")
        seen.add(name)


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ImportResult:
    database: str
    rows: int
    inserted: int
    updated: int  # existing profiles whose values changed
    unchanged: int  # existing profiles the file left as they were
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 3),
        }


def import_profiles(
    session: Session,
    actor: Actor,
    database: ProfileDatabase,
    source: str | Path | IO[bytes],
    *,
    batch_size: int = BATCH_SIZE,
    max_problems: int = MAX_PROBLEMS,
) -> ImportResult:
    """Upsert the profiles of a CSV file into `database`: all rows or none.

    New external ids are inserted, existing ones updated (only the columns in the file).
    Raises ImportRejected (exit code 3) listing the problems when any row is bad.
    """
    actor.require_write("import profiles")
    started = time.perf_counter()
    fields = {f.name: f for f in profiles.database_fields(session, database.id)}
    binary, name, owned = _open(source)
    conn = session.connection()

    def scan(records: Iterator[tuple[int, list[str]]], problems: _Problems) -> tuple:
        header = _header(records, problems, name)
        _check_header_names(header, problems, name)
        for column in header:
            if column != "external_id" and column not in fields:
                declared = ", ".join(fields) or "none"
                problems.add(
                    1, column, f"unknown column: not a field of {database.name!r} ({declared})"
                )
        id_index = header.index("external_id")
        # Only the first occurrence of each known field is imported.
        columns: list[tuple[int, ProfileField]] = []
        for index, column in enumerate(header):
            if column in fields and all(f.name != column for _i, f in columns):
                columns.append((index, fields[column]))
        _create_stage(
            conn,
            PROFILE_STAGE,
            [("line", "BIGINT"), ("external_id", "TEXT")]
            + [(f.slot, STAGE_SQL_TYPES[f.type]) for _i, f in columns],
        )
        writer = _StageWriter(
            conn, PROFILE_STAGE, ["line", "external_id"] + [f.slot for _i, f in columns], batch_size
        )
        rows = _stage_profiles(records, problems, writer, len(header), id_index, columns)
        if rows == 0 and not problems.total:
            problems.add(0, None, "empty file: a header but no rows")
        return rows, columns

    try:
        (rows, columns), problems = _scan(binary, max_problems, scan)
        _report_duplicates(conn, PROFILE_STAGE, ["external_id"], repr, problems)
        problems.raise_if_any(name)
        inserted, updated = _upsert_profiles(conn, database, [f for _i, f in columns])
        _drop_stage(conn, PROFILE_STAGE)
    finally:
        if owned:
            binary.close()
    database.profile_count += inserted
    session.add(database)
    audit.record(
        session,
        actor,
        "profiles.import",
        "database",
        database.id,
        database.name,
        file=name,
        rows=rows,
        inserted=inserted,
        updated=updated,
    )
    session.flush()
    unchanged = rows - inserted - updated
    return ImportResult(
        database.name, rows, inserted, updated, unchanged, time.perf_counter() - started
    )


def _stage_profiles(
    records: Iterator[tuple[int, list[str]]],
    problems: _Problems,
    writer: _StageWriter,
    width: int,
    id_index: int,
    columns: list[tuple[int, ProfileField]],
) -> int:
    """Parse every record into the staging table; report what is wrong. Returns the rows.

    The hot loop: a row whose cells all parse takes the fast path; the first bad cell
    sends the row through the slow path, which reports every bad cell of it.
    """
    # Text cells are stored as they are: no call at all on the fast path.
    fast = [(index, None if f.type == "text" else PARSERS[f.type]) for index, f in columns]
    rows = 0
    add = writer.add
    for line, cells in records:
        rows += 1
        if len(cells) != width:
            problems.add(line, None, f"ragged row: {len(cells)} cells where the header has {width}")
            continue
        external_id = cells[id_index]
        values: list[Any] = [line, external_id]
        try:
            for index, parse in fast:
                cell = cells[index]
                values.append(None if cell == "" else cell if parse is None else parse(cell))
        except ValueError:
            values = [line, external_id] + _parse_reporting(line, cells, columns, problems)
        if not external_id or external_id.isspace():
            problems.add(line, "external_id", "empty external_id")
            continue
        add(tuple(values))  # staged even when a cell is bad, so duplicates are found too
    writer.flush()
    return rows


def _parse_reporting(
    line: int, cells: list[str], columns: list[tuple[int, ProfileField]], problems: _Problems
) -> list[Any]:
    values: list[Any] = []
    for index, f in columns:
        cell = cells[index]
        try:
            values.append(None if cell == "" else PARSERS[f.type](cell))
        except ValueError:
            problems.add(line, f.name, f"bad type: {cell!r} is not {EXPECTED[f.type]}")
            values.append(None)
    return values


def _upsert_profiles(
    conn: Connection, database: ProfileDatabase, fields: list[ProfileField]
) -> tuple[int, int]:
    """Set-based: update the profiles that differ, insert the new. Returns (inserted, updated).

    Rows equal to the stored profile are not rewritten, so re-importing a full export
    costs only its changes.
    """
    pg = _is_postgres(conn)
    if pg:
        conn.exec_driver_sql(f"ANALYZE {PROFILE_STAGE}")  # temp tables are never auto-analysed
    updated = 0
    if fields:
        assignments = ", ".join(f"{f.slot} = s.{f.slot}" for f in fields)
        distinct = "IS DISTINCT FROM" if pg else "IS NOT"
        changed = " OR ".join(f"profile.{f.slot} {distinct} s.{f.slot}" for f in fields)
        updated = conn.execute(
            sa.text(
                f"UPDATE profile SET {assignments} FROM {PROFILE_STAGE} s "
                "WHERE profile.database_id = :db AND profile.external_id = s.external_id "
                f"AND ({changed})"
            ),
            {"db": database.id},
        ).rowcount
    slots = "".join(f", {f.slot}" for f in fields)
    values = "".join(f", s.{f.slot}" for f in fields)
    in_gcg = "false" if pg else "0"
    inserted = conn.execute(
        sa.text(
            f"INSERT INTO profile (database_id, external_id, in_gcg, created_at{slots}) "
            f"SELECT :db, s.external_id, {in_gcg}, :now{values} FROM {PROFILE_STAGE} s "
            "WHERE NOT EXISTS (SELECT 1 FROM profile p "
            "WHERE p.database_id = :db AND p.external_id = s.external_id)"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
        {"db": database.id, "now": utcnow()},
    ).rowcount
    return inserted, updated


def _stage_count(conn: Connection, table: str) -> int:
    return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one()


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class SegmentFileResult:
    segment: str
    action: str
    rows: int
    added: int
    removed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "action": self.action,
            "rows": self.rows,
            "added": self.added,
            "removed": self.removed,
        }


def apply_segment_file(
    session: Session,
    actor: Actor,
    segment: Segment,
    action: str,
    source: str | Path | IO[bytes],
    *,
    database: ProfileDatabase | None = None,
    batch_size: int = BATCH_SIZE,
    max_problems: int = MAX_PROBLEMS,
) -> SegmentFileResult:
    """Add, remove or replace a static segment's members from a CSV of external ids.

    Each row names a profile by `external_id` within the row's `database` column, else
    `database`, else the segment's database, else the only profile database. Unknown
    databases or external ids reject the whole file. Membership changes go through
    store.segments, so the segment and campaign events of R3/R4 and the incremental
    builds of R2c happen there, in this transaction.
    """
    if action not in SEGMENT_ACTIONS:
        raise ValueError(f"action must be one of {SEGMENT_ACTIONS}, not {action!r}")
    actor.require_write(f"{action} segment members")
    binary, name, owned = _open(source)
    conn = session.connection()

    def scan(records: Iterator[tuple[int, list[str]]], problems: _Problems) -> int:
        header = _header(records, problems, name)
        _check_header_names(header, problems, name)
        for column in header:
            if column not in ("external_id", "database"):
                problems.add(
                    1, column, "unknown column: a segment file has external_id and database"
                )
        default_db = _default_database(session, segment, database, "database" in header)
        id_index = header.index("external_id")
        db_index = header.index("database") if "database" in header else None
        _create_stage(
            conn,
            SEGMENT_STAGE,
            [
                ("line", "BIGINT"),
                ("database_name", "TEXT"),
                ("external_id", "TEXT"),
                ("profile_id", "BIGINT"),
            ],
        )
        writer = _StageWriter(
            conn, SEGMENT_STAGE, ["line", "database_name", "external_id"], batch_size
        )
        width = len(header)
        rows = 0
        for line, cells in records:
            rows += 1
            if len(cells) != width:
                problems.add(
                    line, None, f"ragged row: {len(cells)} cells where the header has {width}"
                )
                continue
            external_id = cells[id_index]
            db_name = cells[db_index] if db_index is not None else ""
            if not db_name:
                db_name = default_db.name if default_db is not None else ""
            if not external_id.strip():
                problems.add(line, "external_id", "empty external_id")
                continue
            if not db_name:
                problems.add(
                    line,
                    "database",
                    "no database: fill the database column or pass --database",
                )
                continue
            writer.add((line, db_name, external_id))
        writer.flush()
        return rows

    try:
        rows, problems = _scan(binary, max_problems, scan)
        _report_duplicates(conn, SEGMENT_STAGE, ["database_name", "external_id"], repr, problems)
        _resolve_profiles(conn, problems)
        problems.raise_if_any(name)
        matched = sa.text(f"id IN (SELECT profile_id FROM {SEGMENT_STAGE})")
        added = removed = 0
        if action == "add":
            added = segments.add_profiles_where(session, actor, segment, matched)
        elif action == "remove":
            removed = segments.remove_profiles_where(session, actor, segment, matched)
        else:
            added, removed = segments.replace_profiles_where(session, actor, segment, matched)
        _drop_stage(conn, SEGMENT_STAGE)
    finally:
        if owned:
            binary.close()
    return SegmentFileResult(segment.name, action, rows, added, removed)


def _default_database(
    session: Session, segment: Segment, given: ProfileDatabase | None, has_column: bool
) -> ProfileDatabase | None:
    if given is not None:
        return given
    if segment.database_id is not None:
        return session.get(ProfileDatabase, segment.database_id)
    only = session.scalars(sa.select(ProfileDatabase).limit(2)).all()
    if len(only) == 1:
        return only[0]
    if not has_column:
        raise ValidationError(
            f"segment {segment.name!r} may hold profiles of several databases: "
            "pass --database NAME or add a database column to the file"
        )
    return None


def _resolve_profiles(conn: Connection, problems: _Problems) -> None:
    """Set-based: external ids -> profile ids; every unknown one is a problem."""
    conn.exec_driver_sql(
        f"""UPDATE {SEGMENT_STAGE} SET profile_id = (
            SELECT p.id FROM profile p JOIN profile_database d ON d.id = p.database_id
            WHERE d.name = {SEGMENT_STAGE}.database_name
              AND p.external_id = {SEGMENT_STAGE}.external_id)"""
    )
    if _is_postgres(conn):  # temp tables are never auto-analysed; the joins that follow
        conn.exec_driver_sql(f"ANALYZE {SEGMENT_STAGE}")  # plan on these statistics
    missing = f"""FROM {SEGMENT_STAGE} s
        LEFT JOIN profile_database d ON d.name = s.database_name
        WHERE s.profile_id IS NULL"""
    count = conn.exec_driver_sql(f"SELECT COUNT(*) {missing}").scalar_one()
    if not count:
        return
    rows = conn.exec_driver_sql(
        f"SELECT s.line, s.database_name, s.external_id, d.id {missing} "
        f"ORDER BY s.line LIMIT {problems.cap}"
    ).all()
    for line, db_name, external_id, db_id in rows:
        if db_id is None:
            problems.add(line, "database", f"unknown profile database {db_name!r}")
        else:
            problems.add(line, "external_id", f"unknown external_id {external_id!r} in {db_name!r}")
    problems.total += count - len(rows)
