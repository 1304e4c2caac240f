"""Command line entry point: the console by default, scriptable subcommands otherwise.

No Textual import at module level: commands other than the console start fast.
Exit codes: 0 success; 2 usage error; 3 refused by a domain rule; 4 not found; 1 other.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-console",
        description="Operator console for marketing campaigns with local control groups.",
    )
    parser.add_argument("--db", help="database URL or SQLite path (env CAMPAIGN_CONSOLE_DB)")
    parser.add_argument("--read-only", action="store_true", help="look, never act")
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="build the demo workspace")
    demo.add_argument(
        "--profiles", type=int, default=None, help="number of profiles (default 200000)"
    )
    demo.add_argument("--reset", action="store_true", help="drop everything and rebuild")
    demo.add_argument("--open", action="store_true", help="open the console afterwards")

    sched = sub.add_parser("scheduler", help="run the scheduler in the foreground (a daemon)")
    sched.add_argument("--pool-size", type=int, default=None, help="builds run in parallel")
    return parser


def _actor(args: argparse.Namespace):
    from store.actors import current_actor
    from store.settings import load_settings

    settings = load_settings()
    role = "read_only" if args.read_only or settings.role == "read_only" else "operator"
    return current_actor(role)


def _db_url(args: argparse.Namespace) -> str:
    from store.db import resolve_db_url
    from store.settings import load_settings

    return resolve_db_url(args.db or load_settings().db)


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from store import demo
    from store.db import describe_url, open_store

    url = _db_url(args)
    engine = open_store(url)
    if args.reset:
        demo.reset(engine)
    if demo.has_workspace(engine) and not args.reset:
        print(
            f"workspace already present in {describe_url(url)} (use --reset to rebuild)",
            file=sys.stderr,
        )
    else:
        started = time.perf_counter()
        summary = demo.build_demo(engine, _actor(args), args.profiles or demo.DEFAULT_PROFILES)
        print(
            f"demo workspace in {describe_url(url)}: {summary.profiles:,} profiles, "
            f"{summary.segments} segments, {summary.campaigns} campaigns, "
            f"{summary.mailings} mailings ({time.perf_counter() - started:.1f}s)",
            file=sys.stderr,
        )
    if args.open:
        return cmd_console(args)
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    from console.app import run_console

    return run_console(db_url=_db_url(args), actor=_actor(args))


def cmd_scheduler(args: argparse.Namespace) -> int:
    from scheduler.daemon import run_daemon

    return run_daemon(_db_url(args), pool_size=args.pool_size)


COMMANDS = {"demo": cmd_demo, "scheduler": cmd_scheduler, None: cmd_console}


def main(argv: list[str] | None = None) -> int:
    from store.errors import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
