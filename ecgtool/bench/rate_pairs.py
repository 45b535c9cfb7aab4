"""The same ECG at two sampling rates: how far a bundle's reading of the two copies agrees.

PTB-XL publishes every ECG at 500 Hz (``filename_hr``) and at 100 Hz (``filename_lr``). A model
must read both copies alike: ``compare_copies`` embeds each copy through the bundle's own input
contract and reports the cosine between the two embeddings (beside the cosine between different
ECGs, and how often a copy's nearest other-rate embedding is its own twin), the overlap of their top-5
findings, and per copy the share of the ECG's own findings ranked in the top 5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgtool.bundle import Bundle, bundle_scores, canonical_options
from ecgtool.io.canonical import load_canonical


@dataclass(frozen=True)
class CopyPair:
    ecg: str
    high: Path
    low: Path
    findings: tuple[int, ...]


def find_pairs(records500: Path, records100: Path, findings_of: dict[str, tuple[int, ...]] | None = None) -> list[CopyPair]:
    """PTB-XL ECGs present in both folders (``NNNNN_hr.hea`` / ``NNNNN_lr.hea``)."""
    high = {re.sub(r"_hr$", "", p.stem): p for p in Path(records500).rglob("*_hr.hea")}
    low = {re.sub(r"_lr$", "", p.stem): p for p in Path(records100).rglob("*_lr.hea")}
    findings_of = findings_of or {}
    return [CopyPair(ecg, high[ecg], low[ecg], findings_of.get(ecg, ())) for ecg in sorted(high.keys() & low.keys())]


def compare_copies(bundle: Bundle, pairs: list[CopyPair], lang: str = "ja") -> dict:
    """Agreement of the bundle's reading of the 500 Hz and 100 Hz copies of each ECG."""
    options = canonical_options(bundle)
    high = torch.from_numpy(np.stack([load_canonical(p.high, options)[1] for p in pairs]))
    low = torch.from_numpy(np.stack([load_canonical(p.low, options)[1] for p in pairs]))
    e_high, e_low = bundle.embed(high), bundle.embed(low)
    cosine = (e_high * e_low).sum(dim=1).numpy()
    # The same figure between different ECGs: what "agree" is measured against.
    cross = (e_high @ e_low.T).numpy()
    other = cross[~np.eye(len(pairs), dtype=bool)]
    s_high, _ = bundle_scores(bundle, e_high, lang)
    s_low, _ = bundle_scores(bundle, e_low, lang)
    top_high = np.argsort(-s_high, axis=1)[:, :5]
    top_low = np.argsort(-s_low, axis=1)[:, :5]
    overlap = np.array([len(set(a) & set(b)) for a, b in zip(top_high, top_low)])
    labelled = [(i, p.findings) for i, p in enumerate(pairs) if p.findings]
    def top5_hits(top):
        hits = [f in top[i] for i, findings in labelled for f in findings]
        return 100.0 * float(np.mean(hits)) if hits else float("nan")
    return {
        "pairs": len(pairs),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_other_ecgs_mean": float(other.mean()),
        "same_ecg_is_nearest": 100.0 * float(np.mean(cross.argmax(axis=1) == np.arange(len(pairs)))),
        "top5_overlap_mean": float(overlap.mean()),
        "top1_agreement": 100.0 * float(np.mean(top_high[:, 0] == top_low[:, 0])),
        "finding_pairs": sum(len(f) for _, f in labelled),
        "top5_of_own_findings_500hz": top5_hits(top_high),
        "top5_of_own_findings_100hz": top5_hits(top_low),
    }
