"""The commissioning session: work directory, the technician's identity and the journal.

Every subcommand appends one JSON line to `<work dir>/journal.jsonl` (what was run, by whom,
when, the outcome and its data); `report` renders that journal. The journal never holds a
secret: provision records paths, fingerprints and expiry dates only.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"

# Exit codes of every subcommand.
OK = 0  # done, every check passed
FAILED = 1  # done, something failed its check (the table says what)
BAD_INPUT = 2  # usage, a config with errors, a file that cannot be read
UNREACHABLE = 3  # nothing answered: host down, port closed, timeouts


class CommissionError(Exception):
    """A problem the technician must fix: one line, and the exit code it ends with."""

    def __init__(self, message: str, code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def utc_now() -> str:
    """ISO 8601 UTC time with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def technician_name(given: str | None) -> str:
    """Who runs the tool: --technician, else $PSWD_TECHNICIAN, else the login name."""
    if given:
        return given
    env = os.environ.get("PSWD_TECHNICIAN", "").strip()
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True, slots=True)
class Session:
    """Where the journal lives and who is working."""

    work_dir: Path
    technician: str

    @property
    def journal(self) -> Path:
        """The journal file."""
        return self.work_dir / JOURNAL

    def record(self, command: str, args: Mapping[str, Any], exit_code: int,
               result: Mapping[str, Any]) -> dict[str, Any]:
        """Append one entry (created with the work dir on first use); returns it."""
        entry = {"ts": utc_now(), "technician": self.technician, "host": socket.gethostname(),
                 "command": command, "args": dict(args), "exit": exit_code,
                 "result": dict(result)}
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with self.journal.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        except OSError as exc:
            raise CommissionError(f"cannot write the journal {self.journal}: "
                                  f"{exc.strerror or exc}") from None
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every journal entry, oldest first; a torn last line (power loss) is skipped."""
        try:
            lines = self.journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise CommissionError(f"no journal in {self.work_dir}: run a subcommand with "
                                  f"--work-dir {self.work_dir} first") from None
        except OSError as exc:
            raise CommissionError(f"cannot read {self.journal}: {exc.strerror or exc}") from None
        out: list[dict[str, Any]] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out
