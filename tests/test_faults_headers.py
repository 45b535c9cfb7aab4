"""Header faults of the third hostile round (issue 21) on a real PTB-XL record: an uncalibrated
or impossible gain is refused, a UTF-8 header naming a Japanese signal file is read, a record
named with spaces is read, and each refusal is one line naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgtool.errors import RecordError
from ecgtool.io.wfdb import read_wfdb

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ptb-xl" / "00299_hr"


def _copy(tmp_path: Path, name: str, edit=lambda line: line) -> Path:
    """The example record as ``name``.hea/.dat, each signal line passed through ``edit``."""
    lines = EXAMPLE.with_suffix(".hea").read_text(encoding="utf-8").splitlines()
    shutil.copy(EXAMPLE.with_suffix(".dat"), tmp_path / f"{name}.dat")
    record, signals = lines[0].split(None, 1)[1], lines[1:]
    out = [f"{name} {record}"] + [edit(line.replace("00299_hr.dat", f"{name}.dat", 1)) for line in signals]
    header = tmp_path / f"{name}.hea"
    header.write_text("\n".join(out) + "\n", encoding="utf-8")
    return header


def _with_gain(gain: str):
    def edit(line: str) -> str:
        fields = line.split()
        if len(fields) > 2 and not line.startswith("#"):
            fields[2] = gain + fields[2][fields[2].index("/"):] if "/" in fields[2] else gain
        return " ".join(fields)
    return edit


@pytest.mark.parametrize("gain, reason", [("0", "uncalibrated"), ("-1000", "negative gain is impossible")])
def test_an_uncalibrated_or_negative_gain_is_refused_not_read_at_a_default(tmp_path, gain, reason):
    header = _copy(tmp_path, "gain", _with_gain(gain))
    with pytest.raises(RecordError, match=reason) as caught:
        read_wfdb(header)
    assert str(header) in str(caught.value) and "\n" not in str(caught.value)


def test_a_utf8_header_naming_a_japanese_signal_file_is_read(tmp_path):
    original = read_wfdb(EXAMPLE.with_suffix(".hea"))
    record = read_wfdb(_copy(tmp_path, "記録02"))
    np.testing.assert_array_equal(record.signal, original.signal)


def test_a_record_named_with_spaces_is_read(tmp_path):
    original = read_wfdb(EXAMPLE.with_suffix(".hea"))
    record = read_wfdb(_copy(tmp_path, "12 lead ecg"))
    np.testing.assert_array_equal(record.signal, original.signal)
