"""Loads, end to end through the CLI (issue 14 target 4: >= 150,000 rows/s on a
1,000,000-row file, process start-up included). A script, not a test.

    .venv/bin/python benchmarks/bench_import.py [--rows 1000000] [--db URL ...] [--twice]
                                                [--segment-files] [--quoted] [--stdin]
                                                [--baseline-source DIR] [--rounds N]

Writes a profile CSV (external_id, region:text, tier:int, age:int, int_field:int,
signup:date, ltv:float; 46 MB for 1M rows) and a segment file of the same external ids,
then, for each database (a fresh SQLite file by default; each `--db` PostgreSQL URL gets a
fresh schema, dropped after), times whole processes of the real command line:

* `campaign-console import profiles --database bench FILE` into an empty database;
* `campaign-console segment add SEGMENT IDS --database bench` (every profile);
* with `--twice`: an import changing every row (all updates), then the same file again
  (all unchanged);
* with `--segment-files`: `segment replace` with every other profile (half leave), then
  `segment remove` of every fourth (the rate counts the file's rows);
* with `--quoted`: segment files with every value quoted (`"P00000001"`), as exporters
  that quote everything write them;
* with `--stdin`: segment files piped into the command (`segment add SEGMENT -`), as a
  script that exports ids from elsewhere runs it.

The rate is rows / wall seconds of the process (Python start-up, imports, the import,
the commit and the exit); the process's own CPU time (user + system) and the 1-minute
load average after the step are printed beside it (on PostgreSQL the server's work is
not in that CPU time). `--baseline-source DIR` runs the same steps with the command
line of another checkout (`git worktree add DIR COMMIT`, or `git archive`), run with this
virtualenv's Python and `PYTHONPATH=DIR`, in its own fresh workspace, alternating with
this checkout step by step: before and after at one moment, on one machine (with
`--rounds N`, N times on fresh workspaces, the first checkout alternating, then the
median and minimum of each step). The load
average is printed because the machine may be shared; compare ratios within a run.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
CONSOLE = ROOT / ".venv" / "bin" / "campaign-console"
FIELDS = "region:text,tier:int,age:int,int_field:int,signup:date,ltv:float"
REGIONS = ["Moscow", "Saint Petersburg", "Kazan", "Novosibirsk", "Sochi"]


def write_csv(path: Path, rows: int, variant: int = 0) -> None:
    """The same external ids for every variant; other variants change every row's tier."""
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["external_id", "region", "tier", "age", "int_field", "signup", "ltv"])
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


def write_ids(path: Path, rows: int, step: int = 1, quoted: bool = False) -> int:
    """A segment file of every `step`-th profile, every value quoted if `quoted` (as
    csv.QUOTE_ALL writes it); returns its rows."""
    q = '"' if quoted else ""
    with path.open("w", encoding="utf-8") as f:
        f.write(f"{q}external_id{q}\n")
        f.writelines(f"{q}P{i:08d}{q}\n" for i in range(0, rows, step))
    return len(range(0, rows, step))


class Cli:
    """One checkout's command line on one fresh workspace."""

    def __init__(self, label: str, url: str, source: Path | None) -> None:
        self.label = label
        self.url = url
        self.env = {**os.environ, "CAMPAIGN_CONSOLE_CONFIG": os.devnull}
        self.env.pop("CAMPAIGN_CONSOLE_DB", None)
        if source is None:
            self.command = [str(CONSOLE)]
            self.env.pop("PYTHONPATH", None)
        else:
            self.command = [str(PYTHON), "-m", "console"]
            self.env["PYTHONPATH"] = str(source)
        # `python -m` puts the working directory first on sys.path, before PYTHONPATH: run
        # in the other checkout, or `-m console` imports this one's code from the current
        # directory (the repository root) and the "baseline" measures this checkout.
        self.cwd = source
        if source is not None:
            where = subprocess.run(
                [str(PYTHON), "-c", "import store; print(store.__file__)"],
                env=self.env,
                cwd=source,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert where.startswith(str(source)), f"the baseline imports {where}"

    def run(self, *argv: str, stdin: Path | None = None) -> tuple[float, float]:
        """(wall, CPU) seconds of one whole process (CPU: its user + system time, which
        other processes on the machine disturb less); it must succeed. `stdin`: a file
        piped into it (a pipe, as a shell pipeline gives, not the file itself)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        with tempfile.TemporaryFile() as err:  # not a pipe, which could fill and block
            process = subprocess.Popen(
                [*self.command, "--db", self.url, *argv],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            if stdin is not None:
                with stdin.open("rb") as source, process.stdin:
                    shutil.copyfileobj(source, process.stdin, 1 << 16)
            process.wait()
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0:
            raise RuntimeError(f"{self.label}: {' '.join(argv)} failed:\n{stderr}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return elapsed, cpu


def fresh_workspace(given: str | None, tmp: Path, tag: str) -> tuple[str, Callable[[], None]]:
    """A fresh SQLite file, or a fresh schema of the given PostgreSQL database."""
    if given is None:
        path = tmp / f"{tag}.db"

        def remove() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return f"sqlite:///{path}", remove
    schema = f"cc_bench_{tag}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(given, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(given).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db",
        action="append",
        default=None,
        help="a PostgreSQL URL (repeatable); 'sqlite' for a fresh SQLite file (the default)",
    )
    parser.add_argument("--twice", action="store_true", help="then all-updates and unchanged")
    parser.add_argument(
        "--segment-files", action="store_true", help="then segment replace and remove"
    )
    parser.add_argument(
        "--quoted", action="store_true", help="segment files with every value quoted"
    )
    parser.add_argument(
        "--stdin", action="store_true", help="segment files piped on standard input ('-')"
    )
    parser.add_argument("--baseline-source", type=Path, default=None)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat on fresh workspaces; print medians"
    )
    args = parser.parse_args()
    databases = [None if db == "sqlite" else db for db in (args.db or ["sqlite"])]

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        files = {"insert": tmp / "profiles.csv", "update": tmp / "changed.csv"}
        write_csv(files["insert"], args.rows)
        if args.twice:
            write_csv(files["update"], args.rows, variant=1)
        files["same"] = files["update"]
        segment_files: dict[str, tuple[Path, int]] = {}  # step: (file, its rows)
        for action, every in (("add", 1), ("replace", 2), ("remove", 4)):
            path = tmp / f"{action}.csv"
            rows = write_ids(path, args.rows, every, args.quoted)
            segment_files[f"segment {action}"] = (path, rows)
        steps = ["insert", "segment add"] + (["update", "same"] if args.twice else [])
        steps += ["segment replace", "segment remove"] if args.segment_files else []

        print(f"{args.rows:,} rows; load average {os.getloadavg()[0]:.1f} at the start\n")
        print("| backend | step | checkout | seconds | rows/s | client CPU s | load |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        for given, round_ in [(g, r) for g in databases for r in range(args.rounds)]:
            sources = [("this", None)]
            if args.baseline_source is not None:
                sources.insert(0, ("baseline", args.baseline_source.resolve()))
                if round_ % 2:  # alternate which checkout goes first
                    sources.reverse()
            clis, cleanups = [], []
            for label, source in sources:
                url, cleanup = fresh_workspace(given, tmp, f"{label}{round_}")
                cleanups.append(cleanup)
                cli = Cli(label, url, source)
                cli.run("init")  # only init and demo create a workspace
                cli.run("database", "create", "bench", "--fields", FIELDS)
                cli.run("segment", "create", "everyone")
                clis.append(cli)
            backend = "PostgreSQL" if given else "SQLite"
            try:
                for step in steps:
                    for cli in clis:  # baseline, then this checkout, for each step
                        rows = args.rows
                        if step in segment_files:
                            path, rows = segment_files[step]
                            named = "-" if args.stdin else str(path)
                            argv = [*step.split(), "everyone", named, "--database", "bench"]
                        else:
                            argv = ["import", "profiles", "--database", "bench", str(files[step])]
                        piped = path if args.stdin and step in segment_files else None
                        seconds, cpu = cli.run(*argv, stdin=piped)
                        results.setdefault((backend, step, cli.label), []).append((seconds, cpu))
                        print(
                            f"| {backend} | {step} | {cli.label} | {seconds:.2f} | "
                            f"{rows / seconds:,.0f} | {cpu:.2f} | {os.getloadavg()[0]:.1f} |",
                            flush=True,
                        )
            finally:
                for cleanup in cleanups:
                    cleanup()
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end (2 cores, shared)")
        if args.rounds > 1:
            print(f"\nmedian (min) of {args.rounds} rounds\n")
            print("| backend | step | checkout | seconds | rows/s | client CPU s |")
            print("| --- | --- | --- | --- | --- | --- |")
            for (backend, step, label), runs in results.items():
                walls, cpus = sorted(w for w, _c in runs), sorted(c for _w, c in runs)
                wall, cpu = statistics.median(walls), statistics.median(cpus)
                rows = segment_files[step][1] if step in segment_files else args.rows
                print(
                    f"| {backend} | {step} | {label} | {wall:.2f} ({walls[0]:.2f}) | "
                    f"{rows / wall:,.0f} ({rows / walls[0]:,.0f}) | "
                    f"{cpu:.2f} ({cpus[0]:.2f}) |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
