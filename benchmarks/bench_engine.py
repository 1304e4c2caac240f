"""Audience engine benchmark (issue 3 item 8, issue 14 targets 1-3). A script, not a test.

    .venv/bin/python benchmarks/bench_engine.py [--profiles 1000000] [--newcomers 10000]
                                                [--db URL] [--chunk 50000] [--no-copy]
                                                [--bound] [--statements]

On a fresh SQLite file (default) or the given database (its tables are dropped and
recreated: point it at a scratch database or schema, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres?options=-csearch_path%3Dbench_engine):

1. generates N + 4K profiles (region: 7 values, tier: 3 values) and a static segment of N;
2. **floor** (issue 14's baseline, measured twice: before and after the full build, and
   averaged): one INSERT … SELECT of the N rows (campaign_id, profile_id, group) into
   `floor_member`, whose only index is its primary key (campaign_id, profile_id), the
   group computed in SQL from an integer stored on the profile row (its id);
3. **full build**: activation of a campaign with a 5 % LCG stratified by region and tier,
   run by store.builds.run_pending (the real, chunked, resumable build) in a child process,
   which reports the build's time and its own peak RSS (start-up included); then, in the
   same process, K new profiles join the segment twice and each **incremental build**
   (R2c) is timed: the first pays the process's one-off costs (compiling each SQL
   statement, configuring the ORM mappers), the second does not, as in a scheduler that
   has run builds before. Target 2 is the second over the full build: one process, so a
   shared machine that runs it slower or faster moves both alike;
4. **same-rows copy** (issue 3's reference, kept for comparison): one INSERT … SELECT of
   the first N members' rows into `raw_member`, a table with campaign_member's columns,
   indexes and foreign keys, stratum keys and hashes precomputed before timing; and with
   `--bound`, the **slim-row build** (`slim_bound`);
5. **incremental build in its own process**: K more profiles join, then K more, timed as
   above in a fresh child process (its peak RSS is the incremental build's).

With `--statements`, the full build's child also times every SQL statement it runs (an
SQLAlchemy cursor hook: the statement's own round trip, as the client waits for it) and
prints the statements that took the most time, grouped by their text, to standard error.

Prints the ratios of issue 14: full / floor (target <= 4x, aim 2x), incremental / full
(target <= 2 %), peak RSS of a build (target <= 150 MB, flat from 1M to 10M). Works on
the code before issue 14 too (profiles without hash_key). Figures: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store import builds, campaigns, profiles, segments  # noqa: E402
from store.actors import Actor  # noqa: E402
from store.db import open_store, transaction  # noqa: E402

try:
    from store.db import create_workspace  # noqa: E402
except ImportError:  # the code before issue 15.7 created workspaces on open
    create_workspace = open_store
from store.models import CampaignMember, SQLModel, UTCDateTime, utcnow  # noqa: E402

REGIONS = ["Moscow", "Saint Petersburg", "Kazan", "Novosibirsk", "Yekaterinburg", "Samara", "Sochi"]
ACTOR = Actor("bench")
SEED = 20260101


def series(dialect: str) -> str:
    if dialect == "postgresql":
        return "n(x) AS (SELECT generate_series(:lo, :hi) AS x)"
    return "n(x) AS (SELECT :lo UNION ALL SELECT x + 1 FROM n WHERE x < :hi)"


def gen_profiles(engine, db_id, slots, lo, hi):
    dialect = engine.dialect.name
    region = (
        "CASE " + " ".join(f"WHEN x % 7 = {i} THEN '{r}'" for i, r in enumerate(REGIONS)) + " END"
    )
    ext = "'P' || lpad(x::text, 8, '0')" if dialect == "postgresql" else "'P' || printf('%08d', x)"
    columns = {c["name"] for c in sa.inspect(engine).get_columns("profile")}
    key_column, key_value = (
        ("hash_key, ", f"cc_profile_key({ext}), ") if "hash_key" in columns else ("", "")
    )
    with transaction(engine) as s:
        s.execute(
            sa.text(
                f"""INSERT INTO profile (database_id, external_id, {key_column}in_gcg, created_at,
                        {slots["region"]}, {slots["tier"]})
                    WITH RECURSIVE {series(dialect)}
                    SELECT :db, {ext}, {key_value}false, :now, {region}, 1 + (x / 7) % 3 FROM n"""
            ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
            {"db": db_id, "lo": lo, "hi": hi, "now": utcnow()},
        )


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_statements(engine) -> tuple[dict[str, list[float]], Callable[[], None]]:
    """Seconds and count per statement text (whitespace folded), from cursor hooks, and a
    function that stops the timing."""
    spent: dict[str, list[float]] = {}

    def before(_conn, _cursor, _statement, _parameters, context, _many):
        context._bench_started = time.perf_counter()

    def after(_conn, _cursor, statement, _parameters, context, _many):
        total = spent.setdefault(" ".join(statement.split()), [0.0, 0])
        total[0] += time.perf_counter() - context._bench_started
        total[1] += 1

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)

    def stop() -> None:
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)

    return spent, stop


def print_statements(spent: dict[str, list[float]], top: int = 12) -> None:
    whole = sum(seconds for seconds, _n in spent.values())
    print(f"statements of the full build: {whole:.2f} s in all", file=sys.stderr)
    for text, (seconds, n) in sorted(spent.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{seconds:7.2f} s {n:5d}x  {text[:150]}", file=sys.stderr)


def child(
    url: str, what: str, chunk: int, first_newcomer: int, newcomers: int, statements: bool = False
) -> None:
    """Run the pending builds of the workspace (after activating "bench" for a full build)
    and time them; then let `newcomers` profiles from `first_newcomer` on join (twice after
    a full build: the first incremental build pays the process's one-off statement
    compilation, the second is warm) and time each incremental build. Prints the seconds and this process's peak RSS as
    JSON. A full run's incremental builds share its process, so a machine that runs this
    process slower or faster (a shared VM) moves both figures of the ratio alike."""
    engine = open_store(url)
    if what == "full":
        with transaction(engine) as s:
            campaigns.activate(s, ACTOR, campaigns.get_campaign(s, "bench"))
    timing = time_statements(engine) if statements else None
    t, cpu = time.perf_counter(), time.process_time()
    ran = builds.run_pending(engine, worker="bench", chunk_size=chunk)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    if timing is not None:
        timing[1]()
        print_statements(timing[0])

    def counts() -> tuple[int, int]:
        with transaction(engine) as s:
            c = campaigns.get_campaign(s, "bench")
            return c.members, c.control_count

    members, control = counts()  # what the timed build made
    joined: list[float] = []
    batches = 2 if what == "full" else 1
    for lo in range(first_newcomer, first_newcomer + batches * newcomers, newcomers or 1):
        with transaction(engine) as s:
            segment = segments.get_segment(s, "bench-seg")
            where = sa.text(f"id >= {lo} AND id < {lo + newcomers}")
            segments.add_profiles_where(s, ACTOR, segment, where)
        t = time.perf_counter()
        ran += builds.run_pending(engine, worker="bench", chunk_size=chunk)
        joined.append(time.perf_counter() - t)
    final_members, _control = counts()
    engine.dispose()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "joined": joined,
                "rss_mb": rss_mb(),
                "builds": ran,
                "members": members,
                "control": control,
                "final_members": final_members,
            }
        )
    )


def run_child(
    url: str, what: str, chunk: int, first_newcomer: int, newcomers: int, statements: bool = False
) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            what,
            "--db",
            url,
            "--chunk",
            str(chunk),
            "--first-newcomer",
            str(first_newcomer),
            "--newcomers",
            str(newcomers),
            *(["--statements"] if statements else []),
        ],  # fmt: skip
        check=True,
        capture_output=True,
        text=True,
    )
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scratch_table(engine, name: str, columns: str) -> None:
    """A fresh table `name` with these columns and only a primary key (campaign, profile)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(
            sa.text(f"CREATE TABLE {name} ({columns}, PRIMARY KEY (campaign_id, profile_id))")
        )


def floor_copy(engine, n: int, cid: int) -> tuple[float, float]:
    """Issue 14's baseline: N rows (campaign_id, profile_id, group) into a table whose only
    index is its primary key, the group computed in SQL from an integer on the source row."""
    scratch_table(
        engine,
        "floor_member",
        'campaign_id INTEGER NOT NULL, profile_id BIGINT NOT NULL, "group" VARCHAR NOT NULL',
    )
    t, cpu = time.perf_counter(), time.process_time()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """INSERT INTO floor_member (campaign_id, profile_id, "group")
                   SELECT :cid, p.id,
                          CASE WHEN (p.id * 2654435761) % 100 < 5 THEN 'control' ELSE 'test' END
                   FROM profile p WHERE p.id <= :n"""
            ),
            {"cid": cid, "n": n},
        )
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE floor_member"))
    return seconds, cpu


def same_rows_copy(engine, cid: int, n: int) -> float:
    """Issue 3's reference: the first n members' rows again, into a member-shaped table."""
    raw = CampaignMember.__table__.to_metadata(SQLModel.metadata, name="raw_member")
    for index in list(raw.indexes):
        index.name = index.name.replace("campaign_member", "raw_member")
    raw.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS raw_source"))
        conn.execute(
            sa.text(
                "CREATE TABLE raw_source AS SELECT profile_id, stratum_key, assignment_hash "
                "FROM campaign_member WHERE campaign_id = :cid ORDER BY id LIMIT :n"
            ),
            {"cid": cid, "n": n},
        )
    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """INSERT INTO raw_member (campaign_id, profile_id, "group", joined_group,
                       source, stratum_key, assignment_hash, cohort, joined_at, joined_by)
                   SELECT :cid, s.profile_id, 'test', 'test', 'activation',
                          s.stratum_key, s.assignment_hash, 1, :now, 'bench'
                   FROM raw_source s"""
            ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
            {"now": utcnow(), "cid": cid},
        )
    seconds = time.perf_counter() - t
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE raw_member"))
        conn.execute(sa.text("DROP TABLE raw_source"))
    return seconds


def slim_bound(engine, n: int, cid: int, slots: dict, seed: int) -> tuple[float, float]:
    """What an exact R9 build costs when the member row is as slim as the floor's: the
    activation's rows into `slim_member` (campaign, profile, group, stratum id, hash;
    primary key only), all in test with their hash, then counted per stratum, ranked below
    a generous cut (quota = 5 % of each stratum, as the build's plan) and the picks
    updated to control. No history columns, read indexes, foreign keys, counters or
    checkpoints: not a design the product can use as it is, a bound for one that splits
    the member row (BENCHMARKS.md, "Issue 14 targets 1-3"). Rolled back; returns (wall, CPU)."""
    from store import hashing

    h = hashing.assignment_sql(hashing.KEYED_VERSION, seed)
    region = " ".join(f"WHEN '{r}' THEN {i}" for i, r in enumerate(REGIONS))
    stratum = f"(CASE p.{slots['region']} {region} END) * 8 + p.{slots['tier']}"
    fence = "OFFSET 0" if engine.dialect.name == "postgresql" else "LIMIT -1 OFFSET 0"
    scratch_table(
        engine,
        "slim_member",
        'campaign_id INTEGER NOT NULL, profile_id BIGINT NOT NULL, "group" INTEGER NOT NULL, '
        "stratum INTEGER NOT NULL, h BIGINT NOT NULL",
    )
    params = {"cid": cid, "n": n}
    t, cpu = time.perf_counter(), time.process_time()
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(
            sa.text(
                f"""INSERT INTO slim_member SELECT :cid, pid, 0, s, h FROM (
                        SELECT p.id AS pid, {stratum} AS s, {h} AS h
                        FROM segment_member sm JOIN profile p ON p.id = sm.profile_id
                        WHERE sm.segment_id = (SELECT segment_id FROM campaign WHERE id = :cid)
                          AND sm.left_at IS NULL AND NOT p.in_gcg AND p.id <= :n {fence}) c"""
            ),
            params,
        )
        sizes = dict(
            conn.execute(
                sa.text(
                    "SELECT stratum, COUNT(*) FROM slim_member WHERE campaign_id = :cid "
                    "GROUP BY stratum"
                ),
                params,
            ).all()
        )
        picks = {k: (v * 5 + 50) // 100 for k, v in sizes.items()}
        wanted = " ".join(f"WHEN {k} THEN {v}" for k, v in picks.items())
        cut = -(2**63) + int(0.0645 * 2**64)
        cutoffs = conn.execute(
            sa.text(
                f"""SELECT stratum, h FROM (
                        SELECT stratum, h, ROW_NUMBER() OVER (PARTITION BY stratum ORDER BY h) rn
                        FROM slim_member WHERE campaign_id = :cid AND h < {cut}) r
                    WHERE rn = CASE stratum {wanted} END"""
            ),
            params,
        ).all()
        at_or_below = " ".join(f"WHEN {k} THEN h <= {c}" for k, c in cutoffs)
        conn.execute(
            sa.text(
                f"""UPDATE slim_member SET "group" = 1 WHERE campaign_id = :cid
                    AND h <= {max(c for _k, c in cutoffs)} AND CASE stratum {at_or_below} END"""
            ),
            params,
        )
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        control = conn.execute(
            sa.text('SELECT COUNT(*) FROM slim_member WHERE "group" = 1')
        ).scalar()
        assert control == sum(picks.values()), (control, picks)
        tx.rollback()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE slim_member"))
    return seconds, cpu


def reset(url: str) -> None:
    """Drop what an earlier run left at `url` (whatever its schema revision), then create
    a workspace at head."""
    engine = sa.create_engine(url)
    scratch = ["raw_member", "raw_source", "floor_member", "slim_member"]
    tables = [*scratch, *SQLModel.metadata.tables, "alembic_version"]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # FK cycle audience_build <-> mailing
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE"))
        else:  # the same cycle: SQLite drops them with its foreign keys off (the default)
            for table in tables:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()
    create_workspace(url).dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--newcomers", type=int, default=10_000)
    parser.add_argument("--db", default=None)
    parser.add_argument("--chunk", type=int, default=builds.CHUNK_SIZE)
    parser.add_argument("--no-copy", action="store_true", help="skip the same-rows copy")
    parser.add_argument(
        "--bound", action="store_true", help="also time an exact build into a slim member row"
    )
    parser.add_argument(
        "--statements", action="store_true", help="time the full build's SQL statements"
    )
    parser.add_argument("--child", choices=["full", "incremental"], help=argparse.SUPPRESS)
    parser.add_argument("--first-newcomer", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.db, args.child, args.chunk, args.first_newcomer, args.newcomers, args.statements)
        return
    n, k = args.profiles, args.newcomers
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'engine.db'}"
        reset(url)
        engine = create_workspace(url)
        dialect = engine.dialect.name

        t = time.perf_counter()
        with transaction(engine) as s:
            db = profiles.create_database(s, ACTOR, "bench", [("region", "text"), ("tier", "int")])
            slots = {f.name: f.slot for f in profiles.database_fields(s, db.id)}
            db_id = db.id
        gen_profiles(engine, db_id, slots, 1, n + 4 * k)
        with transaction(engine) as s:
            seg = segments.create_segment(s, ACTOR, "bench-seg")
            segments.add_profiles_where(s, ACTOR, seg, sa.text(f"id <= {n}"))
            c = campaigns.create_campaign(
                s,
                ACTOR,
                "bench",
                profiles.get_database(s, "bench"),
                seg,
                lcg_percent="5",
                lcg_strata=["region", "tier"],
                seed=SEED,
            )
            cid = c.id
        if dialect == "postgresql":
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        print(f"setup: {n + 4 * k:,} profiles, segment of {n:,} in {time.perf_counter() - t:.1f} s")

        floor_before, floor_cpu_before = floor_copy(engine, n, cid)
        print(f"floor copy (before):  {floor_before:7.2f} s  {n / floor_before:>11,.0f} rows/s")
        full = run_child(
            url, "full", args.chunk, first_newcomer=n + 1, newcomers=k, statements=args.statements
        )
        assert full["members"] == n and full["final_members"] == n + 2 * k, full
        print(
            f"full build:           {full['seconds']:7.2f} s  {n / full['seconds']:>11,.0f} rows/s"
            f"  ({n:,} members, {full['control']:,} control, peak RSS {full['rss_mb']:.0f} MB)"
        )
        floor_after, floor_cpu_after = floor_copy(engine, n, cid)
        print(f"floor copy (after):   {floor_after:7.2f} s  {n / floor_after:>11,.0f} rows/s")
        floor = (floor_before + floor_after) / 2
        floor_cpu = (floor_cpu_before + floor_cpu_after) / 2
        copy = None
        if not args.no_copy:
            copy = same_rows_copy(engine, cid, n)
            print(f"same-rows copy:       {copy:7.2f} s  {n / copy:>11,.0f} rows/s")
        bound = None
        if args.bound:
            bound, bound_cpu = slim_bound(engine, n, cid, slots, SEED)
            print(f"slim-row build:       {bound:7.2f} s  {n / bound:>11,.0f} rows/s")

        with transaction(engine) as s:
            segments.add_profiles_where(
                s,
                ACTOR,
                segments.get_segment(s, "bench-seg"),
                sa.text(f"id > {n + 2 * k} AND id <= {n + 3 * k}"),
            )
        inc = run_child(url, "incremental", args.chunk, first_newcomer=n + 3 * k + 1, newcomers=k)
        assert inc["final_members"] == n + 4 * k, inc
        same_first, same_warm = full["joined"]
        own_first, (own_warm,) = inc["seconds"], inc["joined"]
        print(
            f"incremental build:    {same_warm:7.2f} s  {k / same_warm:>11,.0f} rows/s"
            f"  ({k:,} newcomers, warm, in the full build's process; its first {same_first:.2f} s)"
        )
        print(
            f"  in its own process: {own_warm:7.2f} s  {k / own_warm:>11,.0f} rows/s"
            f"  (warm; its first {own_first:.2f} s; peak RSS {inc['rss_mb']:.0f} MB)"
        )

        print()
        print(f"backend {dialect}, {n:,} profiles, chunk {args.chunk:,}")
        print(f"full / floor           {full['seconds'] / floor:5.2f}x   (target <= 4x, aim 2x)")
        if dialect == "sqlite":  # in-process work: CPU time is steadier on a shared machine
            print(
                f"  the same in CPU time {full['cpu'] / floor_cpu:5.2f}x   ({full['cpu']:.2f} s / {floor_cpu:.2f} s)"
            )
        if copy:
            print(f"full / same-rows copy  {full['seconds'] / copy:5.2f}x   (issue 3's reference)")
            print(f"same-rows copy / floor {copy / floor:5.2f}x   (writing the member rows alone)")
        if bound:
            print(
                f"slim-row build / floor {bound / floor:5.2f}x   (an exact build, slim member row)"
            )
            if dialect == "sqlite":
                print(f"  the same in CPU time {bound_cpu / floor_cpu:5.2f}x")
        print(
            f"incremental / full     {100 * same_warm / full['seconds']:5.2f} %  "
            "(target <= 2 %, net of start-up: warm, the same process)"
        )
        print(
            f"  in separate processes {100 * own_warm / full['seconds']:4.2f} %  "
            f"(the process's first build: {100 * own_first / full['seconds']:.2f} %)"
        )
        print(f"peak RSS, full build   {full['rss_mb']:5.0f} MB  (target <= 150 MB, flat to 10M)")
        print(f"peak RSS, incremental  {inc['rss_mb']:5.0f} MB")
        engine.dispose()


if __name__ == "__main__":
    main()
