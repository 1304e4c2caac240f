"""Command line entry point: the console by default, scriptable subcommands otherwise.

No Textual import at module level: commands other than the console start fast.
The command names, flags, exit codes and JSON keys are a contract (docs/cli.md).
Exit codes: 0 success; 2 usage error; 3 refused by a domain rule (reason on stderr,
nothing changed, refusal audited); 4 not found; 1 anything unexpected.

Every command calls the same store operations and read models (store/views.py) as the
console, so both always agree. One module per noun (campaign.py, segment.py, ...) defines
the commands and a `register(sub, cli)` that adds their parsers; REGISTER lists them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from console.cli import (
    builds,
    campaign,
    database,
    event,
    gcg,
    mailing,
    profile,
    segment,
    workspace,
)
from console.cli import gateway as gateway_command
from console.cli.args import Builder
from console.cli.context import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    Context,
    UsageError,
)
from console.cli.workspace import cmd_console

# --------------------------------------------------------------------------- arguments

# Each entry registers its commands on the top-level subparsers, in help order.
REGISTER: tuple[Callable[[Any, Builder], None], ...] = (
    workspace.register,  # demo, scheduler
    database.register,  # database ...
    profile.register_import,  # import profiles
    segment.register,  # segment ...
    campaign.register,  # campaign ...
    mailing.register,  # mailing ...
    event.register,  # event send, events import (R11b)
    profile.register,  # profile show
    gcg.register,  # gcg ... (R11a)
    builds.register,  # status, builds
    gateway_command.register,  # gateway, audit
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-console",
        description="Operator console for marketing campaigns with local control groups. "
        "Without a command it opens the console.",
    )
    parser.add_argument("--db", help="database URL or SQLite path (env CAMPAIGN_CONSOLE_DB)")
    parser.add_argument("--read-only", action="store_true", help="look, never act")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli = Builder()
    for register in REGISTER:
        register(sub, cli)
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
    from store.errors import DomainError, NotFoundError, StoreError, public_reason
    from store.names import printable_lines  # messages may quote names and imported data

    try:
        return handler(args, ctx)
    except UsageError as exc:
        prog = " ".join(
            filter(None, ["campaign-console", args.command, getattr(args, "subcommand", None)])
        )
        print(f"{prog}: error: {printable_lines(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except NotFoundError as exc:
        print(f"not found: {printable_lines(str(exc))}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except DomainError as exc:
        print(f"refused: {printable_lines(str(exc))}", file=sys.stderr)  # store audited it
        return exc.exit_code
    except StoreError as exc:
        print(f"error: {printable_lines(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a build interrupted here resumes from its checkpoint
        return 130
    except BrokenPipeError:  # e.g. `| head`
        return EXIT_OK
    except Exception as exc:  # the contract: anything unexpected is exit 1, with a reason
        if os.environ.get("CAMPAIGN_CONSOLE_DEBUG"):
            raise
        print(f"unexpected error: {printable_lines(public_reason(exc))}", file=sys.stderr)
        return EXIT_UNEXPECTED
