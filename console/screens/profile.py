"""The profile card: find a profile by external id; fields, memberships, full history (R12)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Label, Select, Static

from console.keymap import PROFILE_BINDINGS
from console.literal import literal_cells, literal_lines
from console.live import LiveScreen
from console.screens.campaign import set_text, sync_table
from console.widgets.progress import when
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table
from store.errors import StoreError
from store.names import printable

if TYPE_CHECKING:
    from sqlmodel import Session

MEMBERSHIP_COLUMNS = ("Campaign", "Group", "Why", "Joined", "Left", "Source")
EVENT_COLUMNS = ("At", "Event", "Campaign / segment", "Group", "Build", "By")


class ProfileScreen(LiveScreen):
    BINDINGS = PROFILE_BINDINGS
    AUTO_FOCUS = "#external-id"

    def __init__(
        self, databases: list[str], database: str | None = None, external_id: str | None = None
    ) -> None:
        super().__init__()  # no id: a card opened from members may sit above another
        self.databases = databases
        self.database = database or (databases[0] if databases else None)
        self.external_id: str | None = external_id
        self.explain_in: str | None = None  # the campaign chosen in "Why not in …"
        self.campaign_choices: list[str] = []

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
            yield Table(id="memberships", cursor_type="row", show_cursor=False)
            with Horizontal(id="explain-bar"):
                yield Label("Why (not) in", classes="section")
                yield Select([], prompt="choose a campaign", id="explain-campaign")
            yield Static("", id="explanation", classes="panel")
            yield Label("History (oldest first)", classes="section")
            yield Table(id="events", cursor_type="row", show_cursor=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        for table_id, columns in (("#memberships", MEMBERSHIP_COLUMNS), ("#events", EVENT_COLUMNS)):
            table = self.query_one(table_id, DataTable)
            for label in columns:
                table.add_column(label, key=label)
        self.query_one("#external-id", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "explain-campaign":
            self.explain_in = None if event.value is Select.BLANK else str(event.value)
        else:
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
        from store.explain import card_explanations
        from store.history import profile_card

        try:
            card = profile_card(session, self.database, self.external_id)
            why = card_explanations(
                session,
                self.database,
                self.external_id,
                [m.campaign for m in card.memberships],
                self.explain_in,
            )
        except StoreError as exc:
            return exc
        return card, why

    def apply_snapshot(self, snapshot: Any) -> None:
        fields = self.query_one("#fields", Static)
        if snapshot is None:
            return
        if isinstance(snapshot, Exception):
            set_text(fields, literal_lines(f"✗ {snapshot}", style="bold red"))
            sync_table(self.query_one("#memberships", DataTable), [])
            sync_table(self.query_one("#events", DataTable), [])
            set_text(self.query_one("#explanation", Static), "")
            return
        card, why = snapshot
        self.show_explanations(why)
        text = Text()
        text.append(printable(card.external_id), style="bold")
        text.append(printable(f" · database {self.database}"))
        if card.in_gcg:
            text.append(" · in the global control group (R1)", style="bold yellow")
        text.append("\n")
        text.append(printable(" · ".join(f"{k}={v}" for k, v in card.fields.items())))
        set_text(fields, text)
        last = {m.campaign: i for i, m in enumerate(card.memberships)}
        sync_table(
            self.query_one("#memberships", DataTable),
            [
                (
                    str(i),
                    literal_cells(
                        (
                            m.campaign,
                            m.group,
                            # the explanation belongs to the campaign's latest interval
                            why.by_campaign[m.campaign].summary
                            if m.campaign in why.by_campaign and i == last[m.campaign]
                            else "",
                            when(m.joined_at),
                            when(m.left_at),
                            m.source or "",
                        )
                    ),
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
                        # R11b: "suppressed: control", "delivered"
                        f"{e.kind}: {e.reason}" if e.reason else e.kind,
                        " / ".join(filter(None, (e.campaign or e.segment, e.mailing))),
                        e.group or "",
                        "" if e.build is None else f"#{e.build}",
                        e.actor or "",
                    ),
                )
                for i, e in enumerate(card.events)
            ],
        )

    def show_explanations(self, why: Any) -> None:
        """Issue 13 §2: the explanation in the campaign chosen from the database's list."""
        choice = self.query_one("#explain-campaign", Select)
        if why.campaigns != self.campaign_choices:
            self.campaign_choices = list(why.campaigns)
            choice.set_options([(name, name) for name in why.campaigns])
            if self.explain_in in why.campaigns:
                choice.value = self.explain_in
        panel = self.query_one("#explanation", Static)
        e = why.chosen
        if e is None:
            set_text(
                panel,
                Text("choose a campaign to see why the profile is or is not in it", style="dim"),
            )
            return
        text = Text()
        text.append(printable(f"{e.campaign}: {e.state}"), style="bold")
        if e.group:
            text.append(f", group {e.group}")
        text.append(f"\n{e.reason}", style="bold yellow")
        details = " · ".join(f"{k} {v}" for k, v in e.detail.items() if v is not None)
        if details:
            text.append(printable(f"  {details}"))
        set_text(panel, text)

    def action_back(self) -> None:
        if self.app.screen_stack[-2:-1]:
            self.app.pop_screen()

    def action_copy_id(self) -> None:
        if self.external_id:
            self.app.copy_to_clipboard(self.external_id)
            self.app.notify(f"copied {self.external_id!r}")
