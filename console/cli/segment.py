"""`segment create|add|remove|replace|refresh|list`."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder, every
from console.cli.context import EXIT_OK, Context, UsageError, csv_source
from console.cli.format import count_text, table
from console.cli.serialise import build_json
from console.cli.wait import wait_for_builds


def register(sub: Any, cli: Builder) -> None:
    segment = cli.noun(sub, "segment", help="segments")
    p = cli.leaf(segment, "create", cmd_segment_create, [cli.as_json], help="create a segment")
    p.add_argument("name")
    p.add_argument("--database", help="required for a dynamic segment (--rule)")
    p.add_argument("--rule", help="dynamic segment rule, e.g. \"region = 'Moscow' and age < 30\"")
    schedule = p.add_mutually_exclusive_group()
    schedule.add_argument("--every", type=every, help="refresh interval: 30s, 15m, 1h")
    schedule.add_argument("--cron", help='refresh schedule, e.g. "0 * * * *"')
    for action in ("add", "remove", "replace"):
        p = cli.leaf(
            segment,
            action,
            cmd_segment_file,
            [cli.as_json, cli.wait],
            help=f"{action} members from a CSV with an external_id column",
        )
        p.set_defaults(file_action=action)
        p.add_argument("name")
        p.add_argument("file", metavar="FILE.csv", help="the CSV file, or - for standard input")
        p.add_argument(
            "--database", help="database of rows without a database column (see docs/cli.md)"
        )
    p = cli.leaf(
        segment, "refresh", cmd_segment_refresh, [cli.as_json, cli.wait], help="refresh now"
    )
    p.add_argument("name")
    cli.leaf(segment, "list", cmd_segment_list, [cli.as_json], help="list segments")
    p = cli.leaf(
        segment, "show", cmd_segment_show, [cli.as_json], help="a segment and its last refresh"
    )
    p.add_argument("name")


def cmd_segment_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import profiles, segments
    from store.segment_views import segment_overview

    if (args.every or args.cron) and not args.rule:
        raise UsageError("--every and --cron schedule the refresh of a dynamic segment: add --rule")
    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database) if args.database else None
        segment = segments.create_segment(
            session,
            ctx.actor,
            args.name,
            database=database,
            rule=args.rule,
            every_seconds=args.every,
            cron=args.cron,
        )
        session.flush()
        payload = segment_overview(session, segment.name).as_dict()
    ctx.emit(payload, lambda: f"created {payload['kind']} segment {payload['name']!r}")
    return EXIT_OK


def cmd_segment_list(args: argparse.Namespace, ctx: Context) -> int:
    from store.segment_views import segment_overviews

    with ctx.session() as session:
        rows = [row.as_dict() for row in segment_overviews(session)]
    ctx.emit(
        rows,
        lambda: table(
            [
                (
                    r["name"],
                    r["kind"],
                    r["database"] or "",
                    count_text(r["members"]),
                    r["rule"] or "",
                )
                for r in rows
            ],
            ("SEGMENT", "KIND", "DATABASE", "MEMBERS", "RULE"),
            right=(3,),
        ),
    )
    return EXIT_OK


def _segment_outcome(ctx: Context, payload: dict[str, Any], queued: Any) -> int:
    """--wait for the builds the segment change queued, then list them in `payload`."""
    from store import views

    build_ids = [build.id for build in queued]
    code = EXIT_OK
    if ctx.args.wait:
        code = wait_for_builds(ctx.engine, build_ids, ctx.err, settings=ctx.settings.scheduler)
    with ctx.session() as session:
        payload["builds"] = [build_json(b) for b in views.builds_by_id(session, build_ids)]
    return code


def cmd_segment_file(args: argparse.Namespace, ctx: Context) -> int:
    from store import imports, profiles, segments

    with ctx.transaction() as session:
        segment = segments.get_segment(session, args.name)
        database = profiles.get_database(session, args.database) if args.database else None
        result = imports.apply_segment_file(
            session, ctx.actor, segment, args.file_action, csv_source(args.file), database=database
        )
    payload = result.as_dict()
    code = _segment_outcome(ctx, payload, result.builds)
    ctx.emit(
        payload,
        lambda: (
            f"segment {result.segment!r}: {result.rows:,} rows, "
            f"{result.added:,} added, {result.removed:,} removed"
            + (
                f"; builds {', '.join('#' + str(b['id']) for b in payload['builds'])}"
                if payload["builds"]
                else ""
            )
        ),
    )
    return code


def cmd_segment_refresh(args: argparse.Namespace, ctx: Context) -> int:
    from store import segments

    with ctx.transaction() as session:
        segment = segments.get_segment(session, args.name)
        result = segments.refresh(session, ctx.actor, segment)
    payload = {"segment": args.name, "entered": result.entered, "left": result.left}
    code = _segment_outcome(ctx, payload, result.builds)
    ctx.emit(
        payload,
        lambda: (
            f"segment {args.name!r} refreshed: {result.entered:,} entered, {result.left:,} left"
        ),
    )
    return code


def cmd_segment_show(args: argparse.Namespace, ctx: Context) -> int:
    """Issue 13 §6: the segments screen's row as JSON or text (store.segment_views)."""
    from store.segment_views import segment_overview

    with ctx.session() as session:
        overview = segment_overview(session, args.name)
    payload = overview.as_dict()

    def human() -> str:
        last = payload["last_refresh"]
        lines = [
            f"Segment   {overview.name} ({overview.kind})",
            f"Database  {overview.database or '(any)'}",
            f"Members   {overview.members:,}",
            f"Schedule  {overview.schedule}",
        ]
        if overview.rule:
            lines.append(f"Rule      {overview.rule}")
        if last:
            took = f" in {last['seconds']:.3f}s" if last["seconds"] is not None else ""
            lines.append(
                f"Refreshed {last['at']}{took}: {last['entered']:,} entered, {last['left']:,} left"
            )
        if overview.next_refresh_at:
            lines.append(f"Next      {payload['next_refresh_at']}")
        if overview.campaigns:
            lines.append("Campaigns " + ", ".join(overview.campaigns))
        return "\n".join(lines)

    ctx.emit(payload, human)
    return EXIT_OK
