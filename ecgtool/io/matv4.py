"""Read the single matrix of a MATLAB level-4 ``.mat`` file, as the PhysioNet Challenges store it.

A level-4 file is a 20-byte header (type, rows, columns, imaginary flag, name length), the
variable's name, then the matrix in column-major order. The Challenge's ``val`` matrix is
signals × samples of int16, so its columns are WFDB frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgtool.errors import RecordError

_HEADER_BYTES = 20
# The P digit of the type field MOPT: precision of the stored numbers.
_PRECISION = {2: "i4", 3: "i2", 4: "u2", 5: "u1"}  # integer samples only, as WFDB's


def read_matv4_matrix(path: str | Path) -> np.ndarray:
    """Return the first matrix of a level-4 MAT file as int32, shape ``(rows, columns)``.

    Raises
    ------
    RecordError
        When the file is missing, is not a level-4 MAT file, holds a non-numeric or complex
        matrix, or is shorter than its header says.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(path, "signal file named by the header does not exist") from None
    except OSError as error:
        raise RecordError(path, f"cannot read signal file: {error.strerror or error}") from None
    if len(data) < _HEADER_BYTES:
        raise RecordError(path, "too short to be a MAT file")
    if data[:6] == b"MATLAB":
        raise RecordError(path, "is a MATLAB level-5 file; the Challenge layout uses level 4")
    byte_order = "<"
    type_code, rows, columns, imaginary, name_length = np.frombuffer(data[:_HEADER_BYTES], "<i4")
    if not 0 <= type_code < 5000:
        byte_order = ">"
        type_code, rows, columns, imaginary, name_length = np.frombuffer(data[:_HEADER_BYTES], ">i4")
    machine, _, precision, matrix_type = (type_code // 1000, type_code // 100 % 10, type_code // 10 % 10, type_code % 10)
    if machine not in (0, 1) or matrix_type != 0 or precision not in _PRECISION:
        raise RecordError(path, f"not an integer level-4 MAT matrix (type code {type_code})")
    if imaginary:
        raise RecordError(path, "holds a complex matrix")
    dtype = np.dtype(byte_order + _PRECISION[precision])
    start = _HEADER_BYTES + int(name_length)
    expected_bytes = int(rows) * int(columns) * dtype.itemsize
    held_bytes = len(data) - start
    if held_bytes < expected_bytes:
        held_columns = max(held_bytes, 0) // (max(int(rows), 1) * dtype.itemsize)
        raise RecordError(
            path, f"truncated: MAT header declares {columns} samples per signal, file holds {held_columns}"
        )
    values = np.frombuffer(data, dtype=dtype, count=int(rows) * int(columns), offset=start)
    return values.reshape(int(columns), int(rows)).T.astype(np.int32)
