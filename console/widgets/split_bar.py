"""A bar of a campaign's split between the test group and the local control group."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class SplitBar(Static):
    """`test ███████████░░ control`, with counts; text labels keep it readable without colour."""

    def show(self, test: int, control: int, target: int | None = None) -> None:
        self.update(self.render_split(test, control, target, max(20, self.size.width - 2)))

    @staticmethod
    def render_split(test: int, control: int, target: int | None, width: int) -> Text:
        total = test + control
        line = Text(no_wrap=True, overflow="ellipsis")
        if not total:
            line.append("no members yet", style="dim")
            return line
        width = max(10, width - 36)
        control_cells = round(width * control / total)
        if control and not control_cells:
            control_cells = 1  # never hide a non-empty control group
        line.append(f"test {test:,} ", style="bold")
        line.append("█" * (width - control_cells), style="green")
        line.append("▒" * control_cells, style="yellow")
        line.append(f" control {control:,}", style="bold")
        if target:
            line.append(f" (target {target:,})", style="dim")
        return line
