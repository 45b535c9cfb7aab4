"""Ingest throughput on real PTB-XL 500 Hz records, against a plain ``wfdb.rdrecord`` loop.

The 550 shared records are replicated under new record names (headers rewritten, samples
symlinked) to at least ``--records`` records in a temporary directory; then, in one run:

* the baseline: ``wfdb.rdrecord`` over the same files (the first ``--baseline-records`` of them:
  a rate does not need all), one process;
* ``ecgtool.ingest.ingest`` with 1, 2, … worker processes, into a fresh store each time, timed
  from start to manifest (index, read, canonical transform, float16, HDF5 shards).

Usage: python benchmarks/ingest.py [--records 5000] [--workers 1 2] [--baseline-records 2000]
                                  [--source ../shared/data/ptb-xl/records500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import wfdb

from ecgtool.ingest import IngestOptions, ingest

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb-xl" / "records500"


def replicate(source: Path, target: Path, n_records: int) -> list[Path]:
    originals = sorted(source.rglob("*.hea"))
    if not originals:
        raise SystemExit(f"no .hea files under {source}")
    headers = []
    copy = 0
    while len(headers) < n_records:
        folder = target / f"copy{copy:03d}"
        folder.mkdir(parents=True)
        for header in originals:
            if len(headers) == n_records:
                break
            name = f"{header.stem}c{copy:03d}"
            text = header.read_text(encoding="latin-1").replace(header.stem, name)
            (folder / f"{name}.hea").write_text(text, encoding="latin-1")
            os.symlink(header.with_suffix(".dat").resolve(), folder / f"{name}.dat")
            headers.append(folder / f"{name}.hea")
        copy += 1
    return headers


def time_wfdb_loop(headers: list[Path]) -> float:
    started = time.perf_counter()
    for header in headers:
        wfdb.rdrecord(str(header.with_suffix("")))
    return len(headers) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--baseline-records", type=int, default=2000)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecgtool-bench-") as tmp:
        records = Path(tmp) / "records"
        headers = replicate(args.source, records, args.records)
        print(f"{len(headers)} records replicated from {args.source}; {os.cpu_count()} CPU cores")
        baseline = time_wfdb_loop(headers[: args.baseline_records])
        print(f"baseline  wfdb.rdrecord loop, 1 process : {baseline:8.0f} records/s (first {min(len(headers), args.baseline_records)} records)")
        for workers in args.workers:
            out = Path(tmp) / f"store-{workers}"
            started = time.perf_counter()
            result = ingest([records], out, options=IngestOptions(workers=workers))
            seconds = time.perf_counter() - started
            stored = sum(c["records"] for c in result.manifest["counts"].values())
            print(
                f"ecgtool   ingest, {workers} worker(s)         : {stored / seconds:8.0f} records/s "
                f"({stored} stored, {len(result.manifest['skipped'])} skipped, {seconds:.1f} s, "
                f"{stored / seconds / baseline:.1f}x baseline)"
            )


if __name__ == "__main__":
    main()
