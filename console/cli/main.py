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
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from console.cli.args import Builder
from console.cli.context import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    Context,
    UsageError,
)

# --------------------------------------------------------------------------- arguments

# Each entry: a module of console/cli/, its function that registers commands on the
# top-level subparsers, and the commands it registers; in help order. A command line that
# names one command gets a parser built from its entry alone, so it does not import the
# other modules and build their parsers, a tenth of `campaign list`'s start-up (issue 14
# target 6). tests/test_cli.py holds the command names equal to what each registers.
REGISTER: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("workspace", "register", ("init", "demo", "scheduler")),
    ("database", "register", ("database",)),
    ("profile", "register_import", ("import",)),
    ("segment", "register", ("segment",)),
    ("campaign", "register", ("campaign",)),
    ("mailing", "register", ("mailing",)),
    ("event", "register", ("event", "events")),  # R11b
    ("profile", "register", ("profile",)),
    ("gcg", "register", ("gcg",)),  # R11a
    ("builds", "register", ("status", "builds")),
    ("gateway", "register", ("gateway", "audit")),
)


# named_command's answer for a line that names no command and asks for no help (the
# console, possibly with global options): its parser registers no command at all, which
# reads such a line as the full parser does and spares the console's launch the import of
# every CLI module (issue 14 target 5).
CONSOLE = ""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `command` only of the entry of REGISTER that
    defines it (none for CONSOLE): a line naming that command parses exactly as with the
    full parser."""
    parser = _Parser(
        prog="campaign-console",
        description="Operator console for marketing campaigns with local control groups. "
        "Without a command it opens the console.",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli = Builder()
    for module, function, commands in REGISTER:
        if command is None or command in commands:
            register = getattr(importlib.import_module(f"console.cli.{module}"), function)
            register(sub, cli)
    return parser


class _Parser(argparse.ArgumentParser):
    """An argument no command takes is reported by the command it was given to, with that
    command's usage: argparse leaves it to the top-level parser, whose usage lists only
    `COMMAND ...`. Subparsers are of the parser's own class."""

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL or SQLite path (env CAMPAIGN_CONSOLE_DB)")
    parser.add_argument("--read-only", action="store_true", help="look, never act")


class _Unusual(Exception):
    """A command line the full parser should answer (help, an error, no command)."""


class _CommandProbe(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # never print or exit: the full parser will
        raise _Unusual(message)


def named_command(argv: list[str]) -> str | None:
    """The command a command line names, read as the full parser reads it (the global
    options, then the first word); CONSOLE when it is only global options; None when it
    asks for help before a command, or is malformed: the full parser answers those."""
    probe = _CommandProbe(prog="campaign-console", add_help=False)
    _global_options(probe)
    probe.add_argument("command", nargs="?")
    probe.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        found, unknown = probe.parse_known_args(argv)
    except _Unusual:
        return None
    if unknown:
        return None
    if found.command is None:
        return CONSOLE
    known = any(found.command in commands for _, _, commands in REGISTER)
    return found.command if known else None


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(named_command(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.json = getattr(args, "json", False)
    handler = getattr(args, "handler", None)
    if handler is None:  # no command: the console
        from console.cli.workspace import cmd_console

        handler = cmd_console
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
        problem = ctx.unreachable_problem(exc)  # the server went away mid-command
        if problem is not None:
            print(f"error: {printable_lines(str(problem))}", file=sys.stderr)
            return problem.exit_code
        print(f"unexpected error: {printable_lines(public_reason(exc))}", file=sys.stderr)
        return EXIT_UNEXPECTED
