"""Parse WFDB header (``.hea``) files, including the quirks of the PhysioNet Challenge copies.

The WFDB header format is specified at https://physionet.org/physiotools/wag/header-5.htm.
This parser is stricter than ``wfdb.rdheader`` where the file is inconsistent and more lenient
where real files are known to deviate harmlessly (a record line that names the signal file, as the
Georgia headers of Challenge 2020 do; ``mv`` for ``mV``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecgtool.errors import RecordError

_DEFAULT_GAIN = 200.0
_DEFAULT_ADC_RESOLUTION = 12

# format[xsamples_per_frame][:skew][+byte_offset]
_FORMAT_FIELD = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
# adcgain[(baseline)][/units]
_GAIN_FIELD = re.compile(
    r"^(?P<gain>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>\S+))?$"
)
_NUMERIC_FIELDS = ("ADC resolution", "ADC zero", "initial value", "checksum", "block size")
_DX_COMMENT = re.compile(r"^\s*(?P<key>Dx|Labels)\s*:\s*(?P<value>.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a header."""

    file_name: str
    fmt: int
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    adc_resolution: int
    adc_zero: int
    initial_value: int | None
    checksum: int | None
    description: str


@dataclass(frozen=True)
class WfdbHeader:
    """A parsed header: the record line, its signal lines and its comment lines."""

    path: Path
    record_name: str
    n_signals: int
    sampling_rate: float
    n_samples: int | None
    n_segments: int | None
    signals: tuple[SignalSpec, ...]
    comments: tuple[str, ...] = field(default=())

    @property
    def lead_names(self) -> tuple[str, ...]:
        return tuple(spec.description for spec in self.signals)

    def label_codes(self) -> dict[str, tuple[str, ...]]:
        """Label codes of the header's comment lines (see ``label_codes_from_comments``)."""
        return label_codes_from_comments(self.comments)


def label_codes_from_comments(comments: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Label codes from ``# Dx:`` lines (SNOMED-CT numbers or CPSC abbreviations) and ``# Labels:``
    lines (the 2024 Challenge's PTB-XL labels, vocabulary ``"ptbxl_labels"``: a mix of SCP-ECG
    statements such as ``NORM`` or ``PVC`` and superclasses such as ``STTC`` or ``Old MI``)."""
    codes: dict[str, list[str]] = {}
    for comment in comments:
        match = _DX_COMMENT.match(comment)
        if not match:
            continue
        values = [v.strip() for v in match["value"].split(",") if v.strip()]
        if match["key"].lower() == "labels":
            codes.setdefault("ptbxl_labels", []).extend(values)
            continue
        for value in values:
            vocabulary = "snomed" if value.isdigit() else "cpsc"
            codes.setdefault(vocabulary, []).append(value)
    return {vocabulary: tuple(values) for vocabulary, values in codes.items()}


def read_header_comments(path: str | Path) -> tuple[str, ...]:
    """Only the comment lines of a header: the cheap part that indexing needs."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise RecordError(Path(path), f"cannot read header: {error.strerror or error}") from None
    if b"#" not in data:  # most headers (PTB-XL's) have none: no decoding, no line splitting
        return ()
    text = decode_header(data)
    return tuple(line.strip()[1:].strip() for line in text.splitlines() if line.lstrip().startswith("#"))


def read_header(path: str | Path) -> WfdbHeader:
    """Read and parse one ``.hea`` file.

    Raises
    ------
    RecordError
        When the file cannot be read or does not follow the header syntax.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RecordError(path, f"cannot read header: {error.strerror or error}") from None
    return parse_header(decode_header(data), path)


def decode_header(data: bytes) -> str:
    """A header's text: UTF-8 when it is valid UTF-8 (Japanese hospitals name signal files in
    Japanese, 記録02.dat), else Latin-1, which decodes any byte (older headers' comments)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_header(text: str, path: str | Path) -> WfdbHeader:
    """Parse header ``text``; ``path`` names the file in errors and locates the signal files."""
    path = Path(path)
    if "\x00" in text:
        raise RecordError(path, "not a WFDB header: binary content")
    comments: list[str] = []
    lines: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
            continue
        # A '#' after the fields starts a comment too.
        lines.append(_protect_spaces(line.split("#", 1)[0].strip(), path))
    if not lines:
        raise RecordError(path, "header has no record line")
    name, n_signals, sampling_rate, n_samples, n_segments = _parse_record_line(lines[0], path)
    signal_lines = lines[1:]
    if n_segments is None and len(signal_lines) < n_signals:
        raise RecordError(
            path, f"header declares {n_signals} signals but has {len(signal_lines)} signal lines"
        )
    signals = () if n_segments is not None else tuple(
        _parse_signal_line(line, path) for line in signal_lines[:n_signals]
    )
    return WfdbHeader(
        path=path,
        record_name=name,
        n_signals=n_signals,
        sampling_rate=sampling_rate,
        n_samples=n_samples,
        n_segments=n_segments,
        signals=signals,
        comments=tuple(comments),
    )


# Stands for a space inside a record or file name while a line is split into fields.
_SPACE = "\x00"


def _protect_spaces(line: str, path: Path) -> str:
    """A record named after its file, with spaces in the name (``12 lead ecg.hea``): WFDB
    forbids them, but exports carry them. A line that starts with the file's stem keeps the name
    (and the ``.dat`` / ``.mat`` / ``/segments`` that follow it) as one field."""
    stem = path.stem
    if " " not in stem or not line.startswith(stem):
        return line
    rest = line[len(stem):]
    tail = "" if not rest or rest[0].isspace() else rest.split(None, 1)[0]
    return (stem + tail).replace(" ", _SPACE) + rest[len(tail):]


def _field(text: str) -> str:
    return text.replace(_SPACE, " ")


def _parse_record_line(line: str, path: Path) -> tuple[str, int, float, int | None, int | None]:
    fields = line.split()
    if len(fields) < 2:
        raise RecordError(path, f"malformed record line {line!r}")
    name_field = _field(fields[0])
    n_segments = None
    if "/" in name_field:
        name_field, segments = name_field.split("/", 1)
        n_segments = _to_int(segments, "number of segments", path)
    # Georgia headers (Challenge 2020) name the signal file on the record line: 'E00001.mat'.
    record_name = re.sub(r"\.(mat|dat)$", "", name_field, flags=re.IGNORECASE)
    n_signals = _to_int(fields[1], "number of signals", path)
    sampling_rate = 250.0
    if len(fields) > 2:
        frequency = fields[2].split("/", 1)[0].split("(", 1)[0]
        try:
            sampling_rate = float(frequency)
        except ValueError:
            raise RecordError(path, f"malformed sampling frequency {fields[2]!r}") from None
    if not sampling_rate > 0:
        raise RecordError(path, f"sampling frequency must be positive, got {fields[2]!r}")
    n_samples = _to_int(fields[3], "number of samples", path) if len(fields) > 3 else None
    if n_signals <= 0:
        raise RecordError(path, "header declares no signals")
    return record_name, n_signals, sampling_rate, n_samples, n_segments


def _parse_signal_line(line: str, path: Path) -> SignalSpec:
    fields = line.split()
    if len(fields) < 2:
        raise RecordError(path, f"malformed signal line {line!r}")
    format_field = fields[1]
    if format_field.isdigit():  # the common case, without the regular expression
        fmt, samples_per_frame, skew, byte_offset = int(format_field), 1, 0, 0
    else:
        fmt_match = _FORMAT_FIELD.match(format_field)
        if not fmt_match:
            raise RecordError(path, f"malformed signal format {format_field!r}")
        fmt = int(fmt_match["fmt"])
        samples_per_frame = int(fmt_match["spf"] or 1)
        skew = int(fmt_match["skew"] or 0)
        byte_offset = int(fmt_match["offset"] or 0)
    gain, baseline, units = _DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        parsed_gain = _gain_field(fields[2])
        if parsed_gain is None:
            raise RecordError(path, f"malformed ADC gain {fields[2]!r}")
        gain, baseline, units = parsed_gain
    try:
        numbers = list(map(int, fields[3:8]))
    except ValueError:  # say which field
        numbers = [_to_int(text, what, path) for text, what in zip(fields[3:8], _NUMERIC_FIELDS)]
    numbers += [None] * (5 - len(numbers))
    adc_resolution, adc_zero, initial_value, checksum, _block_size = numbers
    if gain <= 0:
        raise RecordError(path, f"ADC gain {fields[2]!r}: " + (
            "0 means the signal is uncalibrated (WFDB): its samples have no known unit, so it is refused"
            if gain == 0 else "a negative gain is impossible"))
    return SignalSpec(
        file_name=_field(fields[0]),
        fmt=fmt,
        samples_per_frame=samples_per_frame,
        skew=skew,
        byte_offset=byte_offset,
        gain=gain,
        baseline=(adc_zero or 0) if baseline is None else baseline,
        units=units,
        adc_resolution=adc_resolution or _DEFAULT_ADC_RESOLUTION,
        adc_zero=adc_zero or 0,
        initial_value=initial_value,
        checksum=checksum,
        description=" ".join(fields[8:]),
    )


@functools.lru_cache(maxsize=256)
def _gain_field(text: str) -> tuple[float, int | None, str] | None:
    """``adcgain[(baseline)][/units]`` → (gain, baseline or None, units), None when malformed;
    cached: the signal lines of a dataset mostly share a handful of gain fields."""
    gain_match = _GAIN_FIELD.match(text)
    if not gain_match:
        return None
    baseline = int(gain_match["baseline"]) if gain_match["baseline"] is not None else None
    # Gain 0 ("uncalibrated" in WFDB) is kept as 0 here and refused by the caller, never replaced
    # by the default: an uncalibrated signal read at 200/mV reads a normal ECG as LVH.
    return float(gain_match["gain"]), baseline, gain_match["units"] or "mV"


def _to_int(text: str, what: str, path: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise RecordError(path, f"malformed {what} {text!r}") from None
