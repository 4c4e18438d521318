"""Errors a user can act on: each names the file and the 1-based line or the key at fault."""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """Base class for user-facing errors: the CLI prints the message and exits non-zero."""


class DataFormatError(HarnessError):
    """Malformed or inconsistent input data, located by file and 1-based physical line."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path = str(path)
        self.line = line
        self.detail = message
        super().__init__(f"{self.path}:{line}: {message}")


class ParamsError(HarnessError):
    """An invalid params.yaml value, located by file and dotted key."""

    def __init__(self, path: str | Path, key: str, message: str):
        self.path = str(path)
        self.key = key
        super().__init__(f"{path}: key '{key}': {message}")
