"""Held-out per-label accuracy of a bundle on a store split (the figures of docs/model-card.md).

Usage: python scripts/heldout.py --store STORE [--model BUNDLE] [--split test] [--lang ja] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ecgtool.evaluate import per_label_accuracy
from ecgtool.predict import resolve_bundle
from ecgtool.registry import load_registry
from ecgtool.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--lang", default="ja")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    registry = load_registry()
    bundle = resolve_bundle(args.model, registry)
    store = Store(args.store)
    result = per_label_accuracy(bundle, store, args.split, args.lang)
    print(f"{args.split} split, {args.lang} prompts: all labels {result['pairs']} pairs, "
          f"top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} %")
    for index, entry in sorted(result["per_label"].items(), key=lambda item: -item[1]["count"]):
        if entry["count"]:
            finding = registry.findings[index]
            print(f"  {finding.en:<60s} {finding.ja:<24s} n={entry['count']:4d}  top-1 {entry['top1']:6.2f}  top-5 {entry['top5']:6.2f}")
    if args.json:
        clean = {**result, "per_label": {registry.findings[i].id: e for i, e in result["per_label"].items() if e["count"]}}
        args.json.write_text(json.dumps({"split": args.split, "lang": args.lang, **clean}, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
