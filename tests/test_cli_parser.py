"""The CLI builds the parser of the one command a line names, not of all of them (issue 14
target 6, start-up): that parser must read every line exactly as the full parser does,
and anything else (help, no command, errors) gets the full parser."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator

import pytest

from console.cli.args import Builder
from console.cli.main import CONSOLE, REGISTER, build_parser, main, named_command


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return found[0] if found else None


def _helps(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple]:
    """(command path, help text) of a parser and every parser below it."""
    yield path, parser.format_help()
    sub = _subparsers(parser)
    for name, child in sub.choices.items() if sub else ():
        yield from _helps(child, (*path, name))


def test_register_names_exactly_the_commands_each_module_registers():
    for module, function, commands in REGISTER:
        sub = argparse.ArgumentParser().add_subparsers()
        getattr(importlib.import_module(f"console.cli.{module}"), function)(sub, Builder())
        assert tuple(sub.choices) == commands, (module, function)
    names = [command for _, _, commands in REGISTER for command in commands]
    assert len(names) == len(set(names))


def test_the_parser_of_one_command_reads_it_as_the_full_parser_does():
    full = _subparsers(build_parser())
    assert full is not None
    for _, _, commands in REGISTER:
        for command in commands:
            one = _subparsers(build_parser(command))
            assert one is not None and command in one.choices
            assert dict(_helps(one.choices[command], (command,))) == dict(
                _helps(full.choices[command], (command,))
            )


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["campaign", "list", "--json"], "campaign"),
        (["--db", "w.db", "campaign", "list"], "campaign"),
        (["--db=w.db", "--read-only", "status"], "status"),
        (["--read", "events", "import", "e.csv"], "events"),  # abbreviated, as argparse allows
        (["campaign", "--help"], "campaign"),  # the command's own help: same parser
        (["--db", "campaign", "list"], None),  # "campaign" is the value of --db
        ([], CONSOLE),  # the console
        (["--db", "w.db"], CONSOLE),
        (["--read-only", "--db=w.db"], CONSOLE),
        (["-h"], None),
        (["--help", "campaign"], None),  # the top-level help lists every command
        (["--db"], None),
        (["--json", "campaign", "list"], None),  # not a top-level option
        (["campagin", "list"], None),
    ],
)
def test_the_named_command_is_read_as_the_full_parser_reads_it(argv, command):
    assert named_command(argv) == command


@pytest.mark.parametrize("argv", [[], ["--db", "w.db"], ["--read-only"], ["--read", "--db=x"]])
def test_a_console_line_gets_a_parser_without_commands_that_reads_it_as_the_full_one(argv):
    """Issue 14 target 5: the console's launch builds no command parser (and imports no
    CLI module for one), yet reads its global options exactly as the full parser does."""
    console = build_parser(CONSOLE)
    assert not _subparsers(console).choices
    assert vars(console.parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_help_and_errors_come_from_the_full_parser(capsys):
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for _, _, commands in REGISTER:
        for command in commands:
            assert command in help_text
    assert main(["campagin", "list"]) == 2
    assert "invalid choice: 'campagin'" in capsys.readouterr().err
    assert main(["campaign", "lst"]) == 2
    assert "invalid choice: 'lst'" in capsys.readouterr().err


def test_an_unknown_option_is_reported_with_the_usage_of_its_command(capsys):
    assert main(["campaign", "show", "Spring", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "usage: campaign-console campaign show " in err
    assert "campaign-console campaign show: error: unrecognized arguments: --bogus" in err
    assert main(["--bogus"]) == 2  # before any command: the top-level usage, as before
    err = capsys.readouterr().err
    assert "usage: campaign-console [-h]" in err
    assert "unrecognized arguments: --bogus" in err
