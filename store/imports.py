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

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from store import audit, profile_load, profiles, segments
from store.actors import Actor
from store.csv_import import (
    BATCH_SIZE,
    EXPECTED,
    MAX_PROBLEMS,
    PARSERS,
    READ_BATCH,
    STAGE_SQL_TYPES,
    ImportRejected,
    Problem,
    Problems,
    Records,
    StageWriter,
    batch_cells,
    convert_columns,
    copy_plain_csv,
    create_stage,
    drop_stage,
    plain_csv_header,
    report_duplicates,
)
from store.csv_load import (
    FileLoad,
    file_load,
    is_ragged,
    refuse_unknown_columns,
    result_dict,
    stage_batches,
)
from store.db import keep_statistics_fresh
from store.errors import ValidationError
from store.locations import is_postgres
from store.models import (
    AudienceBuild,
    ProfileDatabase,
    ProfileField,
    Segment,
    UTCDateTime,
    utcnow,
)

__all__ = [
    "MAX_PROBLEMS",
    "READ_BATCH",
    "ImportRejected",
    "ImportResult",
    "Problem",
    "SegmentFileResult",
    "apply_segment_file",
    "import_profiles",
]

PROFILE_STAGE = "cc_import_profile_stage"
SEGMENT_STAGE = "cc_import_segment_stage"
SEGMENT_IDS = "cc_import_segment_ids"  # the file's distinct profile ids
# The stage's columns from the file, and the one the checks fill.
SEGMENT_STAGED = [("line", "BIGINT"), ("database_name", "TEXT"), ("external_id", "TEXT")]
SEGMENT_RESOLVED = [("profile_id", "BIGINT")]
SEGMENT_COLUMNS = {"external_id": "external_id", "database": "database_name"}  # file: stage
_SEGMENT_JSON_STAGE = (  # SQLite: (first line, database name, JSON array of external ids)
    f"INSERT INTO {SEGMENT_STAGE} (line, database_name, external_id) "
    "SELECT ? + key, ?, value FROM json_each(?)"
)
SEGMENT_ACTIONS = ("add", "remove", "replace")


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
        return result_dict(self)


@audit.operation("profiles.import", "database")
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
    with file_load(session, source, batch_size=batch_size, max_problems=max_problems) as load:
        conn = load.conn
        fields = {f.name: f for f in profiles.database_fields(session, database.id)}
        unknown = (
            f"unknown column: not a field of {database.name!r} ({', '.join(fields) or 'none'})"
        )

        def columns_of(header: list[str], problems: Problems) -> list[tuple[int, ProfileField]]:
            refuse_unknown_columns(header, problems, {"external_id", *fields}, unknown)
            # Only the first occurrence of each known field is imported.
            columns: list[tuple[int, ProfileField]] = []
            for index, column in enumerate(header):
                if column in fields and all(f.name != column for _i, f in columns):
                    columns.append((index, fields[column]))
            return columns

        def scan(records: Records, problems: Problems) -> tuple:
            header = load.header(records, problems)
            columns = columns_of(header, problems)
            width, id_index = len(header), header.index("external_id")
            writer = load.stage(
                PROFILE_STAGE,
                [("line", "BIGINT"), ("external_id", "TEXT")]
                + [(f.slot, STAGE_SQL_TYPES[f.type]) for _i, f in columns],
            )
            rows = stage_batches(
                records,
                problems,
                writer,
                lambda batch: convert_columns(batch, width, id_index, columns),
                lambda bad: _stage_rows(bad, problems, writer, width, id_index, columns),
            )
            return rows, columns

        first_load = None
        if load.binary.seekable():
            first_load = profile_load.load_new_profiles(
                session, database, load.binary, load.name, columns_of
            )
        if first_load is not None:
            rows = inserted = first_load
            updated = 0
        else:
            (rows, columns), problems = load.scan(scan)
            report_duplicates(conn, PROFILE_STAGE, ["external_id"], repr, problems)
            problems.raise_if_any(load.name)
            inserted, updated = _upsert_profiles(conn, database, [f for _i, f in columns])
            drop_stage(conn, PROFILE_STAGE)
        keep_statistics_fresh(conn, "profile", inserted + updated)
    database.profile_count += inserted
    session.add(database)
    audit.record(
        session,
        actor,
        "profiles.import",
        "database",
        database.id,
        database.name,
        file=load.name,
        rows=rows,
        inserted=inserted,
        updated=updated,
    )
    session.flush()
    unchanged = rows - inserted - updated
    return ImportResult(database.name, rows, inserted, updated, unchanged, load.seconds())


def _stage_rows(
    records: Iterable[tuple[int, list[str]]],
    problems: Problems,
    writer: StageWriter,
    width: int,
    id_index: int,
    columns: list[tuple[int, ProfileField]],
) -> None:
    """Row by row: a row whose cells all parse is staged; the first bad cell sends the row
    through `_parse_reporting`, which reports every bad cell of it."""
    # Text cells are stored as they are: no call at all on the fast path.
    fast = [(index, None if f.type == "text" else PARSERS[f.type]) for index, f in columns]
    add = writer.add
    for line, cells in records:
        if is_ragged(line, cells, width, problems):
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


def _parse_reporting(
    line: int, cells: list[str], columns: list[tuple[int, ProfileField]], problems: Problems
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
    pg = is_postgres(conn)
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
    # R11a: a new profile's GCG membership is decided when it is created.
    from store.gcg import new_profile_sql

    in_gcg, gcg_params = new_profile_sql(database, "s.external_id")
    inserted = conn.execute(
        sa.text(
            f"INSERT INTO profile (database_id, external_id, hash_key, in_gcg, created_at{slots}) "
            f"SELECT :db, s.external_id, cc_profile_key(s.external_id), {in_gcg}, :now{values} "
            f"FROM {PROFILE_STAGE} s "
            "WHERE NOT EXISTS (SELECT 1 FROM profile p "
            "WHERE p.database_id = :db AND p.external_id = s.external_id)"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
        {"db": database.id, "now": utcnow(), **gcg_params},
    ).rowcount
    return inserted, updated


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class SegmentFileResult:
    segment: str
    action: str
    rows: int
    added: int
    removed: int
    builds: tuple[AudienceBuild, ...] = ()  # the incremental builds it queued (R2c)

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self, hidden=("builds",))


def _segment_file_action(segment: Segment, action: str | None = None, *_: Any, **kw: Any) -> str:
    return f"segment.{kw.get('action', action)}"


@audit.operation(_segment_file_action, "segment")
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
    # PostgreSQL first offers the file to the server's COPY (`_copy_segment_file`), which
    # reads it again when that does not apply: standard input too is kept for that.
    pg = is_postgres(session)
    with file_load(
        session, source, batch_size=batch_size, max_problems=max_problems, seekable=pg
    ) as load:
        conn = load.conn
        every_row: dict[str, int | None] = {}  # the database of every row, when one is

        def scan(records: Records, problems: Problems) -> int:
            header = load.header(
                records,
                problems,
                SEGMENT_COLUMNS,
                "unknown column: a segment file has external_id and database",
            )
            default_db = _default_database(session, segment, database, "database" in header)
            width, id_index = len(header), header.index("external_id")
            db_index = header.index("database") if "database" in header else None
            no_column = db_index is None and default_db is not None
            every_row["database"] = default_db.id if no_column else None
            default_name = default_db.name if default_db is not None else ""
            writer = load.stage(SEGMENT_STAGE, SEGMENT_STAGED, SEGMENT_RESOLVED)

            def write_columns(lines: Sequence[int], staged: list[Sequence[Any]]) -> None:
                if not pg and isinstance(lines, range) and len(set(staged[0])) == 1:
                    # SQLite, the usual batch (one database, one line per record): one
                    # statement, the ids as one JSON array that json_each reads in C (0.25
                    # CPU-s per million rows instead of 0.85 for executemany).
                    conn.exec_driver_sql(
                        _SEGMENT_JSON_STAGE,
                        (lines.start, staged[0][0], json.dumps(staged[1], ensure_ascii=False)),
                    )
                else:
                    writer.add_many(zip(lines, *staged, strict=True))

            return stage_batches(
                records,
                problems,
                writer,
                lambda batch: _segment_columns(batch, width, id_index, db_index, default_name),
                lambda bad: _stage_segment_rows(
                    bad, problems, writer, width, id_index, db_index, default_name
                ),
                write_columns=write_columns,
                empty_file_ok=True,  # `replace` with no rows empties the segment
            )

        copied = _copy_segment_file(session, load, segment, database) if pg else None
        if copied is None:
            rows, problems = load.scan(scan)
            matched = _segment_ids(conn, problems, rows, every_row.get("database"))
            problems.raise_if_any(load.name)
        else:
            rows, matched = copied
        change = segments.change_members_where(session, actor, segment, action, matched)
        drop_stage(conn, SEGMENT_STAGE)
        drop_stage(conn, SEGMENT_IDS)
    return SegmentFileResult(
        segment.name, action, rows, change.added, change.removed, change.builds
    )


def _copy_segment_file(
    session: Session, load: FileLoad, segment: Segment, database: ProfileDatabase | None
) -> tuple[int, segments.ProfileIds] | None:
    """PostgreSQL, a plain file (csv_import.copy_plain_csv) whose every row names a
    different profile: (its rows, their ids) with the file streamed into the stage as it
    is, parsed by the server (0.8 s less per million rows than reading it in Python).
    None for any other file, with nothing left of the attempt: the file is then read and
    checked row by row (`apply_segment_file`), which reports every problem."""
    conn, binary = load.conn, load.binary  # seekable: see apply_segment_file
    start = binary.tell()
    header = plain_csv_header(binary)
    if (
        header is None
        or "external_id" not in header
        or len(set(header)) != len(header)
        or not set(header) <= SEGMENT_COLUMNS.keys()
    ):
        binary.seek(start)
        return None
    default_db = _default_database(session, segment, database, "database" in header)
    database_id = None
    if "database" not in header:
        if default_db is None:
            binary.seek(start)
            return None
        database_id = default_db.id
    with conn.begin_nested() as attempt:
        create_stage(conn, SEGMENT_STAGE, SEGMENT_STAGED + SEGMENT_RESOLVED)
        columns = [SEGMENT_COLUMNS[name] for name in header]
        rows = copy_plain_csv(conn, binary, SEGMENT_STAGE, columns)
        # A blank value arrived as NULL, which names no profile: one more id missing.
        if rows is not None and _collect_ids(conn, database_id) == rows:
            return rows, segments.ProfileIds(SEGMENT_IDS)
        attempt.rollback()
    binary.seek(start)
    return None


def _segment_ids(
    conn: Connection, problems: Problems, rows: int, database_id: int | None
) -> segments.ProfileIds:
    """The profile ids the staged rows name, into a table keyed by the id, for the
    membership change (segments.ProfileIds).

    A file whose rows all name a profile, each a different one, has neither a duplicate
    nor an unknown external id ((database, external_id) -> profile is one to one), so when
    the table has as many ids as the file has rows (`_collect_ids`), the two checks of the
    general case (a GROUP BY over the names, an UPDATE of the stage and a count of its
    unresolved rows) are not needed. Otherwise they run and report every problem.
    """
    distinct = _collect_ids(conn, database_id)
    # Without a problem every one of the file's `rows` was staged.
    if problems.total or distinct != rows:
        report_duplicates(conn, SEGMENT_STAGE, ["database_name", "external_id"], repr, problems)
        resolve_profiles(conn, SEGMENT_STAGE, problems)
        if not problems.total:  # fewer ids than rows: a repeat or an unknown id, always
            raise AssertionError("segment file: ids missing, and no problem found")
    return segments.ProfileIds(SEGMENT_IDS)


def _collect_ids(conn: Connection, database_id: int | None) -> int:
    """The distinct profile ids the staged rows name, into SEGMENT_IDS, keyed by the id;
    returns how many, or -1 when a profile is named twice (PostgreSQL).

    Rows name profiles of `database_id`, or of the database each one names. The
    membership change then reads the table in id order (the order of segment_member's
    indexes) instead of building a temporary index of the stage's ids (BENCHMARKS.md,
    issue 14 loads).
    """
    pg = is_postgres(conn)
    # PostgreSQL: the key comes after the rows (below), SQLite's drops repeats as it goes.
    create_stage(conn, SEGMENT_IDS, [("profile_id", "BIGINT" if pg else "INTEGER PRIMARY KEY")])
    if pg:  # temp tables are never auto-analysed: the join below plans on these figures
        conn.exec_driver_sql(f"ANALYZE {SEGMENT_STAGE}")
    # A file without a database column names profiles of one database (`database_id`):
    # no lookup of every row's database name (0.1 s per million rows on PostgreSQL).
    ids = f"SELECT p.id FROM {SEGMENT_STAGE} s " + (
        f"JOIN profile p ON p.database_id = {int(database_id)} AND p.external_id = s.external_id"
        if database_id is not None
        else "JOIN profile_database d ON d.name = s.database_name "
        "JOIN profile p ON p.database_id = d.id AND p.external_id = s.external_id"
    )
    if not pg:
        return conn.exec_driver_sql(
            f"INSERT OR IGNORE INTO {SEGMENT_IDS} (profile_id) {ids}"
        ).rowcount
    # The ids sorted into a plain table, then its primary key built over them at once: a
    # fifth less than inserting a million ids into the key one by one. A profile named
    # twice fails the key and undoes both (ON CONFLICT is 70 % slower). Building the key
    # stores the table's size, which all its readers plan on, and the key keeps the joins
    # of `remove` and `replace` safe: without it, a planner misled by stale statistics
    # read the table once per profile (BENCHMARKS.md, the keyless table that was reverted).
    try:
        with conn.begin_nested():
            inserted = conn.execution_options(preserve_rowcount=True).exec_driver_sql(
                f"INSERT INTO {SEGMENT_IDS} (profile_id) {ids} ORDER BY p.id"
            )
            conn.exec_driver_sql(f"ALTER TABLE {SEGMENT_IDS} ADD PRIMARY KEY (profile_id)")
            return inserted.rowcount
    except sa.exc.IntegrityError:
        return -1  # a repeat


def _segment_columns(
    batch: list[list[str]], width: int, id_index: int, db_index: int | None, default_name: str
) -> list[Sequence[str]] | None:
    """[database names, external ids] of a batch without a single problem, else None."""
    cells = batch_cells(batch, width, id_index)
    if cells is None:
        return None
    external_ids = cells[id_index]
    if db_index is not None and "" not in cells[db_index]:
        return [cells[db_index], external_ids]
    if db_index is None and default_name:
        return [[default_name] * len(batch), external_ids]
    return None  # some rows take the default database, or have none: row by row


def _stage_segment_rows(
    records: Iterable[tuple[int, list[str]]],
    problems: Problems,
    writer: StageWriter,
    width: int,
    id_index: int,
    db_index: int | None,
    default_name: str,
) -> None:
    """Row by row, reporting every problem (the batches `_segment_columns` refuses)."""
    for line, cells in records:
        if is_ragged(line, cells, width, problems):
            continue
        external_id = cells[id_index]
        db_name = (cells[db_index] if db_index is not None else "") or default_name
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


def resolve_profiles(
    conn: Connection,
    stage: str,
    problems: Problems,
    *,
    database: ProfileDatabase | None = None,
) -> None:
    """Set-based: the staged external ids -> `profile_id`; every unknown one is a problem.

    The stage has `line`, `external_id` and `profile_id`, and either `database_name` (each
    row names its database: segment files) or one `database` for the whole file (events).
    """
    pg = is_postgres(conn)
    if pg:  # temp tables are never auto-analysed: the join below plans on these figures
        conn.exec_driver_sql(f"ANALYZE {stage}")
    # UPDATE … FROM (both backends): one join the planner can hash, where a correlated
    # subquery per staged row made PostgreSQL probe the index a million times.
    if database is None:
        conn.exec_driver_sql(
            f"""UPDATE {stage} SET profile_id = p.id
                FROM profile p JOIN profile_database d ON d.id = p.database_id
                WHERE d.name = {stage}.database_name
                  AND p.external_id = {stage}.external_id"""
        )
    else:
        conn.execute(
            sa.text(
                f"""UPDATE {stage} SET profile_id = p.id FROM profile p
                    WHERE p.database_id = :db AND p.external_id = {stage}.external_id"""
            ),
            {"db": database.id},
        )
    if pg:  # again: the joins that follow read profile_id, which was NULL until now
        conn.exec_driver_sql(f"ANALYZE {stage}")
    if database is None:
        missing = f"""FROM {stage} s
            LEFT JOIN profile_database d ON d.name = s.database_name
            WHERE s.profile_id IS NULL"""
        columns = "s.line, s.database_name, s.external_id, d.id"
    else:
        missing = f"FROM {stage} s WHERE s.profile_id IS NULL"
        columns = "s.line, NULL, s.external_id, 0"
    count = conn.exec_driver_sql(f"SELECT COUNT(*) {missing}").scalar_one()
    if not count:
        return
    rows = conn.exec_driver_sql(
        f"SELECT {columns} {missing} ORDER BY s.line LIMIT {problems.cap}"
    ).all()
    for line, db_name, external_id, db_id in rows:
        db_name = db_name if database is None else database.name
        if db_id is None:
            problems.add(line, "database", f"unknown profile database {db_name!r}")
        else:
            problems.add(line, "external_id", f"unknown external_id {external_id!r} in {db_name!r}")
    problems.total += count - len(rows)
