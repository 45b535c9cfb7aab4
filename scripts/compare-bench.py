"""Two `ecgtool bench --json` results side by side, as the Markdown tables of docs/model-card.md.

    python scripts/compare-bench.py OLD.json NEW.json [--min-count 20]

Prints the headline figures of both (per-label top-1 / top-5 / macro AUROC, superset tests, both
languages), then one row per finding with at least --min-count test positives: count, AUROC and
top-1 / top-5 of the old and the new model, in both languages, beside the paper's Table 9.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--min-count", type=int, default=20)
    args = parser.parse_args()
    old, new = (json.load(open(path, encoding="utf-8")) for path in (args.old, args.new))
    print("| figure | old ja | new ja | old en | new en |")
    print("|---|---|---|---|---|")
    for key in new["headline"]:
        if "/ja/" not in key:
            continue
        en = key.replace("/ja/", "/en/")
        cells = [old["headline"].get(key), new["headline"].get(key), old["headline"].get(en), new["headline"].get(en)]
        print(f"| {key.replace('/ja/', '/')} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in cells) + " |")
    print()
    print("| finding | 所見 | n | AUROC ja old → new | AUROC en new | top-1 ja old → new | top-5 ja old → new | top-1 / top-5 en new | paper top-1 / top-5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    old_rows = {row["id"]: row for row in old["per_label"]["labels"]}
    rows = [row for row in new["per_label"]["labels"] if row["ours"]["ja"]["count"] >= args.min_count]
    for row in sorted(rows, key=lambda r: -r["ours"]["ja"]["count"]):
        ja, en, was = row["ours"]["ja"], row["ours"]["en"], old_rows[row["id"]]["ours"]["ja"]
        paper = row.get("paper") or {}
        print(f"| {row['en']} | {row['ja']} | {ja['count']} | {was['auroc']:.3f} → **{ja['auroc']:.3f}** | {en['auroc']:.3f} | "
              f"{was['top1']:.1f} → {ja['top1']:.1f} | {was['top5']:.1f} → {ja['top5']:.1f} | {en['top1']:.1f} / {en['top5']:.1f} | "
              f"{paper.get('top1', float('nan')):.1f} / {paper.get('top5', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
