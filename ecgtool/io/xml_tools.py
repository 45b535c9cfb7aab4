"""What the XML readers share: safe parsing, byte-order marks, namespaces, root sniffing, units.

Vendor exports arrive as UTF-8, ISO-8859-1 or UTF-16 (with or without a byte-order mark) and
with or without a default namespace (Philips, HL7). ``parse_xml`` hides all of that: it parses
with ``defusedxml`` (no entity expansion, no external references), lets expat pick the encoding
from the BOM and the XML declaration, and strips namespaces from tags and attributes so that
readers find elements by their local names (``restingecgdata``, not
``{http://www3.medical.philips.com}restingecgdata``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.record import Record
from ecgtool.signal import with_derived_limb_leads

# The prolog before the root element: declaration, processing instructions, comments, DOCTYPE.
_PROLOG_AND_ROOT = re.compile(
    r"\A\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>\s*)*"
    r"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)",
    re.DOTALL,
)

# Units as vendors spell them, to millivolts (amplitude) and milliseconds (duration).
_MILLIVOLTS_PER_UNIT = {
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolts": 1e-3, "microvolt": 1e-3, "uvperlsb": 1e-3,
    "mv": 1.0, "millivolts": 1.0, "millivolt": 1.0,
    "v": 1e3, "volts": 1e3, "nv": 1e-6, "nanovolts": 1e-6,
}
_MILLISECONDS_PER_UNIT = {"ms": 1.0, "msec": 1.0, "milliseconds": 1.0, "s": 1e3, "sec": 1e3, "seconds": 1e3, "us": 1e-3}


def decode_head(head: bytes) -> str:
    """The first bytes of a file as text, whatever the encoding (BOM or UTF-16 guessed from NULs)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return head[3:].decode("utf-8", errors="ignore")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    if head.startswith(b"<\x00"):
        return head.decode("utf-16-le", errors="ignore")
    if head.startswith(b"\x00<"):
        return head.decode("utf-16-be", errors="ignore")
    # Element names are ASCII: Latin-1 never fails and keeps them intact for UTF-8 files too.
    return head.decode("latin-1")


def root_element(head: bytes) -> str | None:
    """Local name of the root element found in the first bytes of a file, or None if not XML.

    Never raises; reads only what is given (readers pass ``SNIFF_BYTES``), so a prolog longer
    than that (pages of comments) is not recognised.
    """
    match = _PROLOG_AND_ROOT.match(decode_head(head))
    return match.group(1) if match else None


def parse_xml(path: Path) -> ElementTree.Element:
    """The root element of the XML file at ``path``, namespaces stripped.

    Raises
    ------
    RecordError
        The file cannot be read, is not well-formed XML ("malformed XML: mismatched tag: line
        12, column 4"), or uses entities or external references (refused for safety).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RecordError(path, f"cannot read: {error.strerror or error}") from None
    try:
        root = fromstring(data)
    except ElementTree.ParseError as error:
        root = _as_windows_1252(data)
        if root is None:
            raise RecordError(path, f"malformed XML: {error}") from None
    except DefusedXmlException as error:
        raise RecordError(path, f"XML refused for safety: {error}") from None
    except (ValueError, LookupError) as error:  # e.g. an encoding that Python does not know
        raise RecordError(path, f"malformed XML: {error}") from None
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]
        if any(key.startswith("{") for key in element.attrib):
            element.attrib = {key.split("}", 1)[-1]: value for key, value in element.attrib.items()}
    return root


_DECLARATION = re.compile(rb"\A\s*<\?xml[^>]*\?>")


def _as_windows_1252(data: bytes) -> ElementTree.Element | None:
    """Second chance for a file that says (or defaults to) UTF-8 but holds Windows-1252 bytes.

    Exporters on Windows often write "é", "µ" or "°" in the cart's code page under a UTF-8
    declaration; expat then stops at the first such byte. Only files without a BOM that are not
    valid UTF-8 get this second parse; anything else wrong with them still fails.
    """
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        data.decode("utf-8")
        return None  # valid UTF-8: the parse error is real
    except UnicodeDecodeError:
        pass
    declaration = _DECLARATION.match(data)
    if declaration and re.search(rb"encoding\s*=\s*[\"'](?!utf-?8)", declaration.group(0), re.IGNORECASE):
        return None  # it declared another encoding, which expat already applied
    text = data[declaration.end():].decode("cp1252", errors="replace") if declaration else data.decode("cp1252", errors="replace")
    try:
        return fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return None


def text_of(element: ElementTree.Element | None, path: str = ".") -> str | None:
    """Stripped text of the element at ``path`` below ``element``; None when absent or empty."""
    if element is None:
        return None
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def number(text: str | None) -> float | None:
    """``text`` as a float, or None when absent or not a number ("Failed", "Indeterminate", "")."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value else None  # NaN is no measurement


def millivolts_per_unit(unit: str | None) -> float | None:
    """Factor from an amplitude unit as vendors write it ("uV", "MICROVOLTS", "mV" …) to mV."""
    if unit is None:
        return None
    return _MILLIVOLTS_PER_UNIT.get(unit.strip().lower())


def milliseconds_per_unit(unit: str | None) -> float | None:
    """Factor from a duration unit ("ms", "s" …) to ms."""
    if unit is None:
        return None
    return _MILLISECONDS_PER_UNIT.get(unit.strip().lower())


def require_leads(leads: dict, required, path: Path, where: str) -> None:
    """``RecordError`` naming the ``required`` leads absent from ``leads`` ("lead V4 missing from …")."""
    missing = [lead for lead in required if lead not in leads]
    if missing:
        raise RecordError(path, f"lead{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing from {where}")


def require_equal_lengths(leads: dict, path: Path) -> None:
    """``RecordError`` naming the first lead whose sample count differs from the longest lead's."""
    lengths = {name: len(samples) for name, samples in leads.items()}
    longest = max(lengths.values())
    short = next((name for name, length in lengths.items() if length != longest), None)
    if short is not None:
        raise RecordError(path, f"inconsistent lengths: lead {short} has {lengths[short]:,} samples, others {longest:,}")


def record_from_leads(path: Path, leads: dict, sampling_rate: float, **metadata) -> Record:
    """The ``Record`` of checked per-lead mV arrays (file order kept), with the limb leads the
    file lacks derived from I and II; ``metadata`` are the other ``Record`` fields."""
    record = Record(
        record_id=path.stem,
        path=str(path),
        signal=np.stack(list(leads.values())).astype(np.float32),
        sampling_rate=sampling_rate,
        lead_names=tuple(leads),
        **metadata,
    )
    return with_derived_limb_leads(record)
