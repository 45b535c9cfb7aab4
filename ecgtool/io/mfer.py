"""Read MFER files (Medical waveform Format Encoding Rules; JIS T 7308, ISO 22077-1), ``.mwf``.

The format Japanese electrocardiographs export (Nihon Kohden, Fukuda Denshi, Suzuken, GE
Marquette …). A file is a stream of tag–length–value elements:

* one tag byte; the channel-attribute tag ``0x3F`` is followed by its channel number (0-based,
  base-128 with the top bit as continuation);
* one length byte, or, with its top bit set, its low 7 bits count the big-endian length bytes
  that follow (the long form; at most 4);
* the value, whose numbers follow the file's byte order (tag ``0x01``; big-endian by default).

Definitions (sampling, resolution, data type, block length …) made at the top level are the
file's defaults; those inside a channel's ``0x3F`` element override them for that channel. A
waveform element (``0x1E``) is one frame of ``sequences`` × ``channels`` × ``block length``
samples: sequence after sequence, and within one sequence channel after channel. Several
frames are joined in order. Physical value in mV = (stored − offset) × resolution, with
samples equal to the null value as NaN.

Electrocardiographs store I, II and V1–V6 only: III, aVR, aVL and aVF are derived from I and
II (``ecgtool.signal.with_derived_limb_leads``). See ``docs/formats-mfer.md`` for every tag read
and which were seen in real files.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.record import Record
from ecgtool.signal import LEADS, with_derived_limb_leads

# Tags of MFER Part 1 (ISO 22077-1); those not named in ``_read_definition`` are skipped.
ZERO = 0x00
BYTE_ORDER = 0x01
VERSION = 0x02
CHARACTER_CODE = 0x03
BLOCK_LENGTH = 0x04
CHANNELS = 0x05
SEQUENCES = 0x06
POINTER = 0x07
WAVEFORM_TYPE = 0x08
LEAD = 0x09
DATA_TYPE = 0x0A
SAMPLING = 0x0B
RESOLUTION = 0x0C
OFFSET = 0x0D
COMPRESSION = 0x0E
INTERPOLATION = 0x0F
FILTER = 0x11
NULL_VALUE = 0x12
INFORMATION = 0x15
COMMENT = 0x16
MANUFACTURER = 0x17
WAVEFORM = 0x1E
CHANNEL_ATTRIBUTES = 0x3F
PREAMBLE = 0x40
EVENT = 0x41
VALUE = 0x42
END = 0x80
PATIENT_NAME = 0x81
PATIENT_ID = 0x82
PATIENT_AGE = 0x83
PATIENT_SEX = 0x84
MEASUREMENT_TIME = 0x85
MESSAGE = 0x86
UID = 0x87
MAP = 0x88

TAG_NAMES = {
    BYTE_ORDER: "byte order", VERSION: "version", CHARACTER_CODE: "character code",
    BLOCK_LENGTH: "block length", CHANNELS: "channels", SEQUENCES: "sequences", POINTER: "pointer",
    WAVEFORM_TYPE: "waveform type", LEAD: "lead", DATA_TYPE: "data type", SAMPLING: "sampling",
    RESOLUTION: "resolution", OFFSET: "offset", COMPRESSION: "compression", INTERPOLATION: "interpolation",
    FILTER: "filter", NULL_VALUE: "null value", INFORMATION: "information", COMMENT: "comment",
    MANUFACTURER: "manufacturer", WAVEFORM: "waveform", CHANNEL_ATTRIBUTES: "channel attributes",
    PREAMBLE: "preamble", EVENT: "event", VALUE: "value", PATIENT_NAME: "patient name",
    PATIENT_ID: "patient id", PATIENT_AGE: "patient age", PATIENT_SEX: "patient sex",
    MEASUREMENT_TIME: "measurement time", MESSAGE: "message", UID: "uid", MAP: "map",
}
_KNOWN_TAGS = frozenset(TAG_NAMES) | {ZERO, END, 0x43, 0x44, 0x45, 0x46, 0x67}

# Data type codes (tag 0x0A) as NumPy kinds; 4 is a 16-bit status word, 9 AHA 8-bit compression.
DATA_TYPES = {0: "i2", 1: "u2", 2: "i4", 3: "u1", 4: "u2", 5: "i1", 6: "u4", 7: "f4", 8: "f8"}
STATUS_DATA_TYPE = 4

# Lead codes (tag 0x09) of MFER Part 1 / Part 2 (ECG) for the leads ecgtool knows by name.
LEAD_NAMES = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    9: "V7", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y", 18: "Z",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 66: "V8", 67: "V9",
}

SAMPLING_FREQUENCY_HZ, SAMPLING_INTERVAL_S, SAMPLING_DISTANCE_M = 0, 1, 2
RESOLUTION_UNIT_VOLT = 0
DEFAULT_SAMPLING_RATE_HZ = 1000.0  # MFER's default when a file has no sampling element

_TEXT_CODECS = {
    "ascii": "ascii", "utf-8": "utf-8", "utf8": "utf-8", "sjis": "cp932", "shift_jis": "cp932",
    "shift-jis": "cp932", "jis": "iso2022_jp", "iso-2022-jp": "iso2022_jp", "euc-jp": "euc_jp",
    "iso-8859-1": "latin-1", "latin-1": "latin-1",
}


class _Malformed(Exception):
    """A reason that ``read`` turns into a ``RecordError`` for the file."""


@dataclass(frozen=True)
class Element:
    """One tag–length–value element: ``value`` is ``data[start:end]``."""

    tag: int
    channel: int | None
    offset: int
    start: int
    end: int
    declared_length: int


def iter_elements(data: bytes, start: int = 0, end: int | None = None):
    """Yield the ``Element`` s between ``start`` and ``end``, stopping at the end tag (0x80).

    Zero bytes between elements are padding. A length running past ``end`` is an error, except
    for a waveform element, which is yielded cut at ``end`` so that the frame can say how much
    of which lead is missing.
    """
    end = len(data) if end is None else end
    position = start
    while position < end:
        tag, offset = data[position], position
        position += 1
        if tag == ZERO:
            continue
        if tag == END:
            return
        channel = None
        if tag == CHANNEL_ATTRIBUTES:
            channel, position = _read_channel_number(data, position, end)
        length, position = _read_length(data, position, end, tag, offset)
        if position + length > end and tag != WAVEFORM:
            raise _Malformed(
                f"element 0x{tag:02X} ({TAG_NAMES.get(tag, 'unknown')}) at byte {offset:,} declares "
                f"{length:,} bytes but only {end - position:,} remain"
            )
        yield Element(tag, channel, offset, position, min(position + length, end), length)
        position += length


def _read_channel_number(data: bytes, position: int, end: int) -> tuple[int, int]:
    channel = 0
    while True:
        if position >= end:
            raise _Malformed("file ends inside a channel number (tag 0x3F)")
        byte = data[position]
        position += 1
        channel = (channel << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return channel, position


def _read_length(data: bytes, position: int, end: int, tag: int, offset: int) -> tuple[int, int]:
    if position >= end:
        raise _Malformed(f"file ends inside element 0x{tag:02X} at byte {offset:,}")
    first = data[position]
    if first < 0x80:
        return first, position + 1
    n_bytes = first & 0x7F
    if n_bytes == 0 or n_bytes > 4:
        kind = "indefinite length" if n_bytes == 0 else f"a {n_bytes}-byte length"
        raise _Malformed(f"element 0x{tag:02X} at byte {offset:,} has {kind} (not supported)")
    if position + 1 + n_bytes > end:
        raise _Malformed(f"file ends inside the length of element 0x{tag:02X} at byte {offset:,}")
    return int.from_bytes(data[position + 1 : position + 1 + n_bytes], "big"), position + 1 + n_bytes


@dataclass
class _ChannelDefinitions:
    """Sampling definitions in force for the file (defaults) or overriding them for one channel."""

    block_length: int | None = None
    data_type: int | None = None
    sampling_rate: float | None = None
    resolution: tuple[int, float] | None = None  # (unit code, mV per count when volts)
    offset: tuple[bytes, bool] | None = None  # raw value and whether it was big-endian
    null_value: tuple[bytes, bool] | None = None
    lead_code: int | None = None
    sequences: int | None = None

    def overridden_by(self, channel: _ChannelDefinitions) -> _ChannelDefinitions:
        return replace(self, **{name: value for name, value in vars(channel).items() if value is not None})


@dataclass
class _Channel:
    """One channel's effective definitions at a waveform frame."""

    number: int
    name: str
    dtype: np.dtype
    block_length: int
    sampling_rate: float
    resolution: tuple[int, float] | None
    offset: float
    null_value: float | None
    is_status: bool


@dataclass
class _Parse:
    """What has been read so far: the definitions in force and the decoded frames."""

    big_endian: bool = True
    text_codec: str | None = None
    n_channels: int = 1
    defaults: _ChannelDefinitions = field(default_factory=_ChannelDefinitions)
    per_channel: dict[int, _ChannelDefinitions] = field(default_factory=dict)
    frames: list[tuple[list[_Channel], list[np.ndarray]]] = field(default_factory=list)
    patient_id: str | None = None
    acquired: str | None = None
    device: str | None = None


def sniff(head: bytes) -> bool:
    """True when ``head`` opens with a chain of plausible MFER definitions.

    A preamble (tag 0x40) naming "MFR" or "MFER" suffices. Otherwise the first byte must be a
    known tag (no leading padding, which keeps DICOM's zero preamble out) and every element up
    to the first waveform element, the end tag or the end of ``head`` must be a known tag with a
    plausible value; at least two sampling or frame definitions
    (byte order, block length, channels, data type, sampling, resolution, channel attributes)
    must be seen before a waveform element, or four without one.
    """
    if not head or head[0] not in _KNOWN_TAGS or head[0] == ZERO:
        return False
    if head[0] == PREAMBLE and len(head) > 2 and (b"MFR" in head[2 : 2 + head[1]] or b"MFER" in head[2 : 2 + head[1]]):
        return True  # the preamble names the format (a cut file is then reported as broken MFER)
    definitions = 0
    try:
        for element in iter_elements(head):
            if element.tag not in _KNOWN_TAGS:
                return False
            if element.tag == WAVEFORM:
                return definitions >= 2
            if not _plausible(element.tag, head[element.start : element.end]):
                return False
            if element.tag in (BYTE_ORDER, BLOCK_LENGTH, CHANNELS, DATA_TYPE, SAMPLING, RESOLUTION, CHANNEL_ATTRIBUTES):
                definitions += 1
    except _Malformed:
        return False
    return definitions >= 4


def _plausible(tag: int, value: bytes) -> bool:
    if tag == BYTE_ORDER:
        return len(value) == 1 and value[0] in (0, 1)
    if tag == DATA_TYPE:
        return 1 <= len(value) <= 2
    if tag in (BLOCK_LENGTH, CHANNELS, SEQUENCES):
        return 1 <= len(value) <= 4 and any(value)
    if tag in (SAMPLING, RESOLUTION):
        return 3 <= len(value) <= 6 and value[0] <= 30
    if tag == CHANNEL_ATTRIBUTES:
        return len(value) >= 2
    return True


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read one MFER file (MFER carries no checksum: ``verify_checksums`` has no effect).

    Returns
    -------
    Record
        The stored channels in mV (NaN at null values) named by their lead codes, with III, aVR,
        aVL and aVF derived from I and II where the file does not store them; ``patient_id``
        (tag 0x82), ``acquired`` (0x85) and ``device`` (0x17) when present.

    Raises
    ------
    RecordError
        Naming what is wrong: a truncated waveform, a length past the end of the file, no
        waveform, an unsupported data type or compression, a sampling rate of 0, channels that
        disagree, or a lead set from which the 12 leads cannot be made.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RecordError(path, f"cannot read: {error.strerror or error}") from None
    if not data:
        raise RecordError(path, "empty file")
    try:
        parse = _Parse()
        _read_elements(parse, data, 0, len(data), channel=None)
        signal, sampling_rate, lead_names = _join_frames(parse)
    except _Malformed as error:
        raise RecordError(path, str(error)) from None
    except (ValueError, IndexError, OverflowError, ZeroDivisionError) as error:
        raise RecordError(path, f"malformed MFER: {error}") from None
    record = with_derived_limb_leads(Record(
        record_id=path.stem,
        path=str(path),
        signal=signal,
        sampling_rate=sampling_rate,
        lead_names=lead_names,
        patient_id=parse.patient_id,
        format="mfer",
        acquired=parse.acquired,
        device=parse.device,
    ))
    missing = [lead for lead in LEADS if lead not in record.lead_names]
    if missing:
        raise RecordError(
            path,
            f"cannot make 12 leads: no {', '.join(missing)} (stores {', '.join(lead_names)}; "
            "III, aVR, aVL, aVF are derived only from I and II)",
        )
    return record


def _read_elements(parse: _Parse, data: bytes, start: int, end: int, channel: int | None) -> None:
    for element in iter_elements(data, start, end):
        value = data[element.start : element.end]
        if element.tag == CHANNEL_ATTRIBUTES:
            if channel is not None:
                raise _Malformed(f"channel attributes nested inside channel {channel}'s at byte {element.offset:,}")
            _read_elements(parse, data, element.start, element.end, channel=element.channel)
        elif element.tag == WAVEFORM:
            if channel is not None:
                raise _Malformed(f"waveform inside channel {channel}'s attributes at byte {element.offset:,}")
            parse.frames.append(_decode_frame(parse, value, element))
        else:
            _read_definition(parse, element.tag, value, channel)


def _read_definition(parse: _Parse, tag: int, value: bytes, channel: int | None) -> None:
    """Apply one definition; tags that ecgtool does not use are skipped."""
    order = "big" if parse.big_endian else "little"
    target = parse.defaults if channel is None else parse.per_channel.setdefault(channel, _ChannelDefinitions())
    if tag == BYTE_ORDER:
        if value and value[0] not in (0, 1):
            raise _Malformed(f"byte order {value[0]} is neither 0 (big-endian) nor 1 (little-endian)")
        parse.big_endian = not value or value[0] == 0
    elif tag == CHARACTER_CODE:
        parse.text_codec = _text_codec(value.decode("ascii", "replace"))
    elif tag == CHANNELS and channel is None:
        parse.n_channels = _unsigned(value, order, "channels") if value else 1
        if parse.n_channels == 0:
            raise _Malformed("0 channels (tag 0x05)")
    elif tag == BLOCK_LENGTH:
        target.block_length = _unsigned(value, order, "block length") if value else None
        if target.block_length == 0:
            raise _Malformed("block length of 0 samples (tag 0x04)")
    elif tag == SEQUENCES:
        target.sequences = _unsigned(value, order, "sequences") if value else None
    elif tag == DATA_TYPE:
        target.data_type = _unsigned(value, order, "data type") if value else None
        if target.data_type == 9:
            raise _Malformed("data type 9 (AHA 8-bit difference compression) is not supported")
        if target.data_type is not None and target.data_type not in DATA_TYPES:
            raise _Malformed(f"unknown data type {target.data_type} (tag 0x0A)")
    elif tag == SAMPLING:
        target.sampling_rate = _sampling_rate(value, order) if value else None
    elif tag == RESOLUTION:
        target.resolution = _resolution(value, order) if value else None
    elif tag == OFFSET:
        target.offset = (value, parse.big_endian) if value else None
    elif tag == NULL_VALUE:
        target.null_value = (value, parse.big_endian) if value else None
    elif tag == LEAD:
        target.lead_code = (value[0] if len(value) == 1 else int.from_bytes(value[:2], order)) if value else None
    elif tag == COMPRESSION:
        code = int.from_bytes(value[:2], order) if value else 0
        if code:
            raise _Malformed(f"compressed waveform (tag 0x0E code {code}) is not supported")
    elif tag == MANUFACTURER and channel is None:
        parts = [part.strip() for part in _text(parse, value).split("^")]
        parse.device = " ".join(part for part in parts if part) or None
    elif tag == PATIENT_ID and channel is None:
        parse.patient_id = _text(parse, value) or None
    elif tag == MEASUREMENT_TIME and channel is None:
        parse.acquired = _measurement_time(value, order)


def _unsigned(value: bytes, order: str, name: str) -> int:
    if len(value) > 4:
        raise _Malformed(f"{name} takes {len(value)} bytes (at most 4)")
    return int.from_bytes(value, order)


def _sampling_rate(value: bytes, order: str) -> float:
    """Samples per second from (unit, signed exponent, mantissa): a frequency or an interval."""
    if not 3 <= len(value) <= 6:
        raise _Malformed(f"sampling (tag 0x0B) of {len(value)} bytes, expected 3 to 6")
    unit, exponent = value[0], int.from_bytes(value[1:2], "big", signed=True)
    quantity = Fraction(int.from_bytes(value[2:], order, signed=True)) * Fraction(10) ** exponent
    if unit == SAMPLING_DISTANCE_M:
        raise _Malformed("sampling by distance (tag 0x0B unit 2), not by time")
    if unit not in (SAMPLING_FREQUENCY_HZ, SAMPLING_INTERVAL_S):
        raise _Malformed(f"unknown sampling unit {unit} (tag 0x0B)")
    if quantity <= 0:
        kind = "rate" if unit == SAMPLING_FREQUENCY_HZ else "interval"
        raise _Malformed(f"sampling {kind} of {float(quantity):g} (tag 0x0B)")
    return float(quantity if unit == SAMPLING_FREQUENCY_HZ else 1 / quantity)


def _resolution(value: bytes, order: str) -> tuple[int, float]:
    """(unit code, millivolts per count) from (unit, signed exponent, mantissa); 0 = volts."""
    if not 3 <= len(value) <= 6:
        raise _Malformed(f"resolution (tag 0x0C) of {len(value)} bytes, expected 3 to 6")
    unit, exponent = value[0], int.from_bytes(value[1:2], "big", signed=True)
    quantity = Fraction(int.from_bytes(value[2:], order, signed=True)) * Fraction(10) ** exponent
    return unit, float(quantity * 1000)


def _measurement_time(value: bytes, order: str) -> str | None:
    """ISO 8601 from year (2 bytes), month, day, hour, minute, second, ms (2), µs (2)."""
    if len(value) < 4:
        return None
    fields = list(value[2:7]) + [0] * (7 - min(len(value), 7))
    milliseconds = int.from_bytes(value[7:9], order) if len(value) >= 9 else 0
    microseconds = int.from_bytes(value[9:11], order) if len(value) >= 11 else 0
    try:
        moment = datetime(int.from_bytes(value[:2], order), *fields[:5], milliseconds * 1000 + microseconds)
    except ValueError:
        return None  # an impossible date is no reason to lose the ECG
    return moment.isoformat() if len(value) > 4 else moment.date().isoformat()


def _text_codec(name: str) -> str | None:
    key = name.strip("\x00 ").lower()
    try:
        return _TEXT_CODECS.get(key) or codecs.lookup(key).name
    except LookupError:
        return None


def _text(parse: _Parse, value: bytes) -> str:
    for codec in (parse.text_codec, "utf-8", "cp932"):
        if codec:
            try:
                return value.decode(codec).strip("\x00 ")
            except UnicodeDecodeError:
                continue
    return value.decode("latin-1").strip("\x00 ")


def _channels_in_force(parse: _Parse) -> list[_Channel]:
    channels = []
    for number in range(parse.n_channels):
        definitions = parse.defaults.overridden_by(parse.per_channel.get(number, _ChannelDefinitions()))
        if definitions.sequences != parse.defaults.sequences:
            raise _Malformed(f"channel {number} has its own number of sequences (not supported)")
        data_type = 0 if definitions.data_type is None else definitions.data_type
        dtype = np.dtype(DATA_TYPES[data_type]).newbyteorder(">" if parse.big_endian else "<")
        code = definitions.lead_code
        channels.append(_Channel(
            number=number,
            name=LEAD_NAMES.get(code, f"MFER-lead-{code}") if code is not None else f"MFER-channel-{number}",
            dtype=dtype,
            block_length=definitions.block_length or 1,
            sampling_rate=definitions.sampling_rate or DEFAULT_SAMPLING_RATE_HZ,
            resolution=definitions.resolution,
            offset=_typed_value(definitions.offset, dtype, "offset") or 0.0,
            null_value=_typed_value(definitions.null_value, dtype, "null value"),
            is_status=data_type == STATUS_DATA_TYPE,
        ))
    return channels


def _typed_value(raw: tuple[bytes, bool] | None, dtype: np.dtype, name: str) -> float | None:
    """An offset or null value in the channel's data type (an integer may be given shorter)."""
    if raw is None:
        return None
    value, big_endian = raw
    order = "big" if big_endian else "little"
    if dtype.kind == "f":
        if len(value) != dtype.itemsize:
            raise _Malformed(f"{name} of {len(value)} bytes for {dtype.itemsize * 8}-bit float samples")
        return float(np.frombuffer(value, dtype.newbyteorder(">" if big_endian else "<"))[0])
    if len(value) > dtype.itemsize:
        raise _Malformed(f"{name} of {len(value)} bytes for {dtype.itemsize}-byte samples")
    return float(int.from_bytes(value, order, signed=dtype.kind == "i"))


def _decode_frame(parse: _Parse, waveform: bytes, element: Element) -> tuple[list[_Channel], list[np.ndarray]]:
    """Split one waveform element into its channels, in mV (NaN at null values)."""
    if parse.n_channels > len(waveform):
        raise _Malformed(f"{parse.n_channels:,} channels declared for a waveform of {len(waveform):,} bytes")
    channels = _channels_in_force(parse)
    block_bytes = [channel.block_length * channel.dtype.itemsize for channel in channels]
    declared_sequences = parse.defaults.sequences
    n_sequences = declared_sequences or -(-len(waveform) // sum(block_bytes))
    expected_bytes = n_sequences * sum(block_bytes)
    if len(waveform) < expected_bytes:
        raise _Malformed(_truncation(channels, block_bytes, n_sequences, len(waveform)))
    if element.end < element.start + element.declared_length:
        raise _Malformed(
            f"waveform element at byte {element.offset:,} declares {element.declared_length:,} bytes "
            f"but only {element.end - element.start:,} remain"
        )
    if len(waveform) > expected_bytes:
        raise _Malformed(
            f"waveform of {len(waveform):,} bytes but {n_sequences:,} sequence(s) of {len(channels)} channel(s) "
            f"make {expected_bytes:,}"
        )
    layout = np.dtype([(f"c{c.number}", c.dtype, (c.block_length,)) for c in channels])
    frame = np.frombuffer(waveform, layout, count=n_sequences)
    signals = []
    for channel in channels:
        counts = frame[f"c{channel.number}"].reshape(-1).astype(np.float64)
        signals.append(_to_millivolts(channel, counts))
    return channels, signals


def _truncation(channels: list[_Channel], block_bytes: list[int], n_sequences: int, n_bytes: int) -> str:
    """'truncated waveform: 2,500 of 5,000 samples of lead V3' for the first lead cut short."""
    complete_sequences, rest = divmod(n_bytes, sum(block_bytes))
    short = []
    block_start = 0
    for channel, size in zip(channels, block_bytes):
        in_last = min(max(rest - block_start, 0) // channel.dtype.itemsize, channel.block_length)
        present = complete_sequences * channel.block_length + in_last
        total = n_sequences * channel.block_length
        if present < total:
            short.append((channel.name, present, total))
        block_start += size
    name, present, total = short[0]
    later = f"; {len(short) - 1} more lead(s) cut short" if len(short) > 1 else ""
    return f"truncated waveform: {present:,} of {total:,} samples of lead {name}{later}"


def _to_millivolts(channel: _Channel, counts: np.ndarray) -> np.ndarray:
    null = counts == channel.null_value if channel.null_value is not None else None
    if channel.resolution is None or channel.resolution[0] != RESOLUTION_UNIT_VOLT:
        return counts  # not a voltage: kept only to be left out by ``_join_frames``
    millivolts = (counts - channel.offset) * channel.resolution[1]
    if null is not None:
        millivolts[null] = np.nan
    return millivolts


def _join_frames(parse: _Parse) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """The frames joined per channel: (signal in mV, sampling rate, lead names)."""
    if not parse.frames:
        raise _Malformed("no waveform (tag 0x1E) in the file")
    first, _ = parse.frames[0]
    for index, (channels, _) in enumerate(parse.frames[1:], start=2):
        if [(c.name, c.sampling_rate) for c in channels] != [(c.name, c.sampling_rate) for c in first]:
            raise _Malformed(f"waveform frame {index} changes the channels or the sampling rate of frame 1")
    kept = []
    for row, channel in enumerate(first):
        is_voltage = all(
            frame_channels[row].resolution is not None and frame_channels[row].resolution[0] == RESOLUTION_UNIT_VOLT
            for frame_channels, _ in parse.frames
        )
        if channel.is_status or (not is_voltage and channel.name not in LEADS):
            continue  # status words, respiration, SpO2 …: not ECG leads
        if not is_voltage:
            raise _Malformed(f"lead {channel.name} has no resolution in volts (tag 0x0C): cannot scale to mV")
        kept.append(row)
    if not kept:
        raise _Malformed("no ECG channel in the waveform")
    rates = {first[row].sampling_rate for row in kept}
    if len(rates) > 1:
        described = ", ".join(f"{first[row].name} {first[row].sampling_rate:g} Hz" for row in kept)
        raise _Malformed(f"channels sampled at different rates: {described}")
    rows = [np.concatenate([signals[row] for _, signals in parse.frames]) for row in kept]
    lengths = {len(samples) for samples in rows}
    if len(lengths) > 1:
        described = ", ".join(f"{first[row].name} {len(samples):,}" for row, samples in zip(kept, rows))
        raise _Malformed(f"channels hold different numbers of samples: {described}")
    signal = np.stack(rows).astype(np.float32)
    return signal, rates.pop(), tuple(first[row].name for row in kept)
