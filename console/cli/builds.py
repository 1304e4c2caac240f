"""`status` (scheduler health, builds in progress) and `builds` (the build history)."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context
from console.cli.format import builds_table, status_text
from console.cli.serialise import build_json


def register(sub: Any, cli: Builder) -> None:
    cli.leaf(
        sub, "status", cmd_status, [cli.as_json], help="scheduler health and builds in progress"
    )
    p = cli.leaf(sub, "builds", cmd_builds, [cli.as_json], help="audience builds")
    p.add_argument("--campaign", help="only this campaign's builds")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")


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
