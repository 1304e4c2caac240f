"""The console's table: Textual's DataTable whose header always follows its columns.

Textual 8's DataTable widens its columns for new rows only when it next goes idle
(`_update_dimensions`), and that neither clears its line cache nor counts as an update. A
header line drawn between `add_row` and that idle (a poll's repaint can come first on a
loaded machine) can keep the old, narrow widths above rows drawn with the new ones, until
something else changes the table: on a screen whose figures are steady, for good. Seen
once, as a failed snapshot of the campaign screen under load (narrow header cells above
wide rows); not reproduced deterministically, so no test pins it. Once the widths may have
changed, every cached line is stale: Table draws them all again.
"""

from __future__ import annotations

from textual import events
from textual.coordinate import Coordinate
from textual.widgets import DataTable


def cursor_key(table: DataTable) -> str | None:
    """The key of the row under the table's cursor (None when the table is empty)."""
    if table.row_count == 0:
        return None
    row_key, _column = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0))
    return row_key.value


class Table(DataTable):
    async def _on_idle(self, event: events.Idle) -> None:
        resized = self._require_update_dimensions
        await super()._on_idle(event)
        if resized:  # the widths may have changed: draw every line, the header too, again
            self._clear_caches()
            self.refresh()
