"""The skeleton of an all-or-nothing CSV file load, written once.

Profile imports, segment files, event imports and GCG files (store.imports, store.events,
store.gcg) all load a file the same way, inside the caller's transaction:

    with file_load(session, source, batch_size=..., max_problems=...) as load:
        def scan(records, problems):
            header = load.header(records, problems, KNOWN, "unknown column: ...")
            writer = load.stage(STAGE, [("line", "BIGINT"), ...])
            return stage_batches(records, problems, writer, columns_of_batch, stage_rows)
        rows, problems = load.scan(scan)
        ...  # set-based checks over the stage, then
        problems.raise_if_any(load.name)  # ImportRejected: every problem, nothing changed
        ...  # the merge
    return Result(..., load.seconds())

What differs stays with each load: its columns, its checks, its merge SQL, its result.
The reading, staging and COPY machinery is store.csv_import.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy.engine import Connection
from sqlmodel import Session

from store.csv_import import (
    READ_BATCH,
    Problems,
    Records,
    StageWriter,
    check_header_names,
    create_stage,
    open_source,
    read_header,
    scan_records,
    use_large_cache,
)

T = TypeVar("T")
SPOOL_CHUNK = 1 << 20  # bytes copied at a time from a stream that cannot seek


@dataclass(frozen=True)
class FileLoad:
    """A CSV file being loaded in the caller's transaction (see `file_load`)."""

    binary: IO[bytes]
    name: str  # the file as problems and the audit entry name it
    conn: Connection
    batch_size: int
    max_problems: int
    started: float  # time.perf_counter() when the load began

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def scan(self, scan: Callable[[Records, Problems], T]) -> tuple[T, Problems]:
        """`scan(records, problems)` over the file's records (csv_import.scan_records)."""
        return scan_records(self.binary, self.max_problems, scan)

    def header(
        self,
        records: Iterator[tuple[int, list[str]]],
        problems: Problems,
        known: Collection[str] | None = None,
        unknown: str = "",
    ) -> list[str]:
        """The header row, checked: rejects the file at once when it is empty or has no
        external_id column; a repeated column, and each column not in `known` (if given,
        with the reason `unknown`), is a problem of line 1."""
        header = read_header(records, problems, self.name)
        check_header_names(header, problems, self.name)
        if known is not None:
            refuse_unknown_columns(header, problems, known, unknown)
        return header

    def stage(
        self,
        table: str,
        staged: list[tuple[str, str]],
        filled_later: list[tuple[str, str]] | None = None,
    ) -> StageWriter:
        """A staging table of `staged` (name, SQL type) columns, which the returned writer
        fills from the file, and `filled_later` ones that set-based checks fill."""
        create_stage(self.conn, table, staged + (filled_later or []))
        return StageWriter(self.conn, table, [name for name, _ in staged], self.batch_size)


@contextmanager
def file_load(
    session: Session,
    source: str | Path | IO[bytes],
    *,
    batch_size: int,
    max_problems: int,
    seekable: bool = False,
) -> Iterator[FileLoad]:
    """Open `source` (a path: closed at the end, whatever happens; a stream: left open)
    on the session's connection, with SQLite's large page cache (csv_import.use_large_cache).
    The caller checks the actor first, so a refusal never opens the file.

    With `seekable`, a source that cannot seek (standard input, a pipe) is first copied
    into a temporary file, so that the load can read it twice (a first attempt that it
    abandons, then the general path)."""
    started = time.perf_counter()
    binary, name, owned = open_source(source)
    with ExitStack() as close:
        if owned:
            close.callback(binary.close)
        if seekable and not binary.seekable():
            spooled = close.enter_context(tempfile.TemporaryFile())
            shutil.copyfileobj(binary, spooled, SPOOL_CHUNK)
            spooled.seek(0)
            binary = spooled
        conn = session.connection()
        use_large_cache(conn)
        yield FileLoad(binary, name, conn, batch_size, max_problems, started)


def refuse_unknown_columns(
    header: list[str], problems: Problems, known: Collection[str], reason: str
) -> None:
    for column in header:
        if column not in known:
            problems.add(1, column, reason)


def stage_batches(
    records: Records,
    problems: Problems,
    writer: StageWriter,
    columns_of_batch: Callable[[list[list[str]]], list[Sequence[Any]] | None],
    stage_rows: Callable[[Iterable[tuple[int, list[str]]]], None],
    *,
    write_columns: Callable[[Sequence[int], list[Sequence[Any]]], None] | None = None,
    empty_file_ok: bool = False,
) -> int:
    """Stage every record, batch by batch; returns how many records the file has.

    `columns_of_batch(batch)` gives the staged values of a batch without a single problem,
    column by column (no Python code per cell), or None; such a batch goes row by row
    through `stage_rows((line, cells), ...)`, which reports every problem of it.
    `write_columns(lines, columns)` writes a good batch (by default: `writer`). A header
    without rows is a problem unless `empty_file_ok`.
    """
    rows = 0
    for lines, batch in records.batches(READ_BATCH):
        rows += len(batch)
        columns = columns_of_batch(batch)
        if columns is None:
            stage_rows(zip(lines, batch, strict=True))
        elif write_columns is None:
            writer.add_many(zip(lines, *columns, strict=True))
        else:
            write_columns(lines, columns)
    writer.flush()
    if rows == 0 and not empty_file_ok and not problems.total:
        problems.add(0, None, "empty file: a header but no rows")
    return rows


def is_ragged(line: int, cells: list[str], width: int, problems: Problems) -> bool:
    """A record with more or fewer cells than the header: a problem of its line."""
    if len(cells) == width:
        return False
    problems.add(line, None, f"ragged row: {len(cells)} cells where the header has {width}")
    return True


def result_dict(result: Any, *, hidden: Collection[str] = ()) -> dict[str, Any]:
    """A load's result dataclass as the CLI prints it (JSON): its fields in order, but
    `hidden` ones, `seconds` rounded to the millisecond."""
    shown = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in hidden}
    if "seconds" in shown:
        shown["seconds"] = round(shown["seconds"], 3)
    return shown
