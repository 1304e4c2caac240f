"""A bar of a campaign's split between the test group and the local control group."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class SplitBar(Static):
    """`test ███████████░░ control`, with counts; text labels keep it readable without colour."""

    @staticmethod
    def render_split(test: int, control: int, target: int | None, width: int) -> Text:
        total = test + control
        line = Text(no_wrap=True, overflow="ellipsis")
        if not total:
            line.append("no members yet", style="dim")
            return line
        prefix = f"test {test:,} "
        suffix = f" control {control:,}" + (f" (target {target:,})" if target else "")
        cells = max(10, width - len(prefix) - len(suffix))
        control_cells = round(cells * control / total)
        if control and not control_cells:
            control_cells = 1  # never hide a non-empty control group
        line.append(prefix, style="bold")
        line.append("█" * (cells - control_cells), style="green")
        line.append("▒" * control_cells, style="yellow")
        line.append(f" control {control:,}", style="bold")
        if target:
            line.append(f" (target {target:,})", style="dim")
        return line
