"""Reading speed per record format: ecgtool's reader against the PyPI library that reads the same
files, where one exists, measured in the same run on the same files.

Usage: python benchmarks/readers.py [--repeat 20] [--data ../shared/data]

For each format, every sample file of ``../shared/data`` is read ``--repeat`` times with
``ecgtool.io.read_record`` (samples to mV, metadata, derived leads) and, as the baseline, with
``wfdb.rdrecord`` (WFDB), ``sierraecg.read_file`` (Philips XML) or ``pydicom.dcmread`` +
``waveform_array`` (DICOM). Formats without a PyPI reader (MFER, GE MUSE / CardioSoft, HL7 aECG,
SCP-ECG) have no baseline column. Single process, so the figures are per core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ecgtool.io import read_record

SAMPLES = {
    "wfdb": "ptb-xl/records500/00000/000[0-4]?_hr.hea",
    "mfer": "mfer/*.mwf",
    "ge-muse": "formats/ge-muse-xml/*.xml",
    "ge-cardiosoft": "formats/ge-cardiosoft-xml/*.xml",
    "philips": "formats/philips-xml/*",
    "hl7-aecg": "formats/hl7-aecg/*.xml",
    "dicom-ecg": "formats/dicom-ecg/*.dcm",
    "scp-ecg": "formats/scp-ecg/*.scp",
}


def _baseline(name: str):
    if name == "wfdb":
        import wfdb

        return "wfdb.rdrecord", lambda path: wfdb.rdrecord(str(path.with_suffix("")))
    if name == "philips":
        try:
            from sierraecg import read_file
        except ImportError:
            return None, None
        return "sierraecg.read_file", lambda path: read_file(str(path))
    if name == "dicom-ecg":
        import pydicom

        def read_dicom(path):
            dataset = pydicom.dcmread(path)
            return [dataset.waveform_array(index) for index in range(len(dataset.WaveformSequence))]

        return "pydicom.dcmread + waveform_array", read_dicom
    return None, None


def _rate(read, paths: list[Path], repeat: int) -> float:
    for path in paths:
        read(path)  # warm caches and imports
    started = time.perf_counter()
    for _ in range(repeat):
        for path in paths:
            read(path)
    return repeat * len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    print(f"{'format':<14} {'files':>5} {'ecgtool rec/s':>14} {'baseline rec/s':>15}  baseline")
    for name, pattern in SAMPLES.items():
        paths = sorted(path for path in args.data.glob(pattern) if path.name != "README.md")
        if not paths:
            continue
        ours = _rate(read_record, paths, args.repeat)
        label, baseline = _baseline(name)
        theirs = f"{_rate(baseline, paths, args.repeat):15.1f}" if baseline else f"{'–':>15}"
        print(f"{name:<14} {len(paths):>5} {ours:14.1f} {theirs}  {label or 'no PyPI reader'}")


if __name__ == "__main__":
    main()
