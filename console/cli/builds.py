"""`status` (scheduler health, builds in progress) and `builds` (the build history)."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context
from console.cli.format import builds_table, status_text
from console.cli.serialise import build_json
from console.cli.wait import wait_for_builds


def register(sub: Any, cli: Builder) -> None:
    cli.leaf(
        sub, "status", cmd_status, [cli.as_json], help="scheduler health and builds in progress"
    )
    p = cli.leaf(sub, "builds", cmd_builds, [cli.as_json], help="audience builds")
    p.add_argument("--campaign", help="only this campaign's builds")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    # `builds` alone lists them (the contract of before); these act on one build.
    actions = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=False)
    retry = cli.leaf(
        actions,
        "retry",
        cmd_build_retry,
        [cli.as_json, cli.wait],
        help="queue a failed build again: it resumes from its checkpoint",
    )
    retry.add_argument("id", type=int, help="the build's number (the ID column)")
    cancel = cli.leaf(
        actions, "cancel", cmd_build_cancel, [cli.as_json], help="cancel a queued or running build"
    )
    cancel.add_argument("id", type=int, help="the build's number (the ID column)")


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    """Scheduler health (holder, heartbeat age) and running/queued builds with rate and ETA."""
    from store import monitor

    with ctx.session() as session:
        snapshot = monitor.scheduler_monitor(session)
    ctx.emit(snapshot.to_dict(), lambda: status_text(snapshot))
    return EXIT_OK


def cmd_builds(args: argparse.Namespace, ctx: Context) -> int:
    from store import ranges, views

    with ctx.session() as session:
        # Issue 15.8: out of range is a store refusal, exit 3 and audited.
        ranges.check_whole_number(
            session, ctx.actor, "builds.list", "--limit", args.limit, *ranges.LIST_ROWS
        )
        rows = [
            build_json(b) for b in views.builds(session, campaign=args.campaign, limit=args.limit)
        ]
    ctx.emit(rows, lambda: builds_table(rows) if rows else "no audience builds")
    return EXIT_OK


def _build_change(ctx: Context, build_id: int, done: str, change: Any) -> int:
    """Run `change(session, build)` on build #build_id, --wait if asked, print the build."""
    from store import builds, views

    with ctx.transaction() as session:
        change(session, builds.get_build(session, build_id))
    code = EXIT_OK
    if getattr(ctx.args, "wait", False):
        code = wait_for_builds(ctx.engine, [build_id], ctx.err, settings=ctx.settings.scheduler)
    with ctx.session() as session:
        row = build_json(views.builds_by_id(session, [build_id])[0])
    ctx.emit(row, lambda: f"build #{build_id} {done}\n\n" + builds_table([row]))
    return code


def cmd_build_retry(args: argparse.Namespace, ctx: Context) -> int:
    from store import builds

    return _build_change(
        ctx,
        args.id,
        "queued again: it resumes from its checkpoint",
        lambda s, b: builds.retry_build(s, ctx.actor, b),
    )


def cmd_build_cancel(args: argparse.Namespace, ctx: Context) -> int:
    from store import builds

    return _build_change(
        ctx, args.id, "cancelled", lambda s, b: builds.cancel_build(s, ctx.actor, b)
    )
