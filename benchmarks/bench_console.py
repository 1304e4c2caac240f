"""Console benchmark: launch to first frame, and key-press-to-screen latency with and
without a 1,000,000-profile build running in the console's embedded scheduler.

    .venv/bin/python benchmarks/bench_console.py [--workspace PATH] [--rebuild]
                                                 [--launches 5] [--presses 60]
                                                 [--first-frame-only] [--baseline-source DIR]

The workspace (1,000,000 profiles, 50 campaigns: 49 active on 20,000-profile segments,
one draft on a segment of all 1,000,000 profiles) is built once through the store's
operations and reused; `--rebuild` starts over. Every figure is measured on the real
`campaign-console` script in a private tmux server at 80×24, reading the screen back
with `capture-pane`, so it includes Python start-up, imports and terminal output.

Latency: a navigation key (Down/Up alternately on the campaign list) is sent with
`tmux send-keys` every 0.1 s; the time until the table rows of the captured screen differ
is the latency (the header, whose heartbeat age changes every second, is not compared).
During the build, presses go on until the build has ended, so they cover all its phases.
Resolution is a few milliseconds (one capture-pane call). Figures go to stdout as
Markdown; copy them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "console"))

from workspace import DATABASE, FIELDS, insert_profiles  # noqa: E402

from store import builds, campaigns, profiles, segments  # noqa: E402
from store.actors import Actor  # noqa: E402
from store.db import create_workspace, open_store, transaction  # noqa: E402
from store.lease import live_lease  # noqa: E402
from store.models import AudienceBuild, Campaign  # noqa: E402

CONSOLE = ROOT / ".venv" / "bin" / "campaign-console"
PYTHON = ROOT / ".venv" / "bin" / "python"
BENCH = Actor(user="bench", role="operator", origin="local")
PROFILES = 1_000_000
SLICES = 49
BIG = "zz-everyone-1m"  # sorts last: its live Build cell is off the 80×24 screen
PRESS_TIMEOUT = 5.0  # seconds; a press whose rows did not change by then is reported as lost


def build_bench_workspace(url: str) -> None:
    engine = create_workspace(url)
    started = time.perf_counter()
    with transaction(engine) as session:
        database_id = profiles.create_database(session, BENCH, DATABASE, FIELDS).id
    insert_profiles(engine, database_id, PROFILES)
    print(f"  profiles: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    with transaction(engine) as session:
        everyone = segments.create_segment(session, BENCH, "everyone")
        session.flush()
        segments.add_profiles_where(
            session, BENCH, everyone, sa.text("database_id = :db").bindparams(db=database_id)
        )
        for k in range(SLICES):
            segment = segments.create_segment(session, BENCH, f"slice-{k:02d}")
            session.flush()
            segments.add_profiles_where(
                session,
                BENCH,
                segment,
                sa.text(f"database_id = :db AND id % 50 = {k}").bindparams(db=database_id),
            )
    print(f"  segments: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    with transaction(engine) as session:
        database = profiles.get_database(session, DATABASE)
        for k in range(SLICES):
            campaigns.create_campaign(
                session,
                BENCH,
                f"campaign-{k:02d}",
                database,
                segments.get_segment(session, f"slice-{k:02d}"),
                lcg_percent="10",
                lcg_strata=["region"] if k % 2 else [],
                seed=10_000 + k,
            )
        campaigns.create_campaign(
            session,
            BENCH,
            BIG,
            database,
            segments.get_segment(session, "everyone"),
            lcg_percent="5",
            lcg_strata=["region", "tier"],
            seed=99,
        )
    for k in range(SLICES):
        with transaction(engine) as session:
            campaigns.activate(session, BENCH, campaigns.get_campaign(session, f"campaign-{k:02d}"))
    builds.run_pending(engine, worker="bench-setup")
    print(f"  campaigns and builds: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    engine.dispose()


STARTED: list[Console] = []


class Console:
    """The real console in a private tmux server at 80×24."""

    def __init__(self, url: str, tag: str, source: Path | None = None) -> None:
        self.socket = f"cc-bench-{os.getpid()}-{tag}"
        self.url = url
        self.source = source  # another checkout's code (run with this checkout's venv)
        self.pressed = 0  # keys sent so far: the cursor is on row pressed-pattern position

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def start(self) -> float:
        STARTED.append(self)
        env = f"CAMPAIGN_CONSOLE_CONFIG={os.devnull} CAMPAIGN_CONSOLE_DB={self.url}"
        command = str(CONSOLE)
        if self.source is not None:  # from outside any checkout, so that PYTHONPATH wins
            env += f" PYTHONPATH={self.source}"
            command = f"sh -c 'cd / && exec {PYTHON} -m console'"
        started = time.perf_counter()
        self.tmux(
            "new-session", "-d", "-s", "cc", "-x", "80", "-y", "24", f"exec env {env} {command}"
        )
        return started

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "cc")

    def wait_for(self, text: str, timeout: float = 60.0) -> float:
        deadline = time.perf_counter() + timeout
        while text not in self.screen():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{text!r} did not appear:\n{self.screen()}")
            time.sleep(0.005)
        return time.perf_counter()

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)

    def stop(self) -> None:
        pid = int(self.tmux("list-panes", "-t", "cc", "-F", "#{pane_pid}").strip())
        self.tmux("send-keys", "-t", "cc", "q")
        deadline = time.perf_counter() + 15
        while Path(f"/proc/{pid}").exists() and time.perf_counter() < deadline:
            time.sleep(0.05)
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)

    def rows(self) -> str:
        # lines 3..15 of the screen: table rows only (not the header's heartbeat age)
        return "\n".join(self.screen(escapes=True).splitlines()[2:15])

    def press_latencies(
        self, presses: int, keep_going: Callable[[], bool] = lambda: False, gap: float = 0.1
    ) -> tuple[list[float], list[str]]:
        """At least `presses` presses, `gap` apart (an operator's pace), and more while
        `keep_going()` (the build still runs), up to 1000. Returns the latencies in ms and
        a description of every press after which the rows did not change within
        PRESS_TIMEOUT seconds (reported, not fatal, so one stuck press cannot hide the
        figures of all the others)."""
        latencies: list[float] = []
        lost: list[str] = []
        sent = 0
        while sent < presses or (keep_going() and sent < 1000):
            time.sleep(gap)
            # One pattern over the whole run (8 down, 8 up): the cursor stays in rows 0-8,
            # which rows() always shows. (Restarting it in each phase, as before, moved the
            # cursor to rows 4-12 during the build, and any lost press could push it out
            # of the compared lines, where a move changes nothing that is compared.)
            key = "Down" if (self.pressed // 8) % 2 == 0 else "Up"
            self.pressed += 1
            sent += 1
            before = self.rows()
            started = time.perf_counter()
            self.tmux("send-keys", "-t", "cc", key)
            while self.rows() == before:
                if time.perf_counter() - started > PRESS_TIMEOUT:
                    lost.append(f"press {sent} ({key}) at {started:.1f}:\n{self.screen()}")
                    break
            else:
                latencies.append((time.perf_counter() - started) * 1000)
        return latencies, lost


def wait_no_lease(url: str, timeout: float = 40.0) -> None:
    engine = open_store(url)
    deadline = time.perf_counter() + timeout
    with Session(engine) as session:
        while live_lease(session) is not None and time.perf_counter() < deadline:
            time.sleep(0.2)
            session.expire_all()
    engine.dispose()


def template_is_current(template: Path) -> bool:
    """A workspace left in /tmp by another checkout may hold other campaigns (or another
    schema): only reuse one with the 49 built campaigns and the 1M draft."""
    try:
        engine = open_store(f"sqlite:///{template}")
        with Session(engine) as session:
            statuses = dict(session.execute(sa.select(Campaign.name, Campaign.status)).all())
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: build it again
        print(f"cannot reuse {template}: {exc}", file=sys.stderr)
        return False
    expected = {f"campaign-{k:02d}": "active" for k in range(SLICES)} | {BIG: "draft"}
    return statuses == expected


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    try:
        return measure()
    finally:  # never leave a console running after a failed measurement
        for console in STARTED:
            console.kill()


def first_frame_rows(first: list[float], baseline: list[float], floors: list[float]) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"

    rows = [
        f"| launch → first frame with campaigns (median of {len(first)}) | {spread(first)} "
        "| ≤ 1.0 s |"
    ]
    if baseline:
        rows.append(
            f"| the same, --baseline-source checkout, alternating (median of {len(baseline)}) "
            f"| {spread(baseline)} | – |"
        )
    rows.append(
        f"| floor: `python -c 'import sqlmodel, textual.app'` (median of {len(floors)}) | "
        f"{statistics.median(floors):.2f} s | – |"
    )
    return "\n".join(rows)


def measure() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="/tmp/cc-bench-console/workspace.db")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument(
        "--first-frame-only", action="store_true", help="measure the launches, not the keys"
    )
    parser.add_argument(
        "--baseline-source",
        type=Path,
        default=None,
        help="another checkout (e.g. `git archive COMMIT | tar -x -C DIR`): its launches "
        "alternate with this checkout's, on the same workspace",
    )
    args = parser.parse_args()

    template = Path(args.workspace)
    if not args.rebuild and template.exists() and not template_is_current(template):
        print(f"{template} is not this benchmark's workspace: rebuilding", file=sys.stderr)
        args.rebuild = True
    if args.rebuild or not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{template}{suffix}").unlink(missing_ok=True)
        print(f"building the workspace in {template} …", file=sys.stderr)
        build_bench_workspace(f"sqlite:///{template}")
        import sqlite3

        with sqlite3.connect(template) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    work = template.with_name("run.db")
    for suffix in ("-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, work)  # the big campaign is a draft again on every run
    url = f"sqlite:///{work}"

    # 1. launch to first frame showing campaigns (alternating with the baseline's, if any)
    first_frames: list[float] = []
    baseline_frames: list[float] = []
    sources = [(None, first_frames)]
    if args.baseline_source is not None:
        source = args.baseline_source.resolve()
        # The console runs from / with PYTHONPATH: check that it imports the other code.
        probe = subprocess.run(
            [str(PYTHON), "-c", "import store; print(store.__file__)"],
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(source)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert probe.startswith(str(source)), f"the baseline imports {probe}"
        sources.append((source, baseline_frames))
    for i in range(args.launches):
        for source, frames in sources if i % 2 == 0 else sources[::-1]:
            wait_no_lease(url)
            console = Console(url, f"launch{i}{'b' if source else ''}", source)
            started = console.start()
            shown = console.wait_for("campaign-00")
            frames.append(shown - started)
            console.stop()

    # the floor on this machine right now: starting Python and importing the two libraries
    floors = []
    for _ in range(args.launches):
        started = time.perf_counter()
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-c", "import sqlmodel, textual.app"],
            check=True,
        )
        floors.append(time.perf_counter() - started)

    if args.first_frame_only:
        print("| figure | value | target |")
        print("| --- | --- | --- |")
        print(first_frame_rows(first_frames, baseline_frames, floors))
        return 0

    # 2. key-press latency, idle and during the 1M-profile build in the embedded scheduler
    wait_no_lease(url)
    console = Console(url, "latency")
    console.start()
    console.wait_for("campaign-00")
    console.wait_for("embedded, heard", timeout=30)
    idle, idle_lost = console.press_latencies(args.presses)

    engine = open_store(url)
    with transaction(engine) as session:
        campaigns.activate(session, BENCH, campaigns.get_campaign(session, BIG))
    with Session(engine) as session:
        big_id = session.scalar(sa.select(Campaign.id).where(Campaign.name == BIG))

    def build_state() -> tuple[str, int, int]:
        with Session(engine) as session:
            build = session.scalar(
                sa.select(AudienceBuild)
                .where(AudienceBuild.campaign_id == big_id)
                .order_by(AudienceBuild.id.desc())
            )
            return build.status, build.processed, build.total

    deadline = time.perf_counter() + 30
    while build_state()[0] != "running":
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the 1M build did not start: {build_state()}")
        time.sleep(0.05)
    at_start = build_state()
    busy_started = time.perf_counter()
    busy, busy_lost = console.press_latencies(
        args.presses, keep_going=lambda: build_state()[0] == "running"
    )
    busy_seconds = time.perf_counter() - busy_started
    at_end = build_state()
    build_deadline = time.perf_counter() + 600
    while build_state()[0] in ("queued", "running") and time.perf_counter() < build_deadline:
        time.sleep(0.2)
    build_seconds = time.perf_counter() - busy_started
    console.stop()
    engine.dispose()

    print("| figure | value | target |")
    print("| --- | --- | --- |")
    print(first_frame_rows(first_frames, baseline_frames, floors))
    for label, values, lost in (
        ("no build", idle, idle_lost),
        ("1M-profile build running", busy, busy_lost),
    ):
        figures = (
            f"median {statistics.median(values):.0f} ms, p95 {pct(values, 0.95):.0f} ms, "
            f"max {max(values):.0f} ms"
            if values
            else "no press changed the screen"
        )
        if lost:
            figures += f"; {len(lost)} presses changed nothing within {PRESS_TIMEOUT:.0f} s"
        print(
            f"| key → screen, {label} ({len(values) + len(lost)} presses) | {figures} "
            "| p95 ≤ 100 ms |"
        )
    print()
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        print(f"Load average at the end (2 cores, shared): {loadavg.read().split()[0]}.")
    print(
        f"Build during the presses: {at_start[0]} {at_start[1]:,}/{at_start[2]:,} at the first "
        f"press, {at_end[0]} {at_end[1]:,}/{at_end[2]:,} at the last ({busy_seconds:.1f} s of "
        f"presses); finished {build_state()[0]} {build_seconds:.1f} s after the first press."
    )
    for lost in (idle_lost, busy_lost):
        for report in lost[:3]:  # what the screen showed instead: the diagnosis
            print(f"\nlost {report}", file=sys.stderr)
    return 1 if idle_lost or busy_lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
