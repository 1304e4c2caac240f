"""Campaign members benchmark (issue 13 §1). A script, not a test.

    .venv/bin/python benchmarks/bench_members.py [--profiles 1000000] [--db URL]

On a fresh SQLite file (default) or the given scratch database (its tables are dropped):
N profiles (region: 7 values, tier: 3), one static segment of all of them, two campaigns
on it built by the real engine: "bench" (5 % LCG by region and tier: 50,000 control) and
"limited" (5 % with a limit of 20: a needle of 20 control members in a million).

1. pages (store.members.member_page, 100 rows): the first page and the next 20 pages,
   unfiltered and with each filter (group, stratum, group+stratum, prefix, the limited
   campaign's 20 control members); prints the slowest page of each (target ≤ 200 ms);
2. export (store.members.MemberStream + the CSV writer of `campaign members`) of every
   member to a file, rows/s (target ≥ 200,000 rows/s), against a floor measured in the
   same run: the same SELECT through the raw DBAPI cursor written with csv.writer, no
   types, no decoding; and peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import gen_profiles  # noqa: E402

from console.cli.export import write_members_csv  # noqa: E402
from store import builds, campaigns, profiles, segments  # noqa: E402
from store.actors import Actor  # noqa: E402
from store.db import create_workspace, transaction  # noqa: E402
from store.members import MemberFilter, MemberStream, member_page  # noqa: E402
from store.models import SQLModel  # noqa: E402


def fresh(url: str):
    engine = create_workspace(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in SQLModel.metadata.tables:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SQLModel.metadata.drop_all(engine)
    with engine.begin() as conn:  # the migrations' bookkeeping goes too: a fresh schema
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return create_workspace(url)


def setup(engine, n: int, actor: Actor) -> None:
    with transaction(engine) as s:
        db = profiles.create_database(s, actor, "bench", [("region", "text"), ("tier", "int")])
        slots = {f.name: f.slot for f in profiles.database_fields(s, db.id)}
        db_id = db.id
    gen_profiles(engine, db_id, slots, 1, n)
    with transaction(engine) as s:
        profiles.get_database(s, "bench").profile_count = n
        seg = segments.create_segment(s, actor, "bench-seg")
        segments.add_profiles_where(s, actor, seg, sa.text(f"database_id = {db_id}"))
        for name, limit in (("bench", None), ("limited", 20)):
            campaigns.create_campaign(
                s,
                actor,
                name,
                profiles.get_database(s, "bench"),
                seg,
                lcg_percent="5",
                lcg_limit=limit,
                lcg_strata=["region", "tier"],
                seed=20260101,
            )
    for name in ("bench", "limited"):
        with transaction(engine) as s:
            campaigns.activate(s, actor, campaigns.get_campaign(s, name))
    builds.run_pending(engine, worker="bench")
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))


def time_pages(
    engine, campaign: str, flt: MemberFilter, pages: int = 21
) -> tuple[float, float, int]:
    """(first page ms, slowest next page ms, rows seen)."""
    times, after, seen = [], None, 0
    with Session(engine) as s:
        for _ in range(pages):
            t = time.perf_counter()
            page = member_page(s, campaign, flt, after=after)
            times.append((time.perf_counter() - t) * 1000)
            seen += len(page.rows)
            if page.next_after is None:
                break
            after = page.next_after
    return times[0], max(times[1:], default=0.0), seen


def export_members(engine, out: Path) -> tuple[float, int]:
    """(seconds, rows): `campaign members bench` as the CLI writes it."""
    t = time.perf_counter()
    with Session(engine) as s, out.open("w", newline="") as f:
        count = write_members_csv(MemberStream(s, "bench"), f)
    return time.perf_counter() - t, count


def export_floor(engine, out: Path) -> tuple[float, int]:
    """(seconds, rows): the same rows through the raw DBAPI cursor, written as they come."""
    t = time.perf_counter()
    with engine.connect() as conn, out.open("w", newline="") as f:
        cid = conn.execute(sa.text("SELECT id FROM campaign WHERE name = 'bench'")).scalar()
        cur = conn.connection.dbapi_connection.cursor()
        cur.execute(
            'SELECT p.external_id, m."group", m.stratum_key, m.joined_at, m.source, m.cohort '
            "FROM campaign_member m JOIN profile p ON p.id = m.profile_id "
            f"WHERE m.campaign_id = {int(cid)} AND m.left_at IS NULL ORDER BY m.profile_id"
        )
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("external_id", "group", "stratum", "joined_at", "source", "cohort"))
        rows = 0
        while batch := cur.fetchmany(10_000):
            writer.writerows(batch)
            rows += len(batch)
    return time.perf_counter() - t, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--db", default=None)
    parser.add_argument("--keep", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    actor = Actor("bench")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        url = args.db or f"sqlite:///{Path(tmp) / 'members.db'}"
        engine = fresh(url)
        t = time.perf_counter()
        setup(engine, args.profiles, actor)
        print(
            f"setup: {args.profiles:,} profiles, 2 campaigns built in {time.perf_counter() - t:.1f} s"
        )

        cases = [
            ("bench", "all members", MemberFilter()),
            ("bench", "group=control", MemberFilter(group="control")),
            ("bench", "group=test", MemberFilter(group="test")),
            (
                "bench",
                "stratum region=Kazan,tier=2",
                MemberFilter(stratum=(("region", "Kazan"), ("tier", "2"))),
            ),
            (
                "bench",
                "control + region=Sochi",
                MemberFilter(group="control", stratum=(("region", "Sochi"),)),
            ),
            ("bench", "prefix P00012", MemberFilter(prefix="P00012")),
            ("limited", "limited: group=control (20)", MemberFilter(group="control")),
        ]
        print(f"{'page of 100 rows':34} {'first':>9} {'next (max)':>11}  rows")
        for campaign, label, flt in cases:
            first, nxt, seen = time_pages(engine, campaign, flt)
            ok = "ok" if max(first, nxt) <= 200 else "SLOW"
            print(f"{label:34} {first:7.1f}ms {nxt:9.1f}ms  {seen:>5} {ok}")

        # Export and floor alternate, 3 rounds, best of each: the first read of the
        # members warms the page cache, so a fixed order would favour the second.
        exports, floors = [], []
        for _ in range(3):
            floors.append(export_floor(engine, Path(tmp) / "floor.csv"))
            exports.append(export_members(engine, Path(tmp) / "members.csv"))
        (export, count), (floor, floor_rows) = min(exports), min(floors)
        assert floor_rows == count, (floor_rows, count)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"export {count:,} rows (CSV, best of 3): {export:.2f} s, {count / export:,.0f} "
            f"rows/s ({'ok' if count / export >= 200_000 else 'SLOW'}); floor (raw cursor + "
            f"csv): {floor:.2f} s, {floor_rows / floor:,.0f} rows/s; ratio "
            f"{export / floor:.2f}×; peak RSS {rss:.0f} MB"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
