"""`gcg show|add|remove|except|unexcept`: the global control group (R1, R11a)."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context, csv_source


def register(sub: Any, cli: Builder) -> None:
    gcg = cli.noun(sub, "gcg", help="global control group of a profile database (R11a)")
    p = cli.leaf(gcg, "show", cmd_gcg_show, [cli.as_json], help="size and exception list")
    p.add_argument("database", metavar="DB")
    p = cli.leaf(gcg, "set", cmd_gcg_set, [cli.as_json], help="hold a percent of the database out")
    p.add_argument("database", metavar="DB")
    p.add_argument("--percent", required=True, help="0 < P < 100, two decimals at most; 0: off")
    for action in ("add", "remove"):
        p = cli.leaf(
            gcg,
            action,
            cmd_gcg_file,
            [cli.as_json],
            help=f"{action} the profiles of a CSV with an external_id column",
        )
        p.set_defaults(gcg_action=action)
        p.add_argument("database", metavar="DB")
        p.add_argument("file", metavar="FILE.csv", help="the CSV file, or - for standard input")
    for action, text in (
        ("except", "let a campaign reach its database's GCG"),
        ("unexcept", "hold the GCG out of a campaign again"),
    ):
        p = cli.leaf(gcg, action, cmd_gcg_except, [cli.as_json], help=text)
        p.set_defaults(excepted=action == "except")
        p.add_argument("campaign", metavar="CAMPAIGN")


def lcg_text(bp: int) -> str:
    return f"{bp / 100:g}%" if bp else "none (profiles added by file only)"


def cmd_gcg_show(args: argparse.Namespace, ctx: Context) -> int:
    from store.gcg import gcg_show

    with ctx.session() as session:
        overview = gcg_show(session, args.database)
    payload = overview.as_dict()

    def human() -> str:
        return "\n".join(
            [
                f"GCG of    {overview.database}",
                f"Percent   {lcg_text(overview.percent_bp)} (seed {overview.seed})",
                f"Size      {overview.size:,} of {overview.profiles:,} profiles",
                "Excepted  " + (", ".join(overview.exceptions) or "none"),
            ]
        )

    ctx.emit(payload, human)
    return EXIT_OK


def cmd_gcg_set(args: argparse.Namespace, ctx: Context) -> int:
    from store import gcg, profiles

    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database)
        changed = gcg.set_percent(session, ctx.actor, database, args.percent)
    with ctx.session() as session:
        payload = {**gcg.gcg_show(session, args.database).as_dict(), "changed": changed}
    ctx.emit(
        payload,
        lambda: (
            f"GCG of {args.database!r}: {payload['percent'] or 0}% (seed {payload['seed']}), "
            f"{payload['size']:,} profiles, {changed:,} changed"
        ),
    )
    return EXIT_OK


def cmd_gcg_file(args: argparse.Namespace, ctx: Context) -> int:
    from store import gcg, profiles

    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database)
        result = gcg.apply_gcg_file(
            session, ctx.actor, database, args.gcg_action, csv_source(args.file)
        )
    verb = "entered" if args.gcg_action == "add" else "left"
    ctx.emit(
        result.as_dict(),
        lambda: (
            f"GCG of {result.database!r}: {result.rows:,} rows, {result.changed:,} {verb}, "
            f"{result.unchanged:,} unchanged"
        ),
    )
    return EXIT_OK


def cmd_gcg_except(args: argparse.Namespace, ctx: Context) -> int:
    from store import gcg

    with ctx.transaction() as session:
        changed = gcg.set_exception(session, ctx.actor, args.campaign, args.excepted)
    state = "excepted from" if args.excepted else "held out by"
    payload = {"campaign": args.campaign, "excepted": args.excepted, "changed": changed}
    ctx.emit(
        payload,
        lambda: (
            f"campaign {args.campaign!r} is {state} the GCG"
            + ("" if changed else " (it already was)")
        ),
    )
    return EXIT_OK
