"""Directory scoring throughput of ``ecgtool predict`` against a one-record-at-a-time loop.

Both score the same real WFDB records (the 500 Hz PTB-XL records, replicated under new names to
``--records``) with the same bundle, in the same run:

* baseline: for each record, ``predict_record`` (read, canonicalise, embed one record);
* ``predict_directory`` with 1, 2, … reader processes and batches of ``--batch-size``;
* from an ingested store (``--store``): embeddings of a whole split, reading the shards.

Usage: python benchmarks/predict.py [--model BUNDLE] [--records 2000] [--workers 1 2]
                                    [--baseline-records 200] [--store STORE] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from ecgtool.bundle import resolve_bundle
from ecgtool.predict import predict_directory, predict_record
from ecgtool.split_embeddings import embed_split
from ecgtool.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import DEFAULT_SOURCE, replicate  # noqa: E402  (the sibling benchmark's replication)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--baseline-records", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    bundle = resolve_bundle(args.model).to(device)
    with tempfile.TemporaryDirectory(prefix="ecgtool-bench-") as tmp:
        headers = replicate(DEFAULT_SOURCE, Path(tmp) / "records", args.records)
        print(f"{len(headers)} WFDB records; device {device}")
        started = time.perf_counter()
        for header in headers[: args.baseline_records]:
            predict_record(header, bundle, device=device)
        baseline = min(len(headers), args.baseline_records) / (time.perf_counter() - started)
        print(f"baseline  one record at a time           : {baseline:8.1f} records/s")
        for workers in args.workers:
            result = predict_directory([Path(tmp) / "records"], Path(tmp) / f"scores-{workers}.csv", bundle,
                                       batch_size=args.batch_size, workers=workers, device=device)
            print(f"predict   directory, {workers} reader(s), batch {args.batch_size}: "
                  f"{result.records_per_second:8.1f} records/s ({result.records_per_second / baseline:.1f}x baseline)")
    if args.store:
        store = Store(args.store)
        for split in ("train", "val", "test"):
            n = store.counts()[split]["records"]
            if not n:
                continue
            started = time.perf_counter()
            embed_split(bundle, store, split, batch_size=1024 if device.type == "cuda" else 64, device=device)
            print(f"store     {split:5s} split ({n} records)       : {n / (time.perf_counter() - started):8.1f} records/s")


if __name__ == "__main__":
    main()
