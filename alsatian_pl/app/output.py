"""Tables for a person's terminal and for a script's pipe: :class:`Output` draws a rich table on a terminal, plain
full-width rows otherwise (every cell whole, one row a line, so ``grep`` finds a model by its name), and with
``json=True`` prints nothing but one JSON document of the same content at the end (:meth:`Output.close`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

__all__ = ["Column", "Output", "plain_table"]


@dataclass(frozen=True)
class Column:
    """A column: its header, right-aligned (numbers) or not, and whether a terminal may fold its cells (names)."""
    header: str
    right: bool = False
    fold: bool = False


def plain_table(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain text lines: the title, the headers, then one line per row; columns two spaces apart and as wide as
    their widest cell, nothing cut or wrapped (the last column is not padded)."""
    widths = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    for cells in [[c.header for c in columns], *rows]:
        padded = [cell.rjust(w) if col.right else cell.ljust(w) for cell, col, w in zip(cells, columns, widths)]
        if not columns[-1].right:
            padded[-1] = cells[-1]
        lines.append("  ".join(padded).rstrip())
    return lines


class Output:
    """Where a command's tables and lines go: ``console`` (rich tables if it is a terminal, plain rows if not) or,
    with ``json``, a JSON object built from :meth:`data` and printed by :meth:`close`."""

    def __init__(self, console: Console | None = None, json: bool = False):
        self.console = console or Console()
        self.json = json
        self.payload: dict[str, Any] = {}

    @property
    def plain(self) -> bool:
        return not self.console.is_terminal

    def table(self, title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
        if self.json:
            return
        if self.plain:  # one write: rich's per-call overhead made a 300-row table take 0.1 s
            self.console.out("\n".join(plain_table(title, columns, rows)), highlight=False)
            return
        table = Table(title=title)
        for c in columns:
            table.add_column(c.header, justify="right" if c.right else "left",
                             overflow="fold" if c.fold else "ellipsis", no_wrap=not c.fold)
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    def line(self, text: str, style: str | None = None) -> None:
        """A line of text: whole in a pipe; wrapped at spaces to the terminal's width (``style``, e.g. ``red``)."""
        if self.json:
            return
        if self.plain:
            self.console.out(text, highlight=False)
        else:
            self.console.print(text, style=style, highlight=False, markup=False)

    def data(self, **values: Any) -> None:
        """Add to the JSON document (printed by :meth:`close` when ``json``)."""
        self.payload.update(values)

    def close(self) -> None:
        if self.json:
            self.console.out(json.dumps(self.payload, indent=2, default=str), highlight=False)
