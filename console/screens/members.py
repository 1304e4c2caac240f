"""A campaign's members (issue 13 §1): the whole audience, filtered, a page at a time.

Pages come from store.members.member_page (keyset: `n` next, `N` previous), read in a
thread worker so a slow page never freezes input; the screen is not polled (a page
stays still while the operator reads it; `n`/filters read again). `enter` opens the
profile card of the member under the cursor.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Select, Static

from console.keymap import MEMBERS_BINDINGS, after_keys_typed_ahead, open_filter
from console.literal import literal, literal_lines
from console.screens.campaign import set_text
from console.widgets.progress import when
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table, cursor_key
from store.errors import StoreError
from store.members import MemberFilter, MemberPage, member_page, parse_stratum
from store.views import read_session

COLUMNS = ("External id", "Group", "Stratum", "Joined", "Source", "Cohort")
GROUP_CHOICES = [("test + control", "all"), ("test", "test"), ("control", "control")]


class MembersScreen(Screen):
    BINDINGS = MEMBERS_BINDINGS
    AUTO_FOCUS = "#members"

    def __init__(self, campaign: str) -> None:
        super().__init__(id="members-screen")
        self.campaign_name = campaign
        self.filter = MemberFilter()
        self.cursors: list[str | None] = [None]  # `after` of each page shown so far
        self.page: MemberPage | None = None
        self.loads = 0  # pages applied, for tests

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        with Horizontal(id="member-filters"):
            yield Select(GROUP_CHOICES, value="all", allow_blank=False, id="member-group")
            yield Input(placeholder="stratum: field=value,…", id="member-stratum")
            yield Input(placeholder="external id prefix", id="member-prefix")
        yield Static(f"Members of {self.campaign_name} – loading…", id="members-status")
        yield Table(id="members", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#members", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)
        self.load()

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        flt, after = self.filter, self.cursors[-1]
        engine, name = self.app.engine, self.campaign_name

        def read() -> None:
            try:
                with read_session(engine) as session:
                    result: MemberPage | StoreError = member_page(session, name, flt, after=after)
            except StoreError as exc:
                result = exc
            self.app.call_from_thread(self.show, result)

        self.run_worker(read, name="members-page", group="members", thread=True, exclusive=True)

    def show(self, page: MemberPage | StoreError) -> None:
        status = self.query_one("#members-status", Static)
        table = self.query_one("#members", DataTable)
        self.loads += 1
        if isinstance(page, StoreError):
            set_text(status, literal_lines(f"✗ {page}", style="bold red"))
            table.clear()
            self.page = None
            return
        self.page = page
        table.clear()
        for r in page.rows:
            table.add_row(
                literal(r.external_id),
                r.group,
                literal(r.stratum_label),
                when(r.joined_at),
                r.source,
                "" if r.cohort is None else str(r.cohort),
                key=r.external_id,
            )
        if page.rows and page.rows[0].stratum_label:  # an example this campaign has
            example = f"stratum, e.g. {page.rows[0].stratum_label}"
            self.query_one("#member-stratum", Input).placeholder = example
        number = len(self.cursors)
        text = Text()
        text.append(literal(f"Members of {page.campaign}", style="bold"))
        if page.matching is not None:
            text.append(f" · {page.matching:,} match")
        text.append(f" · page {number}")
        if page.rows:
            text.append(literal(f": {page.rows[0].external_id} … {page.rows[-1].external_id}"))
        else:
            text.append(": no members match")
        if page.next_after is not None:
            text.append(" · n next", style="dim")
        if number > 1:
            text.append(" · N previous", style="dim")
        set_text(status, text)

    # ------------------------------------------------------------------ actions
    def apply_filters(self) -> None:
        group = self.query_one("#member-group", Select).value
        stratum = self.query_one("#member-stratum", Input).value
        prefix = self.query_one("#member-prefix", Input).value.strip()
        try:
            pairs = parse_stratum(stratum)
        except StoreError as exc:
            self.show(exc)
            return
        self.filter = MemberFilter(
            group=None if group == "all" else str(group), stratum=pairs, prefix=prefix
        )
        self.cursors = [None]
        self.load()

    def on_select_changed(self, _event: Select.Changed) -> None:
        if self.loads:  # not the Select's own initial value
            self.apply_filters()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.apply_filters()
        self.query_one("#members", DataTable).focus()

    def action_filter(self) -> None:
        open_filter(self.query_one("#member-prefix", Input))

    def action_next_page(self) -> None:
        if self.page is not None and self.page.next_after is not None:
            self.cursors.append(self.page.next_after)
            self.load()

    def action_previous_page(self) -> None:
        if len(self.cursors) > 1:
            self.cursors.pop()
            self.load()

    def selected_external_id(self) -> str | None:
        if self.page is None or not self.page.rows:
            return None
        return cursor_key(self.query_one("#members", DataTable))

    def action_open_profile(self) -> None:
        after_keys_typed_ahead(self, self._open_profile)  # enter is a priority binding

    def _open_profile(self) -> None:
        focused = self.focused
        if isinstance(focused, Input):  # enter in a filter box applies the filters
            self.apply_filters()
            self.query_one("#members", DataTable).focus()
            return
        external_id = self.selected_external_id()
        if external_id is not None and self.page is not None:
            self.app.open_profile(self.page.database, external_id)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._open_profile()

    def action_back(self) -> None:
        self.app.pop_screen()
