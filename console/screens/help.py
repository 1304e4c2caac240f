"""`?`: every binding of the screen underneath, with its id for remapping (config [keys])."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from console.widgets.table import Table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close", id="help_close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, bindings: list[tuple[str, str, str]], read_only: bool) -> None:
        super().__init__(classes="dialog-screen")
        self.binding_rows = bindings
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            yield Label("Keys (escape closes)", classes="dialog-title")
            table = Table(id="help-keys", cursor_type="row", show_cursor=False)
            table.add_columns("Key", "Does", "Id (config keys)")
            for row in self.binding_rows:
                table.add_row(*row)
            yield table
            note = "ctrl+p opens the command palette · remap keys in config.toml, table \\[keys]"
            if self.read_only:
                note += " · read-only: actions that change campaigns are not available"
            yield Static(note, classes="dialog-body")

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def action_close(self) -> None:
        self.dismiss(None)
