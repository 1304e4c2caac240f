"""First load of an empty profile database: the rows go straight into `profile`.

`store.imports.import_profiles` tries this path when the database has no profile yet and
the file can be read twice (it can seek). A first load is all inserts, so the general
path's staging table, duplicate check and INSERT … SELECT would be work for nothing: here
each batch, parsed column by column, goes directly into `profile` (executemany on SQLite;
one COPY stream on PostgreSQL, which the server ingests while the client parses the next
batch). The unique constraint on (database_id, external_id) sees any duplicate.

Anything else than a plain file of new profiles (any problem: a bad cell, a ragged row, a
bad header or encoding; a duplicate external id; a profile created meanwhile) undoes what
this path wrote (a savepoint on PostgreSQL; on SQLite, which has a single writer, the
database's rows, none before) and returns None: the general path then reads the file
again and reports every problem exactly as before. Either way it is one transaction, so a
failed or killed import leaves nothing.
"""

from __future__ import annotations

import io
import marshal
import os
import re
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from store.csv_import import (
    READ_BATCH,
    ImportRejected,
    Problems,
    Records,
    check_header_names,
    collector_paused,
    convert_columns,
    read_header,
    universal_breaks,
    write_copy_rows,
)
from store.hashing import assignment_hash, profile_keys
from store.locations import is_postgres
from store.models import ProfileDatabase, ProfileField, UTCDateTime, utcnow

_SQLITE_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?")

# header, problems -> [(column index, field)] of the fields the file sets (adds problems).
Columns = Callable[[list[str], Problems], list[tuple[int, ProfileField]]]


class NotAFirstLoad(Exception):
    """The file is not a plain list of new profiles: the general path takes it."""


def is_empty(conn: Connection, database_id: int) -> bool:
    return (
        conn.exec_driver_sql(
            "SELECT 1 FROM profile WHERE database_id = %s LIMIT 1"
            if is_postgres(conn)
            else "SELECT 1 FROM profile WHERE database_id = ? LIMIT 1",
            (database_id,),
        ).first()
        is None
    )


def load_new_profiles(
    session: Session,
    database: ProfileDatabase,
    binary: IO[bytes],
    name: str,
    columns_of: Columns,
) -> int | None:
    """Insert every row of the file as a new profile: the number of rows, or None (and
    nothing written, the file rewound) when the database is not empty or the general path
    must take the file."""
    conn = session.connection()
    if not is_postgres(conn):
        # SQLite: take the write lock before looking (a no-op write of the row the import
        # updates anyway). Then no other writer can add profiles to this database between
        # the check and the clean-up below, which deletes every profile of the database.
        conn.exec_driver_sql(
            "UPDATE profile_database SET profile_count = profile_count WHERE id = ?",
            (database.id,),
        )
    if not is_empty(conn, database.id):
        return None
    start = binary.tell()
    try:
        if is_postgres(conn):
            # A failed COPY aborts the transaction: work inside a savepoint (emitted when
            # the nested transaction first asks for the connection).
            with session.begin_nested(), collector_paused():
                return _load(session.connection(), database, binary, name, columns_of)
        try:
            with collector_paused():
                return _load(conn, database, binary, name, columns_of)
        except NotAFirstLoad:  # the database was empty: its rows are this file's
            conn.exec_driver_sql("DELETE FROM profile WHERE database_id = ?", (database.id,))
            raise
    except NotAFirstLoad:
        binary.seek(start)
        return None


def _load(
    conn: Connection, database: ProfileDatabase, binary: IO[bytes], name: str, columns_of: Columns
) -> int:
    problems = Problems(cap=1)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    try:
        records = Records(text, problems, universal_breaks)
        try:
            header = read_header(records, problems, name)
            check_header_names(header, problems, name)
        except ImportRejected:
            raise NotAFirstLoad from None
        columns = columns_of(header, problems)
        if problems.total:
            raise NotAFirstLoad
        id_index = header.index("external_id")
        rows = 0
        with _ProfileWriter(conn, database, [f.slot for _i, f in columns]) as writer:

            def prepared() -> Iterator[list[Sequence[Any]]]:
                """The file's batches as the writer takes them (no database access)."""
                for _lines, batch in records.batches(READ_BATCH):
                    converted = convert_columns(batch, len(header), id_index, columns)
                    if converted is None or problems.total:
                        raise NotAFirstLoad
                    yield writer.prepare(converted)
                if problems.total:  # a malformed end
                    raise NotAFirstLoad

            pipelined = not writer.postgres and _worth_a_reader_process(binary)
            batches = _from_reader_process(prepared()) if pipelined else prepared()
            with closing(batches):  # now, not whenever the generator is collected
                for batch_columns in batches:
                    writer.write(batch_columns)
                    rows += len(batch_columns[0])
            if rows == 0:
                raise NotAFirstLoad
        if pipelined:  # the reader process read the file to its end, not this one
            binary.seek(0, io.SEEK_END)
    except UnicodeDecodeError:
        raise NotAFirstLoad from None
    finally:
        text.detach()  # leave `binary` open: its owner closes it
    return rows


# The reader process (SQLite first loads): a forked child reads, parses, checks and hashes
# the file while this process inserts. The child touches no database connection and ends
# with os._exit; any problem it meets makes the load NotAFirstLoad, so the general path
# reads the file again, in this process, and reports every problem as before.
PIPELINE_MIN_BYTES = 4 << 20  # smaller files: the fork is not worth it
_FRAME = struct.Struct("<q")  # the length of each batch; -1: the file is done; -2: stop


def _worth_a_reader_process(binary: IO[bytes]) -> bool:
    """Fork only on Linux, from a process with no other thread (the CLI: a fork copies
    only the calling thread, so a lock held elsewhere would stay held in the child), for
    a file of at least PIPELINE_MIN_BYTES still to read."""
    if sys.platform != "linux" or threading.active_count() != 1:
        return False
    here = binary.tell()
    size = binary.seek(0, io.SEEK_END)
    binary.seek(here)
    return size - here >= PIPELINE_MIN_BYTES


def _from_reader_process(batches: Iterator[Any]) -> Iterator[Any]:
    """The items of `batches`, computed in a forked child and passed through a pipe
    (marshal: both ends are this interpreter). Raises NotAFirstLoad when the child stops
    on a problem, or ends without saying that the file is done."""
    import fcntl  # Linux only (_worth_a_reader_process)
    import signal

    read_end, write_end = os.pipe()
    with suppress(OSError):
        fcntl.fcntl(write_end, 1031, 1 << 20)  # F_SETPIPE_SZ: let the child run ahead
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        status = 1
        try:
            with os.fdopen(write_end, "wb", buffering=1 << 16) as out:
                try:
                    for item in batches:
                        data = marshal.dumps(item)
                        out.write(_FRAME.pack(len(data)))
                        out.write(data)
                    out.write(_FRAME.pack(-1))
                except Exception:  # NotAFirstLoad, a decoding error, anything
                    out.write(_FRAME.pack(-2))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    done = False
    try:
        with os.fdopen(read_end, "rb", buffering=1 << 16) as source:
            while True:
                head = source.read(_FRAME.size)
                length = _FRAME.unpack(head)[0] if len(head) == _FRAME.size else -2
                if length == -1:
                    done = True
                    return
                data = source.read(length) if length >= 0 else b""
                if length < 0 or len(data) != length:  # a problem, or the child died
                    raise NotAFirstLoad
                yield marshal.loads(data)
    finally:
        if not done:  # this load ended early: the child need not finish
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class _ProfileWriter:
    """New profile rows into `profile`: executemany on SQLite, one COPY on PostgreSQL.

    Per row only the external id, its key, the GCG decision (when the database has a GCG
    percent) and the file's values are passed; the database id, the creation time and a
    GCG decision that is the same for all rows are constants of the statement.
    """

    def __init__(self, conn: Connection, database: ProfileDatabase, slots: list[str]) -> None:
        self.conn = conn
        self.postgres = is_postgres(conn)
        # R11a: a new profile's GCG membership is decided when it is created, as the
        # general path's INSERT … SELECT does in SQL (store.gcg.new_profile_sql).
        bp, seed = database.gcg_percent_bp, database.gcg_seed
        self.gcg: tuple[int, int] | None = None
        if bp and seed is not None:
            from store.gcg import threshold  # here: store.gcg costs start-up time to import

            self.gcg = (seed, threshold(bp))
        # created_at as the column stores it (what UTCDateTime and the dialect make of it)
        created_at: Any = UTCDateTime().process_bind_param(utcnow(), conn.dialect)
        per_row = ["external_id", "hash_key", *(["in_gcg"] if self.gcg else []), *slots]
        if self.postgres:
            # COPY has no constants: the same text in every row, after the per-row columns
            constants = {"database_id": str(int(database.id or 0))}
            constants["created_at"] = created_at.isoformat(sep=" ")
            if not self.gcg:
                constants["in_gcg"] = "f"
            self.constants = list(constants.values())
            names = ", ".join([*per_row, *constants])
            cursor = conn.connection.driver_connection.cursor()
            self._copy_context = cursor.copy(f"COPY profile ({names}) FROM STDIN")
        else:
            to_db = sa.DateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
            stamp = to_db(created_at) if to_db else str(created_at)
            if not _SQLITE_STAMP.fullmatch(stamp):  # it becomes a literal of the statement
                raise AssertionError(f"unexpected timestamp text {stamp!r}")
            names = ", ".join(["database_id", "created_at", *per_row])
            values = [str(int(database.id or 0)), f"'{stamp}'", *("?" * len(per_row))]
            if not self.gcg:
                names += ", in_gcg"
                values.append("0")
            self.insert = f"INSERT INTO profile ({names}) VALUES ({', '.join(values)})"

    def __enter__(self) -> _ProfileWriter:
        if self.postgres:
            self.copy = self._copy_context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.postgres:
            import psycopg

            try:
                self._copy_context.__exit__(*exc)
            except psycopg.IntegrityError:  # a duplicate, or a profile created meanwhile
                raise NotAFirstLoad from None

    def prepare(self, converted: list[Sequence[Any]]) -> list[Sequence[Any]]:
        """The per-row columns of a batch (no database access: a reader process may run it)."""
        external_ids, *values = converted
        columns: list[Sequence[Any]] = [external_ids, profile_keys(external_ids)]  # R9 key
        if self.gcg:
            seed, below = self.gcg
            columns.append([assignment_hash(seed, e) < below for e in external_ids])
        return columns + values

    def write(self, columns: list[Sequence[Any]]) -> None:
        if self.postgres:
            n = len(columns[0])
            write_copy_rows(self.copy, columns + [[text] * n for text in self.constants])
            return
        try:
            self.conn.exec_driver_sql(self.insert, list(zip(*columns, strict=True)))
        except sa.exc.IntegrityError:
            raise NotAFirstLoad from None
