"""The Textual operator console."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header

from store.actors import Actor
from store.db import describe_url, open_store
from store.views import campaign_list

COLUMNS = ("Campaign", "Status", "Segment", "Members", "Test", "Control", "LCG", "Warn", "Paused")


class CampaignConsole(App):
    TITLE = "campaign-console"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, db_url: str, actor: Actor) -> None:
        super().__init__()
        self.db_url = db_url
        self.actor = actor
        self.engine = open_store(db_url)
        self.sub_title = f"{describe_url(db_url)} · {actor.user} ({actor.role})"

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="campaigns", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        from sqlmodel import Session

        with Session(self.engine) as session:
            for row in campaign_list(session):
                table.add_row(
                    row["name"],
                    row["status"],
                    row["segment"],
                    f"{row['members']:,}",
                    f"{row['test']:,}",
                    f"{row['control']:,}",
                    row["lcg"],
                    str(row["warnings"] or ""),
                    str(row["paused_mailings"] or ""),
                    key=row["name"],
                )


def run_console(db_url: str, actor: Actor) -> int:
    CampaignConsole(db_url, actor).run()
    return 0
