"""The audit screen (`A`): recent audit entries, newest first, with a filter.

The same read model as `campaign-console audit` (store.audit.audit_log): who (user or
SSH key-id, and the key's fingerprint), from where, what, on what, and the outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Input

from console.keymap import AUDIT_BINDINGS, open_filter
from console.live import LiveScreen
from console.screens.campaign import sync_table
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table
from store.audit import AuditLine, audit_log
from store.names import printable

if TYPE_CHECKING:
    from sqlmodel import Session

# Outcome beside the time: "was it refused?" is why one opens this screen, and at 80
# columns it used to be three → away. The time stays put while the table scrolls.
COLUMNS = ("At", "Outcome", "Actor", "Action", "Target", "From", "Key", "Details")
RECENT = 200


def audit_cells(line: AuditLine) -> tuple:
    # Actor, targets and details are user data: plain Text, never markup, control
    # characters escaped (store/names.py).
    refused = line.outcome != "ok"
    return (
        line.at.astimezone().strftime("%m-%d %H:%M:%S"),
        Text(line.outcome, style="bold red" if refused else ""),
        Text(printable(f"{line.actor} ({line.role})")),
        Text(line.action),
        Text(printable(line.target)),
        Text(printable(line.origin)),
        Text(line.key_fingerprint or ""),
        Text(printable(line.details_text[:120])),
    )


def matches(line: AuditLine, needle: str) -> bool:
    haystack = " ".join(
        (line.actor, line.role, line.action, line.target, line.outcome, line.origin,
         line.key_fingerprint or "", line.details_text)
    ).lower()  # fmt: skip
    return all(word in haystack for word in needle.lower().split())


class AuditScreen(LiveScreen):
    BINDINGS = AUDIT_BINDINGS
    AUTO_FOCUS = "#audit"

    def __init__(self) -> None:
        super().__init__(id="audit-screen")
        self.lines: list[AuditLine] = []
        self.needle = ""

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        yield Input(placeholder="filter: actor, action, target, outcome, key…", id="filter")
        yield Table(id="audit", cursor_type="row", zebra_stripes=True, fixed_columns=1)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#audit", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)
        table.focus()

    def read_snapshot(self, session: Session) -> list[AuditLine]:
        return audit_log(session, limit=RECENT)

    def apply_snapshot(self, lines: list[AuditLine]) -> None:
        self.lines = lines
        self.render_rows()

    def render_rows(self) -> None:
        rows = [
            (str(line.id), audit_cells(line))
            for line in self.lines
            if not self.needle or matches(line, self.needle)
        ]
        sync_table(self.query_one("#audit", DataTable), rows)

    def action_filter(self) -> None:
        open_filter(self.query_one("#filter", Input))

    def on_input_changed(self, event: Input.Changed) -> None:
        self.needle = event.value.strip()
        self.render_rows()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one("#audit", DataTable).focus()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus or box.value:
            box.value = ""
            self.query_one("#audit", DataTable).focus()
            return
        self.app.pop_screen()
