"""The LCG edit form: percent, limit, strata; previews the split before anything applies.

The preview runs `store.campaigns.preview_lcg` (no writes) in a thread worker on every
change, so the operator sees the target, each stratum's quota and any stratification
warning (R10) before pressing Apply. Applying is the caller's job (`edit_lcg`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import RenderableType
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, SelectionList, Static

from console.literal import literal


@dataclass(frozen=True)
class LcgChange:
    percent: str
    limit: int | None
    strata: list[str]


class LcgFormError(ValueError):
    """Input the form itself can reject before asking the store."""


def parse_limit(text: str) -> int | None:
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):  # "²" and "١" are digits to str.isdigit
        raise LcgFormError(f"limit must be a whole number of profiles (or empty), not {text!r}")
    return int(text)


PreviewFn = Callable[[LcgChange], RenderableType]


class StrataList(SelectionList[str]):
    """The strata fields: space toggles one; enter applies the form, as everywhere in it
    (SelectionList's own enter toggled the highlighted field, unseen, and a later ctrl+s
    applied that change)."""

    BINDINGS = [Binding("enter", "screen.apply", "Apply", show=False)]


def strata_label(selected: list[str]) -> str:
    return f"Strata: {', '.join(selected) or 'none'} (tab here, space toggles)"


class LcgFormScreen(ModalScreen[LcgChange | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="lcg_cancel"),
        Binding("ctrl+s", "apply", "Apply", id="lcg_apply"),
    ]

    def __init__(
        self,
        campaign: str,
        *,
        percent: str,
        limit: int | None,
        strata: list[str],
        fields: list[str],
        preview: PreviewFn,
        note: str = "",
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.campaign = campaign
        self.initial_percent = percent
        self.initial_limit = limit
        self.initial_strata = strata
        self.fields = fields
        self.preview_fn = preview
        self.note = note
        self.previewing: LcgChange | None = None  # what the preview on screen must be of

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog lcg-dialog"):
            yield Label(literal(f"LCG of {self.campaign}"), classes="dialog-title")
            if self.note:
                yield Static(self.note, classes="dialog-body")
            with Horizontal(classes="lcg-inputs"):
                yield Label("Percent")
                yield Input(
                    self.initial_percent, id="percent", placeholder="e.g. 5.25", compact=True
                )
                yield Label("Limit")
                yield Input(
                    "" if self.initial_limit is None else str(self.initial_limit),
                    id="limit",
                    placeholder="none",
                    compact=True,
                )
            # The selection in words as well: the list marks it by colour only (NO_COLOR).
            yield Label(literal(strata_label(self.initial_strata)), id="strata-label")
            yield StrataList(
                *[(name, name, name in self.initial_strata) for name in self.fields],
                id="strata",
                compact=True,
            )
            with VerticalScroll(id="preview-box"):
                yield Static("previewing…", id="preview")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply (ctrl+s)", id="apply", variant="warning", compact=True)
                yield Button("Cancel (esc)", id="cancel", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#percent", Input).focus()
        self.refresh_preview()

    def current_change(self) -> LcgChange:
        return LcgChange(
            percent=self.query_one("#percent", Input).value.strip(),
            limit=parse_limit(self.query_one("#limit", Input).value),
            strata=list(self.query_one("#strata", SelectionList).selected),
        )

    def on_input_changed(self, _event: Input.Changed) -> None:
        self.refresh_preview()

    def on_selection_list_selected_changed(self, _event: SelectionList.SelectedChanged) -> None:
        selected = list(self.query_one("#strata", SelectionList).selected)
        self.query_one("#strata-label", Label).update(literal(strata_label(selected)))
        self.refresh_preview()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.action_apply()

    def refresh_preview(self) -> None:
        try:
            change = self.current_change()
        except LcgFormError as exc:
            self.previewing = None
            self.query_one("#preview", Static).update(literal(f"✗ {exc}", style="bold red"))
            return
        self.previewing = change
        self._preview(change)

    @work(thread=True, exclusive=True, group="lcg-preview", exit_on_error=False)
    def _preview(self, change: LcgChange) -> None:
        renderable = self.preview_fn(change)
        self.app.call_from_thread(self._show_preview, change, renderable)

    def _show_preview(self, change: LcgChange, renderable: RenderableType) -> None:
        # A slow preview of an earlier value must not replace the one of the value on
        # screen (or its ✗): `exclusive` cancels a worker, not a thread already running.
        if self.is_attached and change == self.previewing:
            self.query_one("#preview", Static).update(renderable)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.action_apply()
        else:
            self.action_cancel()

    def action_apply(self) -> None:
        try:
            self.dismiss(self.current_change())
        except LcgFormError as exc:
            self.notify(str(exc), title="LCG not applied", severity="error")

    def action_cancel(self) -> None:
        self.dismiss(None)
