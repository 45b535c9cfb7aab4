"""What measuring costs ``ecgtool predict`` of a directory: the same records scored with and
without measurements (``--no-measurements``), in the same run, alternating, on the CPU.

Issue 22's limit: measuring must not slow ``predict`` of a directory by more than 20 %. Each
round scores the directory twice into fresh outputs, once each way, in alternating order (the
first of a pair pays for a cold page cache less and less as rounds go on); the figure is the
ratio of the best times, and the median ratio of the rounds beside it.

Usage: python benchmarks/predict_measure.py [--model BUNDLE] [--records 500] [--rounds 3]
                                            [--workers 1] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ecgtool.bundle import resolve_bundle
from ecgtool.predict import ReadingOptions, predict_directory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import DEFAULT_SOURCE, replicate  # noqa: E402  (the sibling benchmark's replication)

LIMIT = 0.20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cpu")
    bundle = resolve_bundle(args.model).to(device)
    with tempfile.TemporaryDirectory(prefix="ecgtool-bench-") as tmp:
        records = Path(tmp) / "records"
        headers = replicate(DEFAULT_SOURCE, records, args.records)
        print(f"{len(headers)} WFDB records (500 Hz PTB-XL, replicated); CPU, {torch.get_num_threads()} torch "
              f"threads, {args.workers} reader(s), batch {args.batch_size}")
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(args.rounds):
            for measured in ((False, True) if round_ % 2 == 0 else (True, False)):
                out = Path(tmp) / f"scores-{round_}-{int(measured)}.jsonl"
                started = time.perf_counter()
                result = predict_directory([records], out, bundle, ReadingOptions(measure=measured),
                                           batch_size=args.batch_size, workers=args.workers, device=device)
                seconds[measured].append(time.perf_counter() - started)
                assert result.scored == len(headers), f"scored {result.scored} of {len(headers)}"
        without, with_ = min(seconds[False]), min(seconds[True])
        ratios = [w / wo for w, wo in zip(seconds[True], seconds[False])]
        print(f"without measurements (--no-measurements): {len(headers) / without:7.1f} records/s "
              f"(best of {args.rounds}: {without:.2f} s)")
        print(f"with measurements (default)             : {len(headers) / with_:7.1f} records/s "
              f"(best of {args.rounds}: {with_:.2f} s)")
        overhead, median = with_ / without - 1, statistics.median(ratios) - 1
        print(f"measuring adds {overhead:+.1%} (best times; median of the rounds {median:+.1%}); "
              f"issue 22's limit {LIMIT:.0%}: {'met' if overhead <= LIMIT else 'NOT met'}")


if __name__ == "__main__":
    main()
