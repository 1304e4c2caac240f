"""Event import and drain (issue 13 §4, R11b: `events import` at >= 100,000 events/s).
A script, not a test.

    .venv/bin/python benchmarks/bench_events.py [--events 1000000] [--profiles 100000]
                                                [--db URL ...] [--drain N]

For each database (a fresh SQLite file by default; each `--db` PostgreSQL URL gets a
fresh schema, dropped after): a profile database of `--profiles` profiles, a campaign
(LCG 10 %) with two trigger mailings on `purchase` (one with a segment of its own), then

* `events import`: a CSV of `--events` rows (external_id, event, at; 40 MB for 1M),
  through `store.events.import_events`, the code behind the command (no process
  start-up); the rate is rows / seconds of the whole transaction, commit included;
* the drain: `--drain` of those events processed by `store.events.drain` (the scheduler's
  job), each firing both mailings: events / second.

The load average is printed because the machine may be shared.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_import import fresh_workspace  # noqa: E402

from store import builds, campaigns, events, imports, mailings, profiles, segments  # noqa: E402
from store.actors import Actor  # noqa: E402
from store.db import create_workspace, open_store, transaction  # noqa: E402
from store.models import TriggerEvent  # noqa: E402

ACTOR = Actor(user="bench", role="operator", origin="local")
EVENT_NAMES = ["purchase", "purchase", "browse", "signup"]


def write_events(path: Path, rows: int, profiles_n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("external_id,event,at\n")
        for i in range(rows):
            h = (i * 2654435761) % 4294967296
            f.write(
                f"P{h % profiles_n:08d},{EVENT_NAMES[h % 4]},"
                f"2026-{1 + (h >> 4) % 12:02d}-{1 + (h >> 8) % 28:02d}T{(h >> 12) % 24:02d}:"
                f"{(h >> 16) % 60:02d}:00Z\n"
            )


def setup(url: str, profiles_n: int) -> None:
    engine = create_workspace(url)  # only init, demo (and this set-up) create one
    csv = "external_id,region\n" + "".join(
        f"P{i:08d},{'North' if i % 3 else 'South'}\n" for i in range(profiles_n)
    )
    with transaction(engine) as s:
        db = profiles.create_database(s, ACTOR, "bench", [("region", "text")])
        imports.import_profiles(s, ACTOR, db, io.BytesIO(csv.encode()))
        everyone = segments.create_segment(s, ACTOR, "everyone")
        segments.add_profiles_where(s, ACTOR, everyone, sa.text("id % 2 = 0"))
        vip = segments.create_segment(s, ACTOR, "vip")
        segments.add_profiles_where(s, ACTOR, vip, sa.text("id % 5 = 0"))
        c = campaigns.create_campaign(s, ACTOR, "c", db, everyone, lcg_percent="10")
        mailings.create_mailing(s, ACTOR, "hello", c, "trigger", event="purchase")
        mailings.create_mailing(s, ACTOR, "vip", c, "trigger", event="purchase", segment=vip)
        campaigns.activate(s, ACTOR, c)
    builds.run_pending(engine, worker="bench")
    engine.dispose()


def run(label: str, url: str, path: Path, rows: int, drain_n: int) -> None:
    engine = open_store(url)
    try:
        started = time.perf_counter()
        with transaction(engine) as s:
            db = profiles.get_database(s, "bench")
            events.import_events(s, ACTOR, db, path)
        seconds = time.perf_counter() - started
        print(
            f"{label:<10} import {rows:>10,} events  {seconds:6.2f} s  {rows / seconds:>10,.0f} events/s"
            f"  (load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        if drain_n:
            with engine.begin() as conn:
                first = conn.scalar(sa.select(sa.func.min(TriggerEvent.id)))
            started = time.perf_counter()
            result = events.drain(engine, ACTOR, up_to=first + drain_n - 1)
            seconds = time.perf_counter() - started
            print(
                f"{label:<10} drain  {result.events:>10,} events  {seconds:6.2f} s  "
                f"{result.events / seconds:>10,.0f} events/s  ({result.delivered:,} delivered, "
                f"{result.suppressed:,} suppressed; load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--db", action="append", default=[], help="PostgreSQL URL (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        write_events(path, args.events, args.profiles)
        print(f"{path.stat().st_size / 1e6:.0f} MB, {args.events:,} events", flush=True)
        for given in [None, *args.db]:
            url, drop = fresh_workspace(given, Path(tmp), "events")
            try:
                setup(url, args.profiles)
                run("sqlite" if given is None else "postgresql", url, path, args.events, args.drain)
            finally:
                drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
