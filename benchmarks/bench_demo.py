"""Demo generation time (issue 2: seconds, not minutes). A script, not a test.

    .venv/bin/python benchmarks/bench_demo.py [--profiles 200000 1000000] [--db URL]

Prints seconds and profiles per second for each size on a fresh SQLite file (or the
given database, which is reset first).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from store import demo
from store.actors import Actor, system_actor
from store.db import create_workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    actor = Actor("bench")
    for n in args.profiles:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.db or f"sqlite:///{Path(tmp) / 'demo.db'}"
            engine = create_workspace(url)
            demo.reset(engine, system_actor("benchmark"))
            started = time.perf_counter()
            demo.build_demo(engine, actor, n)
            elapsed = time.perf_counter() - started
            print(
                f"{engine.dialect.name:10} {n:>9,} profiles  {elapsed:6.1f} s  "
                f"{n / elapsed:>9,.0f} profiles/s (incl. segments, 4 activations)"
            )
            engine.dispose()


if __name__ == "__main__":
    main()
