"""A DataTable kept up to date in place: rows keyed by a domain name, cells updated, never the
whole table cleared and refilled (that loses the cursor and the scroll position, and flickers).
"""
from textual.widgets import DataTable


def cursor_row_key(table):
    """The key of the row under ``table``'s cursor, or None."""
    if not table.row_count or table.cursor_row < 0:
        return None
    try:
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
    except Exception:  # the cursor is past the rows (a row was just removed)
        return None


class LiveTable(DataTable):
    """``upsert`` and ``prune`` rows by key; the header always matches the column widths.

    DataTable measures the cells of new rows when it next goes idle, but keeps what it drew
    before that; a header drawn in between kept the old column widths until the next change
    (textual 8.2). Before drawing, this table compares the widths with those it last drew.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._drawn_widths = None

    def upsert(self, key, cells):
        """Add the row ``key`` with ``cells`` (column key -> value), or update the cells that changed."""
        if key in self.rows:
            current = self.get_row(key)
            for (column, value), old in zip(cells.items(), current):
                if value != old:
                    self.update_cell(key, column, value, update_width=True)
        else:
            self.add_row(*cells.values(), key=key)

    def prune(self, keep):
        """Remove the rows whose keys are not in ``keep``; returns the keys removed."""
        gone = [k.value for k in self.rows if k.value not in keep]
        for key in gone:
            self.remove_row(key)
        return gone

    @property
    def cursor_key(self):
        """The key of the row under the cursor, or None."""
        return cursor_row_key(self)

    def render_line(self, y):
        widths = tuple(column.get_render_width(self) for column in self.ordered_columns)
        if widths != self._drawn_widths:
            self._drawn_widths = widths
            self.notify_style_update()  # drops the lines drawn at the old widths
        return super().render_line(y)
