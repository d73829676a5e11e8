"""Terminal output: rich tables and progress bars, or one JSON document with --json.

Status words (PASS, FAIL, WARN, SKIP, REFUSED) are always spelled out, so nothing depends on
colour: NO_COLOR, a pipe or a dumb terminal give the same words without the styling.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

STYLES = {"PASS": "bold green", "FAIL": "bold red", "WARN": "bold yellow", "SKIP": "dim",
          "REFUSED": "bold magenta", "ERROR": "bold red", "OK": "green"}


class Output:
    """Where a subcommand's results go: the terminal (human) or stdout as JSON (scripts)."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        tty = sys.stdout.isatty()
        # A pipe gets a wide fixed width so tables are not squeezed into 80 columns.
        self.console = Console(highlight=False, width=None if tty else 160,
                               soft_wrap=not tty)
        self.interactive = tty and not json_mode

    def line(self, text: str) -> None:
        """One line of prose (suppressed in JSON mode)."""
        if not self.json_mode:
            self.console.print(text, markup=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              *, status_column: int | None = None) -> None:
        """A table; the status column's words are styled when colour is available."""
        if self.json_mode:
            return
        table = Table(title=title, title_justify="left", show_lines=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            cells = ["" if c is None else str(c) for c in row]
            if status_column is not None:
                word = cells[status_column]
                style = STYLES.get(word.split(" ", 1)[0], "")
                cells[status_column] = f"[{style}]{word}[/]" if style else word
                table.add_row(*[c if i == status_column else _escape(c)
                                for i, c in enumerate(cells)])
            else:
                table.add_row(*[_escape(c) for c in cells])
        self.console.print(table)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Any]:
        """A progress bar on a terminal (nothing otherwise); yields advance(n=1)."""
        if not self.interactive:
            yield lambda n=1: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def emit(self, document: dict[str, Any]) -> None:
        """The JSON document of a subcommand (JSON mode only)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
