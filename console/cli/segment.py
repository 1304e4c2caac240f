"""`segment create|add|remove|replace|refresh|list`."""

from __future__ import annotations

import argparse
from typing import Any

import sqlalchemy as sa

from console.cli.args import Builder, every
from console.cli.context import EXIT_OK, Context, UsageError, csv_source
from console.cli.format import count_text, table
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


def _segment_row(session: Any, segment: Any) -> dict[str, Any]:
    from store.models import ProfileDatabase

    database = session.get(ProfileDatabase, segment.database_id) if segment.database_id else None
    return {
        "name": segment.name,
        "kind": segment.kind,
        "database": database.name if database else None,
        "rule": segment.rule,
        "every_seconds": segment.refresh_every_seconds,
        "cron": segment.refresh_cron,
        "members": segment.member_count,
        "last_refreshed_at": segment.last_refreshed_at.isoformat()
        if segment.last_refreshed_at
        else None,
    }


def cmd_segment_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import profiles, segments

    ctx.refusable("segment.create", "segment", args.name)
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
        payload = _segment_row(session, segment)
    ctx.emit(payload, lambda: f"created {payload['kind']} segment {payload['name']!r}")
    return EXIT_OK


def cmd_segment_list(args: argparse.Namespace, ctx: Context) -> int:
    from store import views
    from store.models import Segment

    with ctx.session() as session:
        rows = [
            _segment_row(session, s)
            for s in session.scalars(
                sa.select(Segment).order_by(views.by_name(session, Segment.name))
            )
        ]
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


def _campaign_ids_on_segment(session: Any, segment_id: int) -> list[int]:
    from store.models import Campaign
    from store.states import CampaignStatus

    return list(
        session.scalars(
            sa.select(Campaign.id).where(
                Campaign.segment_id == segment_id, Campaign.status == CampaignStatus.ACTIVE
            )
        )
    )


def _segment_outcome(
    ctx: Context, payload: dict[str, Any], campaign_ids: list[int], since_build_id: int
) -> int:
    """--wait for the builds the segment change queued, then list them in `payload`."""
    code = EXIT_OK
    if ctx.args.wait:
        code = wait_for_builds(ctx.engine, campaign_ids, ctx.err)
    payload["builds"] = _builds_of(ctx, campaign_ids, since_build_id)
    return code


def _builds_of(ctx: Context, campaign_ids: list[int], since_id: int) -> list[dict]:
    """The builds of these campaigns newer than `since_id` (what the command queued)."""
    from store import views

    if not campaign_ids:
        return []
    from store.models import AudienceBuild, Campaign
    from store.states import OPEN_BUILD_STATUSES

    with ctx.session() as session:
        rows = session.execute(
            sa.select(AudienceBuild, Campaign.name)
            .join(Campaign, Campaign.id == AudienceBuild.campaign_id)
            .where(
                AudienceBuild.campaign_id.in_(campaign_ids),
                sa.or_(
                    AudienceBuild.id > since_id,
                    AudienceBuild.status.in_(OPEN_BUILD_STATUSES),
                ),
            )
            .order_by(AudienceBuild.id)
        ).all()
        return [views.build_row(b, name) for b, name in rows]


def _max_build_id(session: Any) -> int:
    from store.models import AudienceBuild

    return session.scalar(sa.select(sa.func.max(AudienceBuild.id))) or 0


def cmd_segment_file(args: argparse.Namespace, ctx: Context) -> int:
    from store import imports, profiles, segments

    ctx.refusable(f"segment.{args.file_action}", "segment", args.name)
    with ctx.transaction() as session:
        since = _max_build_id(session)
        segment = segments.get_segment(session, args.name)
        database = profiles.get_database(session, args.database) if args.database else None
        result = imports.apply_segment_file(
            session, ctx.actor, segment, args.file_action, csv_source(args.file), database=database
        )
        campaign_ids = _campaign_ids_on_segment(session, segment.id)
    payload = result.as_dict()
    code = _segment_outcome(ctx, payload, campaign_ids, since)
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

    ctx.refusable("segment.refresh", "segment", args.name)
    with ctx.transaction() as session:
        since = _max_build_id(session)
        segment = segments.get_segment(session, args.name)
        result = segments.refresh(session, ctx.actor, segment)
        campaign_ids = _campaign_ids_on_segment(session, segment.id)
    payload = {"segment": args.name, "entered": result.entered, "left": result.left}
    code = _segment_outcome(ctx, payload, campaign_ids, since)
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
            lines.append(f"Refreshed {last['at']}: {last['entered']:,} entered, {last['left']:,} left")
        if overview.next_refresh_at:
            lines.append(f"Next      {payload['next_refresh_at']}")
        if overview.campaigns:
            lines.append("Campaigns " + ", ".join(overview.campaigns))
        return "\n".join(lines)

    ctx.emit(payload, human)
    return EXIT_OK
