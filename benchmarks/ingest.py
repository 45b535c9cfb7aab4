"""Ingest end to end on real PTB-XL 500 Hz records, against a plain ``wfdb.rdrecord`` loop.

The shared records (default: PTB-XL ``records500/00000``, 502 records) are replicated under new
record names (headers rewritten, samples symlinked) into sets of ``--records`` records each
(default 3,012 = that folder six times, and 20,000); then, for each set, in one run:

* the baseline: ``wfdb.rdrecord`` over the same files, one process (on the first
  ``--baseline-records`` of a larger set: a rate does not need all; the output says so);
* ``ecgtool ingest`` as a user runs it: the CLI in a new process, into a fresh store, timed from
  process start to its exit, the manifest written (imports, index, conversion, shards, manifest), beside
  the rate the CLI itself prints (its ``ingest()`` call: everything but start-up and imports).

Usage: python benchmarks/ingest.py [--records 3012 20000] [--workers 0] [--baseline-records 3012]
                                  [--source ../shared/data/ptb-xl/records500/00000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wfdb

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPOSITORY.parent / "shared" / "data" / "ptb-xl" / "records500" / "00000"
GOALS = {3012: 4.0, 20000: 6.0}  # × the wfdb.rdrecord loop, end to end (issue 15)


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


def run_cli(records: Path, out: Path, workers: int) -> tuple[float, str]:
    """Seconds from process start to its exit, the manifest written (a few ms after it), and what
    the CLI printed."""
    command = [sys.executable, "-m", "ecgtool.cli", "ingest", str(records), "--out", str(out), "--workers", str(workers)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])}
    started = time.time()
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPOSITORY)
    seconds = time.time() - started
    if finished.returncode != 0 or not (out / "manifest.json").is_file():
        raise SystemExit(f"ecgtool ingest failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}")
    return seconds, finished.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[3012, 20000])
    parser.add_argument("--workers", type=int, default=0, help="--workers of ecgtool ingest (0: one per core)")
    parser.add_argument("--baseline-records", type=int, default=3012)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; records replicated from {args.source}; ecgtool from {REPOSITORY}")
    with tempfile.TemporaryDirectory(prefix="ecgtool-bench-") as tmp:
        for n_records in args.records:
            records = Path(tmp) / f"records-{n_records}"
            headers = replicate(args.source, records, n_records)
            measured = headers[: args.baseline_records]
            baseline = time_wfdb_loop(measured)
            subset = "all" if len(measured) == len(headers) else f"first {len(measured)}, rate applied to all"
            print(f"\n{len(headers)} records")
            print(f"  wfdb.rdrecord loop, 1 process : {baseline:6.0f} records/s ({subset}: {len(headers) / baseline:.1f} s)")
            seconds, printed = run_cli(records, Path(tmp) / f"store-{n_records}", args.workers)
            manifest = json.loads((Path(tmp) / f"store-{n_records}" / "manifest.json").read_text(encoding="utf-8"))
            stored = sum(split["records"] for split in manifest["counts"].values())
            ratio = stored / seconds / baseline
            goal = GOALS.get(n_records)
            verdict = f"; goal ≥ {goal:g}×: {'met' if ratio >= goal else 'NOT met'}" if goal else ""
            print(f"  ecgtool ingest, end to end     : {stored / seconds:6.0f} records/s ({seconds:.1f} s from process "
                  f"start to exit, manifest written, {ratio:.1f}× the wfdb loop{verdict}; {stored} stored, "
                  f"{len(manifest['skipped'])} skipped)")
            reported = re.search(r"converted (\d+) records in ([\d.]+) s \(([\d,]+) records/s\)", printed)
            if reported:
                call = float(reported[2])
                print(f"  ecgtool ingest() as it reports : {reported[3]:>6} records/s ({call:.1f} s: index, conversion, "
                      f"shards, manifest; start-up, imports and exit {seconds - call:.1f} s)")


if __name__ == "__main__":
    main()
