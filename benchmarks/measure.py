"""Records/s of ``ecgtool.measure.measure`` beside the time to read the same records, in one run.

The records: the 4 of ``examples/ptb-xl`` and the 500 Hz PTB-XL records of
``../shared/data/ptb-xl/records500``, each read with ``wfdb.rdrecord`` into canonical form
(12 leads in ``ecgtool.signal.LEADS`` order, mV, float32, the first 10 s). Both loops run on one
core (``OMP_NUM_THREADS=1`` unless set): reading first, then measuring the records read. Both the
wall-clock time and this process's CPU time are reported: on a machine busy with other work the
CPU time is what one free core would take.

Usage: python benchmarks/measure.py [--records500 DIR] [--limit N] [--repeat 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import wfdb  # noqa: E402

from ecgtool.measure import measure  # noqa: E402
from ecgtool.signal import LEADS, N_SAMPLES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS500 = ROOT.parent / "shared" / "data" / "ptb-xl" / "records500"


def read_canonical(header: Path) -> np.ndarray:
    """(12, 5000) float32 mV in canonical lead order, the first 10 s of a 500 Hz WFDB record."""
    record = wfdb.rdrecord(str(header.with_suffix("")), sampto=N_SAMPLES)
    rows = {name.upper(): i for i, name in enumerate(record.sig_name)}
    order = [rows[lead.upper()] for lead in LEADS]
    return np.ascontiguousarray(record.p_signal[:, order].T, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records500", type=Path, default=DEFAULT_RECORDS500)
    parser.add_argument("--limit", type=int, default=None, help="at most this many PTB-XL records")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the records; the fastest counts")
    args = parser.parse_args()
    headers = sorted((ROOT / "examples" / "ptb-xl").glob("*.hea"))
    if args.records500.is_dir():
        headers += sorted(args.records500.glob("*/*_hr.hea"))[: args.limit]
    else:
        print(f"{args.records500} not found: the 4 example records only")
    print(f"{len(headers)} records (500 Hz, 12 leads, 10 s); OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")

    measure(read_canonical(headers[0]))  # imports (scipy) and first-call costs out of the timing
    best = {"read": (float("inf"), float("inf")), "measure": (float("inf"), float("inf"))}
    per_record = np.zeros(len(headers))
    for _ in range(args.repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        signals = [read_canonical(header) for header in headers]
        best["read"] = min(best["read"], (time.perf_counter() - wall, time.process_time() - cpu))
        times = np.zeros(len(headers))
        wall, cpu = time.perf_counter(), time.process_time()
        for i, signal in enumerate(signals):
            started = time.process_time()
            measure(signal)
            times[i] = time.process_time() - started
        elapsed = (time.perf_counter() - wall, time.process_time() - cpu)
        if elapsed < best["measure"]:
            best["measure"], per_record = elapsed, times
    n = len(headers)
    names = {"read": "read     wfdb.rdrecord → canonical", "measure": "measure  ecgtool.measure.measure  "}
    for step, (wall, cpu) in best.items():
        print(f"{names[step]} : {n / cpu:7.1f} records/s CPU ({1000 * cpu / n:5.2f} ms/record), "
              f"{n / wall:7.1f} records/s wall ({1000 * wall / n:5.2f} ms/record)")
    print(f"measure per record, CPU ms: median {1000 * np.median(per_record):.2f}, "
          f"95th percentile {1000 * np.percentile(per_record, 95):.2f}, max {1000 * per_record.max():.2f}")
    print(f"measure / read, CPU time            : {best['measure'][1] / best['read'][1]:7.2f}")


if __name__ == "__main__":
    main()
