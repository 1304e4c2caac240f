"""`mailing create|show|pause|resume`."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder, when
from console.cli.context import EXIT_OK, Context
from console.cli.serialise import mailing_detail_json, mailing_json


def register(sub: Any, cli: Builder) -> None:
    mailing = cli.noun(sub, "mailing", help="mailings")
    p = cli.leaf(mailing, "create", cmd_mailing_create, [cli.as_json], help="create a mailing")
    p.add_argument("name")
    p.add_argument("--campaign", required=True)
    p.add_argument("--kind", required=True, choices=("broadcast", "regular", "trigger"))
    at = p.add_mutually_exclusive_group()
    at.add_argument("--at", type=when, help="broadcast time, ISO 8601 (naive means UTC)")
    at.add_argument("--cron", help="regular schedule (crontab, UTC)")
    p.add_argument("--on", dest="event", metavar="EVENT", help="trigger: the event it fires on")
    p.add_argument("--segment", help="send only to test members also in this segment")
    p.add_argument("--expand", action="store_true", help="audience expansion (R11)")
    p = cli.leaf(
        mailing, "show", cmd_mailing_show, [cli.as_json], help="a mailing: sent and suppressed"
    )
    p.add_argument("name")
    for action in ("pause", "resume"):
        p = cli.leaf(mailing, action, cmd_mailing_pause, [cli.as_json], help=f"{action} a mailing")
        p.set_defaults(pause=action == "pause")
        p.add_argument("name")


def cmd_mailing_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns, mailings, segments, views

    with ctx.transaction() as session:
        mailing = mailings.create_mailing(
            session,
            ctx.actor,
            args.name,
            campaigns.get_campaign(session, args.campaign),
            args.kind,
            send_at=args.at,
            cron=args.cron,
            segment=segments.get_segment(session, args.segment) if args.segment else None,
            expand_audience=args.expand,
            event=args.event,
        )
        payload = {"campaign": args.campaign, **mailing_json(views.mailing_row(mailing))}
    ctx.emit(payload, lambda: f"created {args.kind} mailing {args.name!r} of {args.campaign!r}")
    return EXIT_OK


def cmd_mailing_show(args: argparse.Namespace, ctx: Context) -> int:
    """One mailing, with its sent and suppressed counts by reason (R11b)."""
    from store import views

    with ctx.session() as session:
        detail = views.mailing_detail(session, args.name)
    payload = mailing_detail_json(detail)

    def human() -> str:
        m = detail.mailing
        lines = [
            f"Mailing   {m.name} ({m.kind}) of {detail.campaign} ({detail.campaign_status})",
            f"Schedule  {m.schedule}" + (f", segment {detail.segment}" if detail.segment else ""),
            f"Status    {m.status}" + (f", {m.paused_reason}" if m.paused_reason else ""),
            f"Sent      {detail.sent:,}",
            f"Suppressed {detail.suppressed_total:,}",
        ]
        lines += [f"  {reason:<24}{count:>10,}" for reason, count in detail.suppressed.items()]
        return "\n".join(lines)

    ctx.emit(payload, human)
    return EXIT_OK


def cmd_mailing_pause(args: argparse.Namespace, ctx: Context) -> int:
    from store import mailings, views

    with ctx.transaction() as session:
        mailing = mailings.get_mailing(session, args.name)
        mailings.set_manual_pause(session, ctx.actor, mailing, args.pause)
        payload = mailing_json(views.mailing_row(mailing))
    ctx.emit(
        payload,
        lambda: (
            f"mailing {args.name!r} {'paused' if args.pause else 'resumed'}"
            + (
                f" (still {payload['paused_reason']})"
                if not args.pause and payload["paused"]
                else ""
            )
        ),
    )
    return EXIT_OK
