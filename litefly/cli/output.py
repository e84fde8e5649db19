"""Terminal and pipe output for the CLI: whole tables when stdout is not a terminal, and JSON.

On a terminal, rich draws tables to the terminal's width as usual. Piped or logged
(``litefly synth ... | cat``), rich would assume 80 columns and cut cells (``vgg_…``);
:func:`console` then returns a Console wide enough for any table, without colours, so every
column prints in full. ``--json`` prints the same rows as JSON (:func:`print_table`).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Mapping, Sequence, TextIO

from rich.console import Console
from rich.table import Table

__all__ = ["is_terminal", "console", "table_rows", "print_table", "print_json", "tsv"]

#: Width of a Console that is not a terminal: wide enough that no table is cut.
PIPE_WIDTH = 10_000


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False, min_width: int | None = None) -> Console:
    """A rich Console: the terminal's own on a terminal, a very wide one without colours otherwise.

    ``min_width`` widens a terminal console (as some commands did with ``max(Console().width, N)``).
    """
    stream = sys.stderr if stderr else sys.stdout
    if is_terminal(stream):
        c = Console(stderr=stderr)
        if min_width and c.width < min_width:
            c = Console(stderr=stderr, width=min_width)
        return c
    return Console(stderr=stderr, width=PIPE_WIDTH, no_color=True, highlight=False, soft_wrap=False)


def _plain(cell: Any) -> str:
    if isinstance(cell, str):
        from rich.text import Text  # noqa: PLC0415
        return Text.from_markup(cell).plain
    plain = getattr(cell, "plain", None)
    return plain if isinstance(plain, str) else str(cell)


def table_rows(table: Table) -> list[dict[str, str]]:
    """The rows of a rich Table as dicts ``{header: cell text}`` (markup removed)."""
    headers = [_plain(c.header) for c in table.columns]
    cols = [[_plain(cell) for cell in c._cells] for c in table.columns]  # noqa: SLF001 - rich has no public API
    return [dict(zip(headers, row)) for row in zip(*cols)]


def tsv(table: Table) -> str:
    """The table as tab-separated values with a header line."""
    headers = [_plain(c.header) for c in table.columns]
    lines = ["\t".join(headers)]
    for row in table_rows(table):
        lines.append("\t".join(row[h].replace("\t", " ") for h in headers))
    return "\n".join(lines)


def print_json(data: Any, stream: TextIO | None = None) -> None:
    """``data`` as indented JSON on stdout (non-JSON values as strings)."""
    print(json.dumps(data, indent=2, default=str), file=stream or sys.stdout)


def print_table(table: Table, json_rows: Sequence[Mapping[str, Any]] | None = None, as_json: bool = False,
                out: Console | None = None) -> None:
    """Print ``table`` whole (see :func:`console`), or as JSON rows with ``as_json``.

    ``json_rows`` gives typed rows for JSON (numbers as numbers); without it the table's
    cells are used as strings.
    """
    if as_json:
        print_json(list(json_rows) if json_rows is not None else table_rows(table))
        return
    (out or console()).print(table)


def echo_lines(lines: Iterable[str], out: Console | None = None) -> None:
    c = out or console()
    for line in lines:
        c.print(line)
