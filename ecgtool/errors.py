"""Exceptions whose message is the one-line error a user sees."""

from __future__ import annotations

from pathlib import Path


class EcgToolError(Exception):
    """Base class: ``str(error)`` is a complete one-line message for the user."""


class RecordError(EcgToolError):
    """A record cannot be read or brought to the canonical form.

    The message always names the file and what is wrong with it, so that batch commands can put
    it straight into their skip list.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
