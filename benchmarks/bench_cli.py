"""CLI start-up (issue 14 target 6): `campaign-console campaign list --json` on the demo
workspace against `python -c "import sqlmodel"`, measured in the same run. A script, not a
test.

    .venv/bin/python benchmarks/bench_cli.py [--rounds 15] [--workspace PATH]
                                             [--baseline-source DIR] [--instructions]

The demo workspace (`campaign-console demo`, 200,000 profiles) is built once in
`--workspace` and reused. Each round runs the two commands back to back, in alternating
order (A B, then B A, ...), so a machine whose speed drifts slows both alike; the figure
is the ratio A / B of each round, and its median. Wall time is what a user waits for;
CPU time (user + sys of the child) is printed too because it is less sensitive to other
processes on a shared machine.

`--baseline-source DIR` also times the same command from another checkout of the project
(e.g. the commit before a change, made with `git worktree add DIR COMMIT`), run with this
virtualenv's Python and `PYTHONPATH=DIR`, in the same rounds: before and after, on one
machine, at one moment.

`--instructions` also runs each command once under valgrind (cachegrind) and prints the
instructions it executed: a ratio that other processes on a shared machine do not move.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
CONSOLE = ROOT / ".venv" / "bin" / "campaign-console"
CLEAN_ENV = {
    **os.environ,
    "CAMPAIGN_CONSOLE_CONFIG": os.devnull,  # no user config
}
CLEAN_ENV.pop("CAMPAIGN_CONSOLE_DB", None)
CLEAN_ENV.pop("PYTHONPATH", None)
# The warm-up run writes bytecode, as an installed package has it; without it every run of
# a checkout that was never compiled (a fresh `git worktree add`) compiles all its modules.
CLEAN_ENV.pop("PYTHONDONTWRITEBYTECODE", None)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def instructions(command: list[str], env: dict[str, str]) -> int:
    """Instructions one run executes (valgrind's cachegrind): unlike time, the same on a
    loaded machine as on a quiet one."""
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        + command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    refs = [line for line in done.stderr.splitlines() if "I   refs:" in line or "I refs:" in line]
    return int(refs[-1].split()[-1].replace(",", ""))


def median_line(label: str, values: list[float], unit: str = "s") -> str:
    return (
        f"| {label} | {statistics.median(values):.3f} {unit} "
        f"(min {min(values):.3f}, max {max(values):.3f}) |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workspace", default="/tmp/cc-bench-cli/demo.db")
    parser.add_argument("--baseline-source", type=Path, default=None)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions of one run of each command (needs valgrind; slow)",
    )
    args = parser.parse_args()

    workspace = Path(args.workspace).resolve()
    if not workspace.exists():
        workspace.parent.mkdir(parents=True, exist_ok=True)
        print(f"building the demo workspace in {workspace} …", file=sys.stderr)
        subprocess.run([str(CONSOLE), "--db", str(workspace), "demo"], check=True, env=CLEAN_ENV)

    def list_args(db: Path) -> list[str]:
        return ["--db", str(db), "campaign", "list", "--json"]

    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "cli": ([str(CONSOLE), *list_args(workspace)], CLEAN_ENV),
        "floor": ([str(PYTHON), "-c", "import sqlmodel"], CLEAN_ENV),
    }
    # Run from a directory without a checkout: `python -m` and `-c` put the current
    # directory first on sys.path, so from this checkout's root the baseline would import
    # this checkout's code instead of --baseline-source's.
    os.chdir(workspace.parent)
    if args.baseline_source is not None:
        source = args.baseline_source.resolve()
        env = {**CLEAN_ENV, "PYTHONPATH": str(source)}
        # The baseline's own demo: a workspace at a newer schema revision is refused.
        own = workspace.with_name(f"{workspace.stem}-baseline{workspace.suffix}")
        if not own.exists():
            print(f"building the baseline's demo workspace in {own} …", file=sys.stderr)
            demo = [str(PYTHON), "-m", "console", "--db", str(own), "demo"]
            subprocess.run(demo, check=True, env=env, stdout=subprocess.DEVNULL)
        commands["baseline"] = ([str(PYTHON), "-m", "console", *list_args(own)], env)
    if args.baseline_source is not None:
        probe = [str(PYTHON), "-c", "import store; print(store.__file__)"]
        where = subprocess.run(
            probe, env=commands["baseline"][1], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert where.startswith(str(source)), where
    for command, env in commands.values():  # warm-up: bytecode compiled, files cached
        timed(command, env)

    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            w, c = timed(*commands[name])
            wall[name].append(w)
            cpu[name].append(c)

    ratios = [a / b for a, b in zip(wall["cli"], wall["floor"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(cpu["cli"], cpu["floor"], strict=True)]
    print(f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f} (2 cores, shared)\n")
    print("| figure | median |")
    print("| --- | --- |")
    print(median_line("`campaign-console campaign list --json`, wall", wall["cli"]))
    print(median_line("`python -c 'import sqlmodel'`, wall", wall["floor"]))
    print(median_line("**ratio cli / floor, wall** (target ≤ 1.3)", ratios, unit="×"))
    print(median_line("ratio cli / floor, CPU", cpu_ratios, unit="×"))
    if "baseline" in commands:
        before = [a / b for a, b in zip(wall["baseline"], wall["floor"], strict=True)]
        print(median_line("baseline source, wall", wall["baseline"]))
        print(median_line("ratio baseline / floor, wall", before, unit="×"))
        before_cpu = [a / b for a, b in zip(cpu["baseline"], cpu["floor"], strict=True)]
        print(median_line("ratio baseline / floor, CPU", before_cpu, unit="×"))
    if args.instructions:
        counts = {name: instructions(*commands[name]) for name in commands}
        for name, count in counts.items():
            ratio = count / counts["floor"]
            print(f"| instructions, {name} | {count / 1e6:,.0f} M ({ratio:.3f} × the floor) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
