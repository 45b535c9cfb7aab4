"""The 500 Hz and 100 Hz copies of the same PTB-XL ECGs through one or more bundles.

    python benchmarks/rate_pairs.py [--model BUNDLE ...] [--data ../shared/data] [--lang ja]

Prints, per bundle: the cosine between the two copies' embeddings (mean, min), the overlap of
their top-5 findings (of 5), top-1 agreement, and for each copy the share of the ECG's own
findings (PTB-XL's SCP statements through the registry) ranked in its top 5.
"""

from __future__ import annotations

import argparse
import csv
import ast
from pathlib import Path

from ecgtool.bench.rate_pairs import compare_copies, find_pairs
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.registry import load_registry

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, help="bundle (repeatable; default: the shipped one)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--lang", default="ja")
    args = parser.parse_args()
    registry = load_registry()
    findings_of = {}
    with open(args.data / "ptb-xl" / "ptbxl_database.csv", encoding="utf-8") as table:
        for row in csv.DictReader(table):
            found = set()
            for code in ast.literal_eval(row["scp_codes"]):
                found.update(registry.codes_to_findings("scp", code) or ())
            findings_of[f"{int(float(row['ecg_id'])):05d}"] = tuple(registry.index(f) for f in found)
    pairs = find_pairs(args.data / "ptb-xl" / "records500", args.data / "ptb-xl" / "records100", findings_of)
    print(f"{len(pairs)} ECGs at both 500 Hz and 100 Hz in {args.data / 'ptb-xl'}")
    print("| bundle | filters | cosine same ECG: mean / min | cosine other ECGs | twin is nearest % | top-5 overlap (of 5) | top-1 agree % | own findings in top 5: 500 Hz / 100 Hz % |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.model or [DEFAULT_BUNDLE]:
        bundle = load_bundle(model, registry)
        r = compare_copies(bundle, pairs, args.lang)
        filters = ", ".join(f"{f['type']} {f['cutoff_hz']:g} Hz" for f in bundle.contract.get("filters", [])) or "none"
        print(f"| {model} | {filters} | {r['cosine_mean']:.3f} / {r['cosine_min']:.3f} | {r['cosine_other_ecgs_mean']:.3f} | "
              f"{r['same_ecg_is_nearest']:.1f} | {r['top5_overlap_mean']:.2f} | "
              f"{r['top1_agreement']:.1f} | {r['top5_of_own_findings_500hz']:.1f} / {r['top5_of_own_findings_100hz']:.1f} "
              f"({r['finding_pairs']} pairs) |")


if __name__ == "__main__":
    main()
