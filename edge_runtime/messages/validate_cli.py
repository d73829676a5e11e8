"""`pswd-edge validate FILE|-`: check one Annex A message, one line per problem.

Exit codes: 0 valid, 1 invalid message, 2 usage error or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from edge_runtime.messages.annex_a import MAX_MESSAGE_BYTES, MessageError, parse_message

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

DESCRIPTION = "Validate an Annex A workload announcement or infrastructure response."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `pswd-edge validate` (also its subparser in cli.py)."""
    p.add_argument("file", help="JSON message file, or - to read standard input")


def _read(name: str, stdin: BinaryIO | None) -> bytes:
    # Read one byte past the limit: enough for the parser to report "too large" without
    # pulling a runaway file into memory.
    if name == "-":
        return (stdin or sys.stdin.buffer).read(MAX_MESSAGE_BYTES + 1)
    with Path(name).open("rb") as f:
        return f.read(MAX_MESSAGE_BYTES + 1)


def validate_main(argv: Sequence[str], *, stdin: BinaryIO | None = None) -> int:
    """Run `pswd-edge validate` with the arguments after `validate`; returns the exit code."""
    p = argparse.ArgumentParser(prog="pswd-edge validate", description=DESCRIPTION)
    add_arguments(p)
    try:
        args = p.parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed usage; --help exits 0
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run_validate(args, stdin=stdin)


def run_validate(args: argparse.Namespace, *, stdin: BinaryIO | None = None) -> int:
    """`pswd-edge validate` with parsed arguments; returns the exit code."""
    try:
        raw = _read(args.file, stdin)
    except OSError as exc:
        print(f"pswd-edge validate: cannot read {args.file}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        message = parse_message(raw)
    except MessageError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(f"valid {message.MESSAGE_TYPE}")
    return EXIT_VALID
