"""Profile CSV import speed and memory (issue 6: >= 100,000 rows/s on 1,000,000 rows).
A script, not a test.

    .venv/bin/python benchmarks/bench_import.py [--rows 1000000] [--db URL] [--twice]

Writes a CSV (external_id, region:text, tier:int, age:int, int_field:int, signup:date,
ltv:float) to a temporary directory, imports it into a fresh profile database through
store.imports.import_profiles (the code behind `campaign-console import profiles`) and
prints rows per second and the peak resident memory of the process. With --segment a static segment then gets every profile added, replaced
(no change) and removed from a file of external ids. With --twice a
file changing every row is imported next (all updates), then once more (all unchanged). A run with a tenth of the rows
shows whether memory grows with the file. The load average is printed because the
figures are wall-clock: on a shared machine, compare runs at a similar load.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from store import imports, profiles, segments
from store.actors import Actor
from store.db import open_store, transaction

FIELDS = [
    ("region", "text"),
    ("tier", "int"),
    ("age", "int"),
    ("int_field", "int"),
    ("signup", "date"),
    ("ltv", "float"),
]
REGIONS = ["Moscow", "Saint Petersburg", "Kazan", "Novosibirsk", "Sochi"]


def write_csv(path: Path, rows: int, variant: int = 0) -> None:
    """The same external ids for every variant; other variants change every row's tier."""
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["external_id"] + [name for name, _t in FIELDS])
        for i in range(rows):
            h = (i * 2654435761) % 4294967296
            out.writerow(
                [
                    f"P{i:08d}",
                    REGIONS[h % 5],
                    1 + (h + variant) % 3,
                    18 + (h >> 8) % 60,
                    20 if h % 5 == 0 else 80,
                    f"20{10 + h % 15}-{1 + (h >> 4) % 12:02d}-{1 + (h >> 6) % 28:02d}",
                    f"{(h >> 3) % 100000 / 100:.2f}",
                ]
            )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument(
        "--segment",
        action="store_true",
        help="then add, replace and remove every profile of a static segment by a file",
    )
    parser.add_argument(
        "--twice",
        action="store_true",
        help="then import a file changing every row (updates) and it again (unchanged)",
    )
    args = parser.parse_args()
    actor = Actor("bench")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "profiles.csv"
        started = time.perf_counter()
        write_csv(csv_path, args.rows)
        changed_path = Path(tmp) / "changed.csv"
        if args.twice:
            write_csv(changed_path, args.rows, variant=1)
        size_mb = csv_path.stat().st_size / 1e6
        print(
            f"wrote {args.rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f} s"
        )
        url, cleanup = database_url(args.db, Path(tmp))
        engine = open_store(url)
        name = f"bench-{uuid.uuid4().hex[:8]}"
        with transaction(engine) as session:
            profiles.create_database(session, actor, name, FIELDS)
        rss_before = peak_rss_mb()
        runs = [("insert", csv_path), ("update", changed_path), ("same", changed_path)]
        for run, path in runs[: 3 if args.twice else 1]:
            started, cpu = time.perf_counter(), time.process_time()
            with transaction(engine) as session:
                database = profiles.get_database(session, name)
                result = imports.import_profiles(session, actor, database, path)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(
                f"{engine.dialect.name:10} {run:6} {result.rows:>9,} rows  {elapsed:6.2f} s  "
                f"{result.rows / elapsed:>9,.0f} rows/s  inserted {result.inserted:,} "
                f"updated {result.updated:,} unchanged {result.unchanged:,}  peak RSS {peak_rss_mb():.0f} MB "
                f"(before import {rss_before:.0f} MB)  this process's CPU {cpu:.1f} s, "
                f"load average {os.getloadavg()[0]:.1f}"
            )
        if args.segment:
            segment_runs(engine, actor, name, args.rows, Path(tmp))
        engine.dispose()
        cleanup()


def segment_runs(engine, actor: Actor, database: str, rows: int, tmp: Path) -> None:  # noqa: ANN001
    """`segment add|replace|remove` with a file naming every profile (store.imports)."""
    ids = tmp / "ids.csv"
    with ids.open("w", encoding="utf-8") as f:
        f.write("external_id\n")
        f.writelines(f"P{i:08d}\n" for i in range(rows))
    with transaction(engine) as session:
        segments.create_segment(session, actor, "bench-segment")
    for action in ("add", "replace", "remove"):
        started = time.perf_counter()
        with transaction(engine) as session:
            result = imports.apply_segment_file(
                session,
                actor,
                segments.get_segment(session, "bench-segment"),
                action,
                ids,
                database=profiles.get_database(session, database),
            )
        elapsed = time.perf_counter() - started
        print(
            f"{engine.dialect.name:10} segment {action:7} {rows:>9,} ids  "
            f"{elapsed:6.2f} s  {rows / elapsed:>9,.0f} ids/s  added {result.added:,} "
            f"removed {result.removed:,}  peak RSS {peak_rss_mb():.0f} MB"
        )


def database_url(given: str | None, tmp: Path) -> tuple[str, Callable[[], None]]:
    """A fresh SQLite file, or a fresh schema of the given PostgreSQL database."""
    if given is None:
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    if not given.startswith("postgresql"):
        return given, lambda: None
    schema = f"cc_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(given, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(given).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


if __name__ == "__main__":
    main()
