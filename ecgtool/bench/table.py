"""Bench tables on the terminal: as wide as the console, and never a number cut.

Rich shrinks every column of a table too wide for the console, and cuts what no longer fits
(``94…``): a cut number is a wrong number. Here the figure columns keep the width of their
widest value; the text columns (names) wrap; and when the figures do not all fit beside the text
columns, they are split over several tables, each repeating the text columns that name the rows.
"""

from __future__ import annotations

from rich.cells import cell_len

# A text column is given at least this many cells (or its widest cell, if narrower) when the
# figure columns are shared out; it wraps within what it gets.
TEXT_MIN_WIDTH = 12
# What a column takes beside its content: a space each side and one border line.
_COLUMN_EXTRA = 3


def print_table(console, title: str, header: list[str], rows: list[list[str]], text_columns: int = 1,
                trailing_text: bool = False, caption: str = "") -> None:
    """Print ``rows`` under ``header``: the first ``text_columns`` columns (and the last one, with
    ``trailing_text``) are text that wraps; the others are figures, never wrapped or cut."""
    from rich.table import Table

    last = len(header) - 1
    figures = list(range(text_columns, len(header) - int(trailing_text)))
    widths = {index: _figure_width(header[index], [row[index] for row in rows]) for index in figures}
    leading = sum(_text_width(header[index], [row[index] for row in rows]) + _COLUMN_EXTRA for index in range(text_columns)) + 1
    groups: list[list[int]] = [[]]
    used = leading
    for index in figures:
        if groups[-1] and used + widths[index] + _COLUMN_EXTRA > console.width:
            groups.append([])
            used = leading
        groups[-1].append(index)
        used += widths[index] + _COLUMN_EXTRA
    if trailing_text:
        if groups[-1] and used + _text_width(header[last], [row[last] for row in rows]) + _COLUMN_EXTRA > console.width:
            groups.append([])
        groups[-1].append(last)
    for number, group in enumerate(groups, start=1):
        part = f" ({number}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=f"{title}{part}", title_justify="left", caption=caption if number == len(groups) else None,
                      caption_justify="left")
        columns = [*range(text_columns), *group]
        for index in columns:
            if index in widths:
                table.add_column(header[index], justify="right", width=widths[index])
            else:
                table.add_column(header[index], justify="left", overflow="fold")
        for row in rows:
            table.add_row(*(row[index] for index in columns))
        console.print(table)


def _figure_width(name: str, cells: list[str]) -> int:
    """A figure column's width: its widest value, and the longest word of its name (which wraps)."""
    return max([cell_len(cell) for cell in cells] + [cell_len(word) for word in name.split()] + [1])


def _text_width(name: str, cells: list[str]) -> int:
    return min(TEXT_MIN_WIDTH, max([cell_len(cell) for cell in cells] + [cell_len(name), 1]))
