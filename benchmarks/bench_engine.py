"""Audience engine benchmark (issue 3 item 8). A script, not a test.

    .venv/bin/python benchmarks/bench_engine.py [--profiles 1000000] [--newcomers 10000]
                                                [--db URL] [--chunk 50000]

On a fresh SQLite file (default) or the given database (its tables are dropped and
recreated: point it at a scratch database or schema, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres?options=-csearch_path%3Dbench_engine):

1. generates N profiles (region: 7 values, tier: 3 values) and a static segment of them;
2. full build: activation of a campaign with a 5 % LCG stratified by region and tier,
   run through store.builds.run_pending (the real, chunked, resumable build);
3. raw copies into `raw_member`, a table with campaign_member's columns, indexes and
   foreign keys, each one INSERT … SELECT of the same number of rows, computing nothing:
   (a) "same rows": the members' stratum keys and hashes precomputed into `raw_source`
   before timing, so the copy writes the same (random) index keys as the build; this is
   the ratio the target applies to; (b) "constants": '' and 0 for key and hash, so the
   indexes fill sequentially, printed for reference (no table keyed by random hashes
   gets near it; see BENCHMARKS.md);
4. incremental build: 10,000 new profiles join the segment; the incremental build (R2c).

Prints rows/s, full/raw ratio (target ≤ 4), incremental/full ratio (target ≤ 5 %) and
peak RSS (target ≤ 300 MB). Figures and how to reproduce: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store import builds, campaigns, profiles, segments  # noqa: E402
from store.actors import Actor  # noqa: E402
from store.db import create_workspace, transaction  # noqa: E402
from store.models import CampaignMember, SQLModel, UTCDateTime, utcnow  # noqa: E402

REGIONS = ["Moscow", "Saint Petersburg", "Kazan", "Novosibirsk", "Yekaterinburg", "Samara", "Sochi"]


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
    with transaction(engine) as s:
        s.execute(
            sa.text(
                f"""INSERT INTO profile (database_id, external_id, in_gcg, created_at,
                        {slots["region"]}, {slots["tier"]})
                    WITH RECURSIVE {series(dialect)}
                    SELECT :db, {ext}, false, :now, {region}, 1 + (x / 7) % 3 FROM n"""
            ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
            {"db": db_id, "lo": lo, "hi": hi, "now": utcnow()},
        )


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--newcomers", type=int, default=10_000)
    parser.add_argument("--db", default=None)
    parser.add_argument("--chunk", type=int, default=builds.CHUNK_SIZE)
    args = parser.parse_args()
    actor = Actor("bench")
    n, k = args.profiles, args.newcomers
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'engine.db'}"
        engine = create_workspace(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS raw_member"))
            conn.execute(sa.text("DROP TABLE IF EXISTS raw_source"))
        if engine.dialect.name == "postgresql":  # FK cycle audience_build <-> mailing
            with engine.begin() as conn:
                for table in SQLModel.metadata.tables:
                    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the same cycle: SQLite drops unsorted
                SQLModel.metadata.drop_all(engine)
        engine.dispose()
        engine = create_workspace(url)
        dialect = engine.dialect.name

        t = time.perf_counter()
        with transaction(engine) as s:
            db = profiles.create_database(s, actor, "bench", [("region", "text"), ("tier", "int")])
            slots = {f.name: f.slot for f in profiles.database_fields(s, db.id)}
            db_id = db.id
        gen_profiles(engine, db_id, slots, 1, n + k)
        with transaction(engine) as s:
            seg = segments.create_segment(s, actor, "bench-seg")
            seg_id = seg.id
            segments.add_profiles_where(s, actor, seg, sa.text(f"id <= {n}"))
            campaigns.create_campaign(
                s,
                actor,
                "bench",
                profiles.get_database(s, "bench"),
                seg,
                lcg_percent="5",
                lcg_strata=["region", "tier"],
                seed=20260101,
            )
        if dialect == "postgresql":
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        print(f"setup: {n + k:,} profiles, segment of {n:,} in {time.perf_counter() - t:.1f} s")

        # ---- full build
        with transaction(engine) as s:
            campaigns.activate(s, actor, campaigns.get_campaign(s, "bench"))
        t = time.perf_counter()
        ran = builds.run_pending(engine, worker="bench", chunk_size=args.chunk)
        full = time.perf_counter() - t
        with transaction(engine) as s:
            c = campaigns.get_campaign(s, "bench")
            assert c.members == n, (c.members, n)
            s.expunge(c)
            control = c.control_count
        print(
            f"full build:        {full:7.2f} s  {n / full:>11,.0f} rows/s  "
            f"({n:,} members, {control:,} control, builds {ran})"
        )

        # ---- raw copies into a member-shaped table (same columns, indexes and FKs)
        raw = CampaignMember.__table__.to_metadata(SQLModel.metadata, name="raw_member")
        for index in list(raw.indexes):
            index.name = index.name.replace("campaign_member", "raw_member")
        raw.create(engine)
        columns = """INSERT INTO raw_member (campaign_id, profile_id, "group", joined_group,
                         source, stratum_key, assignment_hash, cohort, joined_at, joined_by)"""
        now = sa.bindparam("now", type_=UTCDateTime())
        # (a) the same rows: stratum keys and hashes precomputed into raw_source before
        # timing, so the copy computes nothing but writes the same index keys.
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS raw_source"))
            conn.execute(
                sa.text(
                    "CREATE TABLE raw_source AS SELECT profile_id, stratum_key, assignment_hash "
                    "FROM campaign_member WHERE campaign_id = :cid ORDER BY id"
                ),
                {"cid": c.id},
            )
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"""{columns} SELECT :cid, s.profile_id, 'test', 'test', 'activation',
                               s.stratum_key, s.assignment_hash, 1, :now, 'bench'
                        FROM raw_source s"""
                ).bindparams(now),
                {"now": utcnow(), "cid": c.id},
            )
        copy = time.perf_counter() - t
        print(f"raw copy, same rows: {copy:7.2f} s  {n / copy:>11,.0f} rows/s")
        # (b) constant stratum key and hash: the index inserts are sequential, a floor
        # no member table keyed by random hashes can reach (shown for reference).
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM raw_member"))
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"""{columns} SELECT :cid, p.id, 'test', 'test', 'activation', '', 0, 1,
                               :now, 'bench'
                        FROM segment_member sm JOIN profile p ON p.id = sm.profile_id
                        WHERE sm.segment_id = :seg AND sm.left_at IS NULL"""
                ).bindparams(now),
                {"now": utcnow(), "seg": seg_id, "cid": c.id},
            )
        const_copy = time.perf_counter() - t
        print(f"raw copy, constants: {const_copy:7.2f} s  {n / const_copy:>11,.0f} rows/s")

        # ---- incremental build of k newcomers
        with transaction(engine) as s:
            segments.add_profiles_where(
                s, actor, segments.get_segment(s, "bench-seg"), sa.text(f"id > {n}")
            )
        t = time.perf_counter()
        ran = builds.run_pending(engine, worker="bench", chunk_size=args.chunk)
        inc = time.perf_counter() - t
        with transaction(engine) as s:
            c = campaigns.get_campaign(s, "bench")
            assert c.members == n + k, (c.members, n + k)
        print(f"incremental build: {inc:7.2f} s  {k / inc:>11,.0f} rows/s  ({k:,} newcomers)")

        print()
        print(f"backend {dialect}, chunk {args.chunk:,}")
        print(f"full / raw copy        {full / copy:5.2f}x   (target <= 4x; same rows)")
        print(f"full / constant copy   {full / const_copy:5.2f}x   (reference only)")
        print(f"incremental / full     {100 * inc / full:5.2f} %  (target <= 5 %)")
        print(f"peak RSS               {rss_mb():5.0f} MB  (target <= 300 MB)")
        engine.dispose()


if __name__ == "__main__":
    main()
