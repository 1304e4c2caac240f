"""The scriptable command line (`campaign-console`): one module per noun, each with a
`register(sub, cli)` listed in console/cli/main.py. No Textual import unless the console
opens. See docs/cli.md."""

from console.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
