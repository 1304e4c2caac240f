"""Confirmation dialogs: the safe choice is focused (k9s habit), y/n/escape answer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.literal import literal, literal_lines
from store.names import printable


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no question; `No` has the focus so a stray enter changes nothing."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n", "answer(False)", "No", id="confirm_no"),
        Binding("escape", "answer(False)", "Cancel", id="confirm_cancel"),
    ]

    def __init__(self, title: str, explanation: str, yes_label: str = "Yes") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.explanation = explanation
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(literal(self.title_text), classes="dialog-title")
            yield Static(literal_lines(self.explanation), classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes_label} (y)", id="yes", variant="warning", compact=True)
                yield Button("No (n)", id="no", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TypeToConfirmScreen(ModalScreen[bool]):
    """For what cannot be undone: the operator types the exact name to confirm."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm_cancel")]

    def __init__(self, title: str, explanation: str, expected: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.explanation = explanation
        self.expected = expected

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(literal(self.title_text), classes="dialog-title")
            yield Static(literal_lines(self.explanation), classes="dialog-body")
            yield Input(placeholder=printable(self.expected), id="typed", compact=True)
            yield Static("", id="mismatch", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (esc)", id="cancel", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value == self.expected:
            self.dismiss(True)
        else:
            self.query_one("#mismatch", Static).update(
                literal(f"type the campaign name exactly ({self.expected}) or press escape")
            )

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
