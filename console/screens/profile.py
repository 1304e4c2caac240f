"""The profile card: find a profile by external id; fields, memberships, full history (R12)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from sqlmodel import Session
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Label, Select, Static

from console.keymap import PROFILE_BINDINGS
from console.literal import literal_lines
from console.live import LiveScreen
from console.screens.campaign import set_text, sync_table
from console.widgets.progress import when
from console.widgets.status_header import StatusHeader
from store.errors import StoreError
from store.names import printable

MEMBERSHIP_COLUMNS = ("Campaign", "Group", "Joined", "Left", "Source")
EVENT_COLUMNS = ("At", "Event", "Campaign / segment", "Group", "Build", "By")


class ProfileScreen(LiveScreen):
    BINDINGS = PROFILE_BINDINGS
    AUTO_FOCUS = "#external-id"

    def __init__(
        self, databases: list[str], database: str | None = None, external_id: str | None = None
    ) -> None:
        super().__init__(id="profile-screen")
        self.databases = databases
        self.database = database or (databases[0] if databases else None)
        self.external_id: str | None = external_id

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        with Horizontal(id="profile-search"):
            if len(self.databases) > 1:
                yield Select(
                    [(name, name) for name in self.databases],
                    value=self.database,
                    allow_blank=False,
                    id="database",
                )
            yield Input(
                self.external_id or "", placeholder="external id, then enter", id="external-id"
            )
        with VerticalScroll(id="card"):
            yield Static("Type an external id and press enter.", id="fields", classes="panel")
            yield Label("Campaign memberships", classes="section")
            yield DataTable(id="memberships", cursor_type="row", show_cursor=False)
            yield Label("History (oldest first)", classes="section")
            yield DataTable(id="events", cursor_type="row", show_cursor=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        for table_id, columns in (("#memberships", MEMBERSHIP_COLUMNS), ("#events", EVENT_COLUMNS)):
            table = self.query_one(table_id, DataTable)
            for label in columns:
                table.add_column(label, key=label)
        self.query_one("#external-id", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.database = str(event.value)
        self.app.poller.poll_now()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.external_id = event.value.strip() or None
        set_text(self.query_one("#fields", Static), "looking up…")
        self.app.poller.poll_now()

    # ------------------------------------------------------------------ live data
    def read_snapshot(self, session: Session) -> Any:
        if not self.external_id or not self.database:
            return None
        from store.history import profile_card

        try:
            return profile_card(session, self.database, self.external_id)
        except StoreError as exc:
            return exc

    def apply_snapshot(self, card: Any) -> None:
        fields = self.query_one("#fields", Static)
        if card is None:
            return
        if isinstance(card, Exception):
            set_text(fields, literal_lines(f"✗ {card}", style="bold red"))
            sync_table(self.query_one("#memberships", DataTable), [])
            sync_table(self.query_one("#events", DataTable), [])
            return
        text = Text()
        text.append(printable(card.external_id), style="bold")
        text.append(printable(f" · database {self.database}"))
        if card.in_gcg:
            text.append(" · in the global control group (R1)", style="bold yellow")
        text.append("\n")
        text.append(printable(" · ".join(f"{k}={v}" for k, v in card.fields.items())))
        set_text(fields, text)
        sync_table(
            self.query_one("#memberships", DataTable),
            [
                (
                    str(i),
                    (m.campaign, m.group, when(m.joined_at), when(m.left_at), m.source or ""),
                )
                for i, m in enumerate(card.memberships)
            ],
        )
        sync_table(
            self.query_one("#events", DataTable),
            [
                (
                    str(i),
                    (
                        when(e.at),
                        e.kind,
                        e.campaign or e.segment or "",
                        e.group or "",
                        "" if e.build is None else f"#{e.build}",
                        e.actor or "",
                    ),
                )
                for i, e in enumerate(card.events)
            ],
        )

    def action_back(self) -> None:
        if self.app.screen_stack[-2:-1]:
            self.app.pop_screen()

    def action_copy_id(self) -> None:
        if self.external_id:
            self.app.copy_to_clipboard(self.external_id)
            self.app.notify(f"copied {self.external_id!r}")
