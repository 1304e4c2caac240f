"""`campaign create|activate|lcg|complete|list|show`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from console.cli.args import Builder, names
from console.cli.context import EXIT_OK, Context, UsageError
from console.cli.format import campaign_text, count_text, table
from console.cli.serialise import campaign_detail_json, campaign_row_json
from console.cli.wait import wait_for_builds


def register(sub: Any, cli: Builder) -> None:
    campaign = cli.noun(sub, "campaign", help="campaigns")
    json_, wait = cli.as_json, cli.wait
    p = cli.leaf(campaign, "create", cmd_campaign_create, [json_], help="create a draft campaign")
    p.add_argument("name")
    p.add_argument("--database", required=True)
    p.add_argument("--segment", required=True)
    p.add_argument("--lcg", metavar="PERCENT", help="enable the LCG with this percent, e.g. 5.25")
    p.add_argument("--limit", type=int, help="maximum control group size")
    p.add_argument("--strata", type=names, default=[], help="strata fields f1,f2")
    p.add_argument("--seed", type=int, help="assignment seed (default: random)")
    p = cli.leaf(campaign, "activate", cmd_campaign_activate, [json_, wait], help="activate")
    p.add_argument("name")
    p = cli.leaf(campaign, "lcg", cmd_campaign_lcg, [json_, wait], help="edit LCG settings")
    p.add_argument("name")
    p.add_argument("--percent", help="control share, 0 < p < 100, two decimals at most")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--limit", type=int, help="maximum control group size")
    limit.add_argument("--no-limit", action="store_true", help="remove the limit")
    strata = p.add_mutually_exclusive_group()
    strata.add_argument("--strata", type=names, help="strata fields f1,f2")
    strata.add_argument("--no-strata", action="store_true", help="one stratum for everyone")
    toggle = p.add_mutually_exclusive_group()
    toggle.add_argument("--enable", action="store_true", help="enable the LCG (R5)")
    toggle.add_argument(
        "--disable", action="store_true", help="disable it: control moves to test (R7)"
    )
    p = cli.leaf(campaign, "complete", cmd_campaign_complete, [json_], help="complete (R8)")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm: completion is terminal")
    cli.leaf(campaign, "list", cmd_campaign_list, [json_], help="list campaigns")
    p = cli.leaf(campaign, "show", cmd_campaign_show, [json_], help="show one campaign")
    p.add_argument("name")
    p = cli.leaf(
        campaign, "members", cmd_campaign_members, help="export current members (CSV or JSON)"
    )
    p.add_argument("name")
    p.add_argument("--group", choices=("test", "control"), help="only this group")
    p.add_argument("--stratum", metavar="FIELD=VALUE,...", help="only these strata")
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="default: csv")
    # --json as on every other command that prints
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    p.add_argument("--output", metavar="FILE", help="write to FILE (default: standard output)")


def _show(ctx: Context, name: str) -> dict[str, Any]:
    from store import views

    with ctx.session() as session:
        return campaign_detail_json(views.require_campaign_detail(session, name))


def cmd_campaign_create(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns, profiles, segments

    if args.lcg is None and (args.limit is not None or args.strata):
        raise UsageError("--limit and --strata configure the LCG: add --lcg PERCENT")
    with ctx.transaction() as session:
        campaigns.create_campaign(
            session,
            ctx.actor,
            args.name,
            profiles.get_database(session, args.database),
            segments.get_segment(session, args.segment),
            lcg_percent=args.lcg,
            lcg_limit=args.limit,
            lcg_strata=args.strata,
            seed=args.seed,
        )
    show = _show(ctx, args.name)
    ctx.emit(show, lambda: f"created draft campaign {args.name!r}\n\n" + campaign_text(show))
    return EXIT_OK


def _campaign_change(ctx: Context, name: str, verb: str, change: Callable[[Any, Any], Any]) -> int:
    """Run a change on one campaign, then --wait if asked, then print the campaign."""
    from store import campaigns

    with ctx.transaction() as session:
        campaign = campaigns.get_campaign(session, name)
        queued = change(session, campaign)  # the build it queued, if any
    code = EXIT_OK
    if getattr(ctx.args, "wait", False) and queued is not None:
        code = wait_for_builds(ctx.engine, [queued.id], ctx.err, settings=ctx.settings.scheduler)
    show = _show(ctx, name)
    ctx.emit(show, lambda: f"{verb} campaign {name!r}\n\n" + campaign_text(show))
    return code


def cmd_campaign_activate(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns

    return _campaign_change(
        ctx, args.name, "activated", lambda s, c: campaigns.activate(s, ctx.actor, c)
    )


def cmd_campaign_lcg(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns

    changes: dict[str, Any] = {}
    if args.percent is not None:
        changes["percent"] = args.percent
    if args.limit is not None:
        changes["limit"] = args.limit
    if args.no_limit:
        changes["limit"] = None
    if args.strata is not None:
        changes["strata"] = args.strata
    if args.no_strata:
        changes["strata"] = []
    if args.enable:
        changes["enabled"] = True
    if args.disable:
        changes["enabled"] = False
    if not changes:
        raise UsageError(
            "nothing to change: give --percent, --limit/--no-limit, --strata/--no-strata, "
            "--enable or --disable"
        )
    return _campaign_change(
        ctx,
        args.name,
        "updated the LCG of",
        lambda s, c: campaigns.edit_lcg(s, ctx.actor, c, **changes),
    )


def cmd_campaign_complete(args: argparse.Namespace, ctx: Context) -> int:
    from store import campaigns

    if not args.yes:
        raise UsageError(
            f"completing {args.name!r} is terminal (R8): every member leaves, mailings stop; "
            "add --yes to confirm"
        )
    return _campaign_change(
        ctx, args.name, "completed", lambda s, c: campaigns.complete(s, ctx.actor, c)
    )


def cmd_campaign_list(args: argparse.Namespace, ctx: Context) -> int:
    from store import views

    with ctx.session() as session:
        rows = [campaign_row_json(row) for row in views.campaign_rows(session)]
    ctx.emit(
        rows,
        lambda: table(
            [
                (
                    r["name"],
                    r["status"],
                    r["segment"],
                    count_text(r["audience"]["members"]),
                    count_text(r["audience"]["test"]),
                    count_text(r["audience"]["control"]),
                    r["lcg_summary"],
                    len(r["warnings"]) or "",
                    r["paused_mailings"] or "",
                )
                for r in rows
            ],
            (
                "CAMPAIGN",
                "STATUS",
                "SEGMENT",
                "MEMBERS",
                "TEST",
                "CONTROL",
                "LCG",
                "WARN",
                "PAUSED",
            ),
            right=(3, 4, 5, 7, 8),
        ),
    )
    return EXIT_OK


def cmd_campaign_show(args: argparse.Namespace, ctx: Context) -> int:
    show = _show(ctx, args.name)
    ctx.emit(show, lambda: campaign_text(show))
    return EXIT_OK


def cmd_campaign_members(args: argparse.Namespace, ctx: Context) -> int:
    """Issue 13 §1: every current member, streamed from one snapshot (store.members)."""
    import os

    from console.cli.export import write_members_csv, write_members_json
    from store.errors import StoreError
    from store.members import MemberFilter, MemberStream, parse_stratum

    flt = MemberFilter(group=args.group, stratum=parse_stratum(args.stratum))
    write = write_members_json if args.format == "json" else write_members_csv
    if args.output is not None:
        if os.path.isdir(args.output):
            raise UsageError(f"--output {args.output} is a directory: name a file")
        folder = os.path.dirname(args.output) or "."
        if not os.path.isdir(folder):
            raise UsageError(f"--output {args.output}: no directory {folder}")
    with ctx.session() as session:
        members = MemberStream(session, args.name, flt)  # refusals come before any output
        if args.output is None:
            count = write(members, ctx.out)
        else:
            partial = f"{args.output}.partial"
            try:
                with open(partial, "w", encoding="utf-8", newline="") as out:
                    count = write(members, out)
                os.replace(partial, args.output)  # never a half-written file under its name
            except BaseException as exc:
                if os.path.exists(partial):  # a failed export leaves no file behind
                    os.remove(partial)
                if isinstance(exc, OSError):  # a full disk, no permission: said plainly
                    reason = exc.strerror or type(exc).__name__
                    raise StoreError(
                        f"cannot write {args.output}: {reason}; nothing written"
                    ) from None
                raise
    if args.output is not None:
        ctx.note(f"wrote {count:,} members of {args.name!r} to {args.output}")
    return EXIT_OK
