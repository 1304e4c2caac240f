"""SSH gateway benchmark: time from `ssh` to the console's first frame, and memory per
session, with 1, 5 and 20 concurrent sessions on the demo workspace; and how fast a
killed client's console process is gone.

    .venv/bin/python benchmarks/bench_gateway.py [--workspace PATH] [--sessions 1,5,20]

Baseline (measured in the same run): the same console started directly in tmux, no SSH
(`campaign-console` on the same workspace, read-only, no scheduler). The gateway's cost
is the ratio to it. Every session is the real OpenSSH client in a private tmux server at
80×24; "first frame" is the moment `capture-pane` first shows the campaign list's
header line. Memory is the PSS (proportional set size: shared pages split between the
processes sharing them) and RSS of each session's console process, read from
/proc/PID/smaps_rollup once every session shows its first frame; the gateway process's
own growth is reported too. Markdown on stdout, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e.gateway_world import (  # noqa: E402
    GatewayProcess,
    Tmux,
    authorized_line,
    client_pid,
    make_key,
    pid_gone,
    poll,
)

CONSOLE = ROOT / ".venv" / "bin" / "campaign-console"
FIRST_FRAME = "Campaign"  # the list's column header: the table is drawn


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Rss"):
            values[name] = int(rest.split()[0])
    return values["Pss"], values["Rss"]


def open_sessions(tmux: Tmux, argvs: list[list[str]], prefix: str) -> list[float]:
    """Start every client at once; seconds from each start to its first frame."""
    started: dict[str, float] = {}
    for i, argv in enumerate(argvs):
        name = f"{prefix}{i}"
        tmux.open(name, argv)
        started[name] = time.perf_counter()
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 300
    while len(seen) < len(started):
        for name in started:
            if name not in seen and FIRST_FRAME in tmux.screen(name):
                seen[name] = time.perf_counter() - started[name]
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {len(started)} sessions drew a frame")
        time.sleep(0.01)
    return [seen[name] for name in started]


def baseline(tmux: Tmux, url: str, config: Path, count: int) -> tuple[list[float], list[int]]:
    env = f"CAMPAIGN_CONSOLE_CONFIG={config} CAMPAIGN_CONSOLE_DB={url}"
    argv = ["env", *env.split(), str(CONSOLE), "--read-only"]
    times = open_sessions(tmux, [argv] * count, "local")
    pids = []
    for i in range(count):
        shell = int(tmux.run("list-panes", "-t", f"local{i}", "-F", "#{pane_pid}").strip())
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        pids.append(int(children[0]))
    pss = [memory_kb(pid)[0] for pid in pids]
    return times, pss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "ccbench-gw.db"))
    parser.add_argument("--sessions", default="1,5,20")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    url = f"sqlite:///{args.workspace}"
    if not Path(args.workspace).exists():
        print(f"building the demo workspace in {args.workspace} …", file=sys.stderr)
        subprocess.run([str(CONSOLE), "--db", url, "demo"], check=True)
    work = Path(tempfile.mkdtemp(prefix="ccbench-gw-"))
    users = [make_key(work, f"user{i}") for i in range(max(counts))]
    top = max(counts)
    gateway = GatewayProcess(
        work, url, {"max_sessions": top, "max_sessions_per_key": 1, "connections_per_minute": 1000}
    )
    lines = [authorized_line(key, "read_only", key.name) for key in users]
    gateway.authorized_keys.write_text("\n".join(lines) + "\n")
    gateway.start()
    rows = []
    tmux = Tmux(f"ccbench-gw-{os.getpid()}")
    try:
        base_times, base_pss = baseline(tmux, url, gateway.config, 1)
        tmux.kill()
        for count in counts:
            idle_gateway = memory_kb(gateway.proc.pid)[0]  # type: ignore[union-attr]
            argvs = [gateway.ssh(key, "-tt") for key in users[:count]]
            times = open_sessions(tmux, argvs, f"n{count}-")
            consoles = gateway.consoles()
            assert len(consoles) == count, consoles
            pss, rss = zip(*(memory_kb(pid) for pid in consoles.values()), strict=True)
            gateway_growth = memory_kb(gateway.proc.pid)[0] - idle_gateway  # type: ignore[union-attr]
            rows.append((count, times, pss, rss, gateway_growth))
            # Kill one client; the time until its console process is gone.
            victim = consoles[users[0].name]
            os.kill(client_pid(tmux, f"n{count}-0"), signal.SIGKILL)
            killed = time.perf_counter()
            poll(lambda v=victim: pid_gone(v), timeout=30, what="console gone")
            gone = time.perf_counter() - killed
            rows[-1] += (gone,)
            tmux.kill()
            poll(lambda: not gateway.consoles(), timeout=60, what="all consoles gone")
    finally:
        tmux.kill()
        gateway.stop()

    base_first = statistics.median(base_times)
    print(f"Baseline, console started directly in tmux (no SSH): first frame "
          f"{base_first:.2f} s, PSS {base_pss[0] / 1024:.1f} MB.\n")  # fmt: skip
    print("| sessions | ssh → first frame, median (max) | vs. baseline | console PSS per "
          "session | console RSS | gateway growth | killed client → console gone |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for count, times, pss, rss, growth, gone in rows:
        median = statistics.median(times)
        print(
            f"| {count} | {median:.2f} s ({max(times):.2f} s) | {median / base_first:.2f}× "
            f"| {statistics.mean(pss) / 1024:.1f} MB | {statistics.mean(rss) / 1024:.1f} MB "
            f"| {growth / 1024:.1f} MB | {gone:.2f} s |"
        )


if __name__ == "__main__":
    main()
