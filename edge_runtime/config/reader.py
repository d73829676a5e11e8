"""Typed, bounded access to one TOML table; every error names `file: [section] key: reason`.

Modelled on Klipper's config reader: each option is read once with its bounds, and any key
that nothing read is rejected when the section is finished, so a typo never passes silently.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

_MISSING: Any = object()
T = TypeVar("T")


class ConfigError(Exception):
    """One or more configuration errors, each line `file: [section] key: reason`."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


class ErrorLog:
    """Collects errors so one load reports every problem, not just the first."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, file: str, section: str, key: str, reason: str) -> None:
        """Record one error."""
        where = f"[{section}] " if section else ""
        self.lines.append(f"{file}: {where}{key}: {reason}")

    def raise_if_any(self) -> None:
        """Raise ConfigError if anything was recorded."""
        if self.lines:
            raise ConfigError(self.lines)


MAX_TOML_BYTES = 16 * 1024 * 1024  # configs are kilobytes; this bounds /dev/zero and friends


def read_toml(path: Path, errors: ErrorLog) -> dict[str, Any] | None:
    """Parse a TOML file; syntax errors are recorded with the parser's line and column, and
    anything else that keeps it from being a TOML file (a directory, binary data, no read
    permission) as one error naming the file: never an exception."""
    file = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TOML_BYTES + 1)
        if len(raw) > MAX_TOML_BYTES:
            errors.add(file, "", "file", f"larger than {MAX_TOML_BYTES >> 20} MiB: not a config")
            return None
        return tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        errors.add(file, "", "file", "not found")
    except IsADirectoryError:
        errors.add(file, "", "file", "is a directory, not a TOML file")
    except OSError as exc:
        errors.add(file, "", "file", f"cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        errors.add(file, "", "file", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                                     f"offset {exc.start}): not a TOML file")
    except tomllib.TOMLDecodeError as exc:
        errors.add(file, "", "syntax", str(exc))
    except ValueError as exc:  # an integer of more than 4,300 digits (int() refuses it)
        errors.add(file, "", "syntax", str(exc)[:200])
    except RecursionError:
        errors.add(file, "", "syntax", "nested too deeply")
    return None


class Section:
    """One TOML table being read; call `finish()` once every option has been read."""

    def __init__(self, file: str, name: str, data: Any, errors: ErrorLog) -> None:
        self.file = file
        self.name = name
        self.errors = errors
        if not isinstance(data, dict):
            errors.add(file, name, "(table)", f"must be a table, got {type(data).__name__}")
            data = {}
        self.data: dict[str, Any] = data
        self._read: set[str] = set()

    def error(self, key: str, reason: str) -> None:
        """Record an error against a key of this section."""
        self.errors.add(self.file, self.name, key, reason)

    def has(self, key: str) -> bool:
        """True when the key is present (marks nothing as read)."""
        return key in self.data

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            self.error(key, "required")
        return default

    def get_str(
        self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None
    ) -> Any:
        """A string option, optionally restricted to `choices`."""
        value = self._get(key, default)
        if value is None or (value is default and key not in self.data):
            return value
        if not isinstance(value, str):
            self.error(key, f"must be a string, got {type(value).__name__} {value!r}")
            return default if default is not _MISSING else ""
        if "\x00" in value:  # no name, path or address holds one (os calls raise ValueError)
            self.error(key, f"must not contain a NUL character, got {value[:60]!r}")
            return default if default is not _MISSING else ""
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                self.error(key, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def get_bool(self, key: str, default: Any = _MISSING) -> Any:
        """A boolean option (TOML true/false only)."""
        value = self._get(key, default)
        if key in self.data and not isinstance(value, bool):
            self.error(key, f"must be true or false, got {value!r}")
            return default if default is not _MISSING else False
        return value

    def get_int(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minval: int | None = None,
        maxval: int | None = None,
    ) -> Any:
        """An integer option within [minval, maxval]."""
        value = self._get(key, default)
        if key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be an integer, got {type(value).__name__} {value!r}")
            return default if default is not _MISSING else 0
        self._check_bounds(key, value, minval, maxval)
        return value

    def get_float(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minval: float | None = None,
        maxval: float | None = None,
        above: float | None = None,
    ) -> Any:
        """A number option (int or float in TOML) within bounds; `above` is exclusive."""
        value = self._get(key, default)
        if key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"must be a number, got {type(value).__name__} {value!r}")
            return default if default is not _MISSING else 0.0
        value = float(value)
        if not math.isfinite(value):
            self.error(key, f"must be finite, got {value}")
            return default if default is not _MISSING else 0.0
        if above is not None and value <= above:
            self.error(key, f"must be > {above:g}, got {value:g}")
        self._check_bounds(key, value, minval, maxval)
        return value

    def table(self, key: str, *, required: bool = False) -> dict[str, Any]:
        """A sub-table as a plain dict (empty when absent and not required)."""
        value = self._get(key, _MISSING if required else {})
        if value is _MISSING:  # already reported as required
            return {}
        if not isinstance(value, dict):
            self.error(key, f"must be a table, got {type(value).__name__}")
            return {}
        return value

    def sub(self, key: str, *, required: bool = False) -> Section:
        """A sub-table as its own Section named `parent.key`."""
        return Section(self.file, f"{self.name}.{key}" if self.name else key,
                       self.table(key, required=required), self.errors)

    def _check_bounds(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and value < lo:
            self.error(key, f"must be >= {lo:g}, got {value:g}")
        if hi is not None and value > hi:
            self.error(key, f"must be <= {hi:g}, got {value:g}")

    def finish(self) -> None:
        """Reject every key nothing read: an unknown key is a typo until proven otherwise."""
        for key in self.data:
            if key not in self._read:
                self.error(key, "unknown key")
