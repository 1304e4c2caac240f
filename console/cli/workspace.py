"""`campaign-console` with no command (the console), `init`, `demo` and `scheduler`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context


def register(sub: Any, cli: Builder) -> None:
    cli.leaf(sub, "init", cmd_init, [cli.as_json], help="create an empty workspace")
    demo = cli.leaf(sub, "demo", cmd_demo, help="build the demo workspace")
    demo.add_argument(
        "--profiles", type=int, default=None, help="number of profiles (default 200000)"
    )
    demo.add_argument("--reset", action="store_true", help="drop everything and rebuild")
    demo.add_argument("--open", action="store_true", help="open the console afterwards")

    sched = cli.leaf(sub, "scheduler", cmd_scheduler, help="run the scheduler in the foreground")
    sched.add_argument("--pool-size", type=int, default=None, help="builds run in parallel")


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    """Issue 15.7: with `demo`, the only command that creates a workspace."""
    from store import workspace

    result = workspace.init(
        ctx.settings.db, ctx.flagged_actor, connect_timeout=ctx.settings.connect_timeout
    )
    payload = result.as_dict()
    ctx.emit(
        payload,
        lambda: (
            f"created an empty workspace at {result.database} (schema {result.revision})"
            if result.created
            else f"{result.database} is already an empty workspace (schema {result.revision})"
        ),
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    from store import demo, workspace
    from store.db import where

    url = ctx.settings.db
    if args.profiles is not None:  # before --reset or anything else; audited (15.8)
        demo.check_profile_count_audited(
            url, ctx.flagged_actor, args.profiles, connect_timeout=ctx.settings.connect_timeout
        )
    engine = workspace.open_or_create(
        url, ctx.flagged_actor, "build the demo workspace", **ctx.store_options()
    )
    ctx.adopt_engine(engine)  # ctx.actor now sees the database role (issue 15.5)
    if args.reset:
        demo.reset(engine, ctx.actor)
    if demo.has_workspace(engine) and not args.reset:
        ctx.note(f"workspace already present in {where(url)} (use --reset to rebuild)")
    else:
        started = time.perf_counter()
        summary = demo.build_demo(engine, ctx.actor, args.profiles or demo.DEFAULT_PROFILES)
        ctx.note(
            f"demo workspace in {where(url)}: {summary.profiles:,} profiles, "
            f"{summary.segments} segments, {summary.campaigns} campaigns, "
            f"{summary.mailings} mailings ({time.perf_counter() - started:.1f}s)"
        )
    if args.open:
        return cmd_console(args, ctx)
    return EXIT_OK


def cmd_console(args: argparse.Namespace, ctx: Context) -> int:
    from console.app import run_console

    return run_console(ctx.settings, actor=ctx.actor)


def cmd_scheduler(args: argparse.Namespace, ctx: Context) -> int:
    from scheduler.daemon import run_daemon

    # Issue 15.5: the scheduler takes the lease and runs builds and mailings: it acts.
    ctx.actor.require_write("run the scheduler (it takes the lease, runs builds and mailings)")

    return run_daemon(
        ctx.settings.db, ctx.settings.scheduler, connect_timeout=ctx.settings.connect_timeout
    )
