"""Command line entry point: the console by default, scriptable subcommands otherwise.

No Textual import at module level: commands other than the console start fast.
The command names, flags, exit codes and JSON keys are a contract (docs/cli.md).
Exit codes: 0 success; 2 usage error; 3 refused by a domain rule (reason on stderr,
nothing changed, refusal audited); 4 not found; 1 anything unexpected.

Every command calls the same store operations and read models (store/views.py) as the
console, so both always agree.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from console.cli_commands import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    Context,
    UsageError,
    cmd_builds,
    cmd_campaign_activate,
    cmd_campaign_complete,
    cmd_campaign_create,
    cmd_campaign_lcg,
    cmd_campaign_list,
    cmd_campaign_show,
    cmd_console,
    cmd_database_create,
    cmd_database_list,
    cmd_demo,
    cmd_import_profiles,
    cmd_mailing_create,
    cmd_mailing_pause,
    cmd_profile_show,
    cmd_scheduler,
    cmd_segment_create,
    cmd_segment_file,
    cmd_segment_list,
    cmd_segment_refresh,
    cmd_status,
)

EVERY = re.compile(r"^\s*(\d+)\s*([smh])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

# --------------------------------------------------------------------------- arguments


def _every(value: str) -> int:
    match = EVERY.match(value)
    if not match or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: write a number with s, m or h, e.g. 15m")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def _when(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 datetime, e.g. 2026-12-01T10:00:00+00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # naive means UTC


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    # --db and --read-only are accepted before the command and after it; the values
    # after it win (SUPPRESS keeps the top-level value when they are absent).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="database URL or SQLite path (env CAMPAIGN_CONSOLE_DB)",
    )
    common.add_argument(
        "--read-only", action="store_true", default=argparse.SUPPRESS, help="look, never act"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument(
        "--wait", action="store_true", help="block until the builds this queues have ended"
    )

    parser = argparse.ArgumentParser(
        prog="campaign-console",
        description="Operator console for marketing campaigns with local control groups. "
        "Without a command it opens the console.",
    )
    parser.add_argument("--db", help="database URL or SQLite path (env CAMPAIGN_CONSOLE_DB)")
    parser.add_argument("--read-only", action="store_true", help="look, never act")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def leaf(group: Any, name: str, handler: Callable, parents: Sequence = (), **kw: Any):
        p = group.add_parser(name, parents=[common, *parents], **kw)
        p.set_defaults(handler=handler)
        return p

    demo = leaf(sub, "demo", cmd_demo, help="build the demo workspace")
    demo.add_argument(
        "--profiles", type=int, default=None, help="number of profiles (default 200000)"
    )
    demo.add_argument("--reset", action="store_true", help="drop everything and rebuild")
    demo.add_argument("--open", action="store_true", help="open the console afterwards")

    sched = leaf(sub, "scheduler", cmd_scheduler, help="run the scheduler in the foreground")
    sched.add_argument("--pool-size", type=int, default=None, help="builds run in parallel")

    # database
    database = sub.add_parser("database", help="profile databases").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    p = leaf(database, "create", cmd_database_create, [as_json], help="declare a database")
    p.add_argument("name")
    p.add_argument("--fields", default="", help="NAME:TYPE,... with TYPE text, int, float or date")
    leaf(database, "list", cmd_database_list, [as_json], help="list databases")

    # import
    imp = sub.add_parser("import", help="CSV imports").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    p = leaf(imp, "profiles", cmd_import_profiles, [as_json], help="upsert profiles from CSV")
    p.add_argument("--database", required=True)
    p.add_argument("file", metavar="FILE.csv", help="the CSV file, or - for standard input")

    # segment
    segment = sub.add_parser("segment", help="segments").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    p = leaf(segment, "create", cmd_segment_create, [as_json], help="create a segment")
    p.add_argument("name")
    p.add_argument("--database", help="required for a dynamic segment (--rule)")
    p.add_argument("--rule", help="dynamic segment rule, e.g. \"region = 'Moscow' and age < 30\"")
    schedule = p.add_mutually_exclusive_group()
    schedule.add_argument("--every", type=_every, help="refresh interval: 30s, 15m, 1h")
    schedule.add_argument("--cron", help='refresh schedule, e.g. "0 * * * *"')
    for action in ("add", "remove", "replace"):
        p = leaf(
            segment,
            action,
            cmd_segment_file,
            [as_json, wait],
            help=f"{action} members from a CSV with an external_id column",
        )
        p.set_defaults(file_action=action)
        p.add_argument("name")
        p.add_argument("file", metavar="FILE.csv", help="the CSV file, or - for standard input")
        p.add_argument(
            "--database", help="database of rows without a database column (see docs/cli.md)"
        )
    p = leaf(segment, "refresh", cmd_segment_refresh, [as_json, wait], help="refresh now")
    p.add_argument("name")
    leaf(segment, "list", cmd_segment_list, [as_json], help="list segments")

    # campaign
    campaign = sub.add_parser("campaign", help="campaigns").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    p = leaf(campaign, "create", cmd_campaign_create, [as_json], help="create a draft campaign")
    p.add_argument("name")
    p.add_argument("--database", required=True)
    p.add_argument("--segment", required=True)
    p.add_argument("--lcg", metavar="PERCENT", help="enable the LCG with this percent, e.g. 5.25")
    p.add_argument("--limit", type=int, help="maximum control group size")
    p.add_argument("--strata", type=_names, default=[], help="strata fields f1,f2")
    p.add_argument("--seed", type=int, help="assignment seed (default: random)")
    p = leaf(campaign, "activate", cmd_campaign_activate, [as_json, wait], help="activate")
    p.add_argument("name")
    p = leaf(campaign, "lcg", cmd_campaign_lcg, [as_json, wait], help="edit LCG settings")
    p.add_argument("name")
    p.add_argument("--percent", help="control share, 0 < p < 100, two decimals at most")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--limit", type=int, help="maximum control group size")
    limit.add_argument("--no-limit", action="store_true", help="remove the limit")
    strata = p.add_mutually_exclusive_group()
    strata.add_argument("--strata", type=_names, help="strata fields f1,f2")
    strata.add_argument("--no-strata", action="store_true", help="one stratum for everyone")
    toggle = p.add_mutually_exclusive_group()
    toggle.add_argument("--enable", action="store_true", help="enable the LCG (R5)")
    toggle.add_argument(
        "--disable", action="store_true", help="disable it: control moves to test (R7)"
    )
    p = leaf(campaign, "complete", cmd_campaign_complete, [as_json], help="complete (R8)")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm: completion is terminal")
    leaf(campaign, "list", cmd_campaign_list, [as_json], help="list campaigns")
    p = leaf(campaign, "show", cmd_campaign_show, [as_json], help="show one campaign")
    p.add_argument("name")

    # mailing
    mailing = sub.add_parser("mailing", help="mailings").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    p = leaf(mailing, "create", cmd_mailing_create, [as_json], help="create a mailing")
    p.add_argument("name")
    p.add_argument("--campaign", required=True)
    p.add_argument("--kind", required=True, choices=("broadcast", "regular", "trigger"))
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", type=_when, help="broadcast time, ISO 8601 (naive means UTC)")
    when.add_argument("--cron", help="regular schedule (crontab, UTC)")
    p.add_argument("--segment", help="send only to test members also in this segment")
    p.add_argument("--expand", action="store_true", help="audience expansion (R11)")
    for action in ("pause", "resume"):
        p = leaf(mailing, action, cmd_mailing_pause, [as_json], help=f"{action} a mailing")
        p.set_defaults(pause=action == "pause")
        p.add_argument("name")

    # profile, builds
    profile = sub.add_parser("profile", help="profiles").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    p = leaf(profile, "show", cmd_profile_show, [as_json], help="a profile's card")
    p.add_argument("external_id", metavar="EXTERNAL_ID")
    p.add_argument("--database", required=True)

    leaf(sub, "status", cmd_status, [as_json], help="scheduler health and builds in progress")

    p = leaf(sub, "builds", cmd_builds, [as_json], help="audience builds")
    p.add_argument("--campaign", help="only this campaign's builds")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    return parser


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.json = getattr(args, "json", False)
    handler = getattr(args, "handler", cmd_console)  # no command: the console
    ctx = Context(args)
    try:
        return _run(handler, args, ctx)
    finally:
        ctx.close()


def _run(handler: Callable, args: argparse.Namespace, ctx: Context) -> int:
    from store.errors import DomainError, NotFoundError, StoreError

    try:
        return handler(args, ctx)
    except UsageError as exc:
        prog = " ".join(
            filter(None, ["campaign-console", args.command, getattr(args, "subcommand", None)])
        )
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotFoundError as exc:
        print(f"not found: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except DomainError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        _audit_refusal(ctx, str(exc))
        return exc.exit_code
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a build interrupted here resumes from its checkpoint
        return 130
    except BrokenPipeError:  # e.g. `| head`
        return EXIT_OK
    except Exception as exc:  # the contract: anything unexpected is exit 1, with a reason
        if os.environ.get("CAMPAIGN_CONSOLE_DEBUG"):
            raise
        print(f"unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED


def _audit_refusal(ctx: Context, reason: str) -> None:
    if ctx.audit_action is None or ctx._engine is None:
        return
    from store.audit import record_refusal

    target_type, target_name = ctx.audit_target
    try:
        record_refusal(ctx.engine, ctx.actor, ctx.audit_action, target_type, target_name, reason)
    except Exception as exc:  # the refusal stands even if it cannot be logged
        print(f"warning: could not audit the refusal: {exc}", file=sys.stderr)
