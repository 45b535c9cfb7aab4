"""A record file read and brought to the canonical form in one step, or the reason it cannot be.

``ingest`` (into a store) and ``predict`` / ``search --like`` (through a bundle's input
contract) read records through here, so that a file reads alike wherever it is read.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.io import RecordFormat, read_record
from ecgtool.record import Record
from ecgtool.signal import CanonicalOptions, CanonicalSignal, canonicalize


def read_canonical(path: str | Path, options: CanonicalOptions, verify_checksums: bool = True,
                   record_format: RecordFormat | None = None) -> tuple[Record, CanonicalSignal]:
    """The record at ``path`` and its canonical form.

    Raises
    ------
    RecordError
        When the record cannot be read or brought to the canonical form.
    """
    record = read_record(path, verify_checksums, record_format)
    try:
        return record, canonicalize(record, options)
    except RecordError as error:
        if options.derive_limb_leads:
            raise
        # Readable once the limb leads are derived from I and II: it lacks only those; say so.
        try:
            canonicalize(record, replace(options, derive_limb_leads=True))
        except RecordError:
            raise error from None
        raise RecordError(record.path, f"{error.reason}; they follow from I and II: "
                                       "`ecgtool ingest --derive-limb-leads` computes them") from None


def read_canonical_or_reason(path: str | Path, options: CanonicalOptions, verify_checksums: bool = True,
                             record_format: RecordFormat | None = None
                             ) -> tuple[tuple[Record, CanonicalSignal] | None, str | None]:
    """``((record, canonical), None)``, or ``(None, reason)`` in one line: for batches, where one
    bad file must not stop the others (an unexpected reader failure is a reason too)."""
    try:
        return read_canonical(path, options, verify_checksums, record_format), None
    except RecordError as error:
        return None, error.reason
    except Exception as error:  # an unexpected reader failure must not stop the batch
        return None, f"unexpected error while reading: {type(error).__name__}: {error}"


def load_canonical(path: str | Path, options: CanonicalOptions) -> tuple[str, np.ndarray]:
    """The record id and the canonical ``(12, 5000)`` mV samples of the record at ``path``."""
    record, canonical = read_canonical(path, options)
    return record.record_id, canonical.signal
