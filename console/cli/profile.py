"""`import profiles` and `profile show`."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.args import Builder
from console.cli.context import EXIT_OK, Context, csv_source
from console.cli.format import profile_text
from console.cli.serialise import profile_json


def register_import(sub: Any, cli: Builder) -> None:
    imp = cli.noun(sub, "import", help="CSV imports")
    p = cli.leaf(
        imp, "profiles", cmd_import_profiles, [cli.as_json], help="upsert profiles from CSV"
    )
    p.add_argument("--database", required=True)
    p.add_argument("file", metavar="FILE.csv", help="the CSV file, or - for standard input")


def register(sub: Any, cli: Builder) -> None:
    profile = cli.noun(sub, "profile", help="profiles")
    p = cli.leaf(profile, "show", cmd_profile_show, [cli.as_json], help="a profile's card")
    p.add_argument("external_id", metavar="EXTERNAL_ID")
    p.add_argument("--database", required=True)
    p = cli.leaf(
        profile,
        "explain",
        cmd_profile_explain,
        [cli.as_json],
        help="why a profile is (or is not) in a campaign's group",
    )
    p.add_argument("external_id", metavar="EXTERNAL_ID")
    p.add_argument("--database", required=True)
    p.add_argument("--campaign", required=True)


def cmd_import_profiles(args: argparse.Namespace, ctx: Context) -> int:
    from store import imports, profiles

    with ctx.transaction() as session:
        database = profiles.get_database(session, args.database)
        result = imports.import_profiles(session, ctx.actor, database, csv_source(args.file))
    payload = result.as_dict()
    ctx.emit(
        payload,
        lambda: (
            f"imported {result.rows:,} rows into {result.database!r}: "
            f"{result.inserted:,} new, {result.updated:,} updated, {result.unchanged:,} unchanged "
            f"({result.seconds:.1f}s)"
        ),
    )
    return EXIT_OK


def cmd_profile_show(args: argparse.Namespace, ctx: Context) -> int:
    from store.history import profile_card

    with ctx.session() as session:
        card = profile_json(profile_card(session, args.database, args.external_id))

    ctx.emit(card, lambda: profile_text(card))
    return EXIT_OK


def cmd_profile_explain(args: argparse.Namespace, ctx: Context) -> int:
    """Issue 13 §2: state, group, reason code and its figures (store.explain)."""
    from store.explain import explain

    with ctx.session() as session:
        why = explain(session, args.database, args.external_id, args.campaign)
    payload = why.as_dict()

    def human() -> str:
        lines = [
            f"{why.external_id} in {why.campaign}: {why.state}"
            + (f", group {why.group}" if why.group else ""),
            f"reason    {why.reason}",
        ]
        lines += [f"  {k:<18} {'' if v is None else v}" for k, v in why.detail.items()]
        return "\n".join(lines)

    ctx.emit(payload, human)
    return EXIT_OK
