"""Segment membership at scale: static add/replace and dynamic refresh. A script, not a test.

    .venv/bin/python benchmarks/bench_segments.py [--profiles 1000000] [--db URL]

On a fresh SQLite file (or the given database, which must hold no workspace yet) it generates the
profiles set-based, then times, each in its own transaction:
  * add_profiles_where of half the profiles into a static segment;
  * replace_profiles_where to another half (a quarter leaves, a quarter joins);
  * the first refresh of a dynamic segment (everyone matching enters);
  * a refresh after 1 % of the profiles changed (the diff only);
  * a refresh with nothing to do.
It prints seconds and rows per second for each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from store import profiles, segments
from store.actors import Actor
from store.db import create_workspace, transaction
from store.models import utcnow


def _generate(engine, actor, n: int) -> int:
    with transaction(engine) as session:
        database = profiles.create_database(session, actor, "bench", [("tier", "int")])
        series = (
            "n(x) AS (SELECT generate_series(1, :n) AS x)"
            if engine.dialect.name == "postgresql"
            else "n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :n)"
        )
        session.execute(
            sa.text(
                f"""INSERT INTO profile (database_id, external_id, hash_key, in_gcg, created_at, i0)
                    WITH RECURSIVE {series}
                    SELECT :db, 'B' || x, cc_profile_key('B' || x), false, :now, x % 100 FROM n"""
            ).bindparams(sa.bindparam("now", type_=sa.DateTime())),
            {"db": database.id, "n": n, "now": utcnow().replace(tzinfo=None)},
        )
        return database.id


def _timed(label: str, rows_of, engine, fn) -> None:
    started = time.perf_counter()
    with transaction(engine) as session:
        result = fn(session)
    elapsed = time.perf_counter() - started
    rows = rows_of(result)
    rate = f"{rows / elapsed:>12,.0f} rows/s" if rows else ""
    print(f"  {label:44} {elapsed:7.2f} s  {rows:>9,} rows {rate}  -> {result}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    actor = Actor("bench")
    n = args.profiles
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_workspace(args.db or f"sqlite:///{Path(tmp) / 'segments.db'}")
        started = time.perf_counter()
        db_id = _generate(engine, actor, n)
        print(
            f"{engine.dialect.name}: {n:,} profiles generated in {time.perf_counter() - started:.1f} s"
        )
        with transaction(engine) as session:
            database = profiles.get_database(session, "bench")
            segments.create_segment(session, actor, "static")
            segments.create_segment(session, actor, "dynamic", database=database, rule="tier < 50")

        def seg(session, name):
            return segments.get_segment(session, name)

        _timed(
            "static add (50 %)",
            lambda r: r,
            engine,
            lambda s: segments.add_profiles_where(s, actor, seg(s, "static"), sa.text("i0 < 50")),
        )
        _timed(
            "static replace (25 % leave, 25 % join)",
            lambda r: r[0] + r[1],
            engine,
            lambda s: segments.replace_profiles_where(
                s, actor, seg(s, "static"), sa.text("i0 >= 25 AND i0 < 75")
            ),
        )
        _timed(
            "dynamic first refresh (50 % enter)",
            lambda r: r.entered + r.left,
            engine,
            lambda s: segments.refresh(s, actor, seg(s, "dynamic")),
        )
        with transaction(engine) as session:  # 1 %: tier 49 -> 50 (leave), 50 -> 49 (join)
            session.execute(
                sa.text(
                    "UPDATE profile SET i0 = CASE i0 WHEN 49 THEN 50 ELSE 49 END "
                    "WHERE database_id = :db AND i0 IN (49, 50) AND id % 3 = 0"
                ),
                {"db": db_id},
            )
        _timed(
            "dynamic refresh after 1 % changed",
            lambda r: r.entered + r.left,
            engine,
            lambda s: segments.refresh(s, actor, seg(s, "dynamic")),
        )
        _timed(
            "dynamic refresh, nothing changed",
            lambda r: r.entered + r.left,
            engine,
            lambda s: segments.refresh(s, actor, seg(s, "dynamic")),
        )
        engine.dispose()


if __name__ == "__main__":
    main()
