"""Retrieval quality of a bundle on a held-out split: what ``ecgtool search`` would return.

Two measures, both against what chance gives on the same records:

* **finding queries**: for each finding with at least ``MIN_POSITIVES`` records in the split,
  the split's records ranked by the finding's label vector (as ``search --finding``); precision
  at 10 and at 50 (share of the top records whose stored labels hold the finding) against the
  finding's base rate (the precision of a random ranking);
* **ECG queries**: each labelled record of the split as a query (as ``search --like-id
  --exclude-patient``), its 10 nearest labelled records of other patients; the share of those
  neighbours that share at least one finding with the query, against chance: the share of all
  its candidate records (labelled, other patients) that do.

Figures are percentages; a figure that cannot be computed is ``None`` (never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ecgtool.bundle import Bundle
from ecgtool.registry import Registry
from ecgtool.search import similarities, top_rows

MIN_POSITIVES = 10
PRECISION_AT = (10, 50)
NEIGHBOURS = 10
_QUERY_BLOCK = 512


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _finding_queries(vectors: np.ndarray, truth: np.ndarray, label_vectors: torch.Tensor, bundle: Bundle,
                     registry: Registry) -> dict:
    n = len(vectors)
    cosines = similarities(vectors, label_vectors.float().cpu())
    rows = []
    for index, finding_id in enumerate(bundle.findings):
        positives = truth[:, index]
        count = int(positives.sum())
        if count < MIN_POSITIVES:
            continue
        order = top_rows(cosines[:, index], None, max(PRECISION_AT))
        base_rate = 100.0 * count / n
        row = {"id": finding_id, "ja": registry.finding(finding_id).ja, "en": registry.finding(finding_id).en,
               "positives": count, "base_rate": base_rate}
        for k in PRECISION_AT:
            precision = 100.0 * float(positives[order[:k]].mean()) if n >= k else None
            row[f"precision_at_{k}"] = precision
            row[f"lift_at_{k}"] = precision / base_rate if precision is not None else None
        rows.append(row)
    summary = {"findings": len(rows), "mean_base_rate": _mean([r["base_rate"] for r in rows])}
    for k in PRECISION_AT:
        summary[f"mean_precision_at_{k}"] = _mean([r[f"precision_at_{k}"] for r in rows])
    return {**summary, "per_finding": rows}


def _ecg_queries(vectors: np.ndarray, truth: np.ndarray, patient_ids: np.ndarray) -> dict:
    labelled = np.flatnonzero(truth.any(axis=1))
    vectors, truth, patients = vectors[labelled], truth[labelled].astype(np.float32), patient_ids[labelled]
    shares, chances = [], []
    for start in range(0, len(labelled), _QUERY_BLOCK):
        block = np.arange(start, min(len(labelled), start + _QUERY_BLOCK))
        queries = torch.from_numpy(vectors[block].astype(np.float32))
        cosines = similarities(vectors, queries).T  # (block, candidates)
        shares_finding = (truth[block] @ truth.T) > 0
        for row, query in enumerate(block):
            candidates = patients != patients[query]  # leaves out the query itself too
            if not candidates.any():
                continue
            nearest = top_rows(cosines[row], candidates, NEIGHBOURS)
            shares.append(100.0 * float(shares_finding[row, nearest].mean()))
            chances.append(100.0 * float(shares_finding[row, candidates].mean()))
    share, chance = _mean(shares), _mean(chances)
    return {
        "queries": len(shares),
        "neighbours": NEIGHBOURS,
        "share_sharing_a_finding": share,
        "chance": chance,
        "lift": share / chance if share is not None and chance else None,
    }


def retrieval_figures(embeddings: np.ndarray, findings: np.ndarray, patient_ids: Sequence[str], bundle: Bundle,
                      registry: Registry, languages: Sequence[str] = ("ja", "en")) -> dict:
    """Retrieval figures of a split (see the module docstring) as a JSON-able dict.

    Parameters
    ----------
    embeddings : (n, d) unit vectors of the split's records (``split_embeddings.embed_split``)
    findings : (n, 98) multi-hot stored labels, registry order
    patient_ids : the records' patients (same order)
    languages : the label vectors' languages; with several, ``"both"`` (their mean, what
        ``search --finding`` uses by default) is measured too
    """
    vectors = np.asarray(embeddings, dtype=np.float16)
    truth = np.asarray(findings) > 0
    patients = np.asarray(list(patient_ids), dtype=object)
    if not (len(vectors) == len(truth) == len(patients)):
        raise ValueError(f"{len(vectors)} embeddings, {len(truth)} label rows and {len(patients)} patient ids")
    by_language = {}
    for lang in languages:
        by_language[lang] = _finding_queries(vectors, truth, bundle.text[f"label/{lang}"], bundle, registry)
    if len(languages) > 1:
        mean = torch.stack([bundle.text[f"label/{lang}"].float().cpu() for lang in languages]).mean(0)
        by_language["both"] = _finding_queries(vectors, truth, torch.nn.functional.normalize(mean, dim=-1), bundle, registry)
    return {
        "records": int(len(vectors)),
        "records_with_findings": int(truth.any(axis=1).sum()),
        "min_positives": MIN_POSITIVES,
        "finding_queries": by_language,
        "ecg_queries": _ecg_queries(vectors, truth, patients),
    }


def _text(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def retrieval_tables(figures: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the retrieval tables, shared by the terminal and Markdown."""
    langs = list(figures["finding_queries"])
    summary_header = ["query", "findings / queries", "P@10 %", "P@50 %", "chance %"]
    summary = [[f"--finding ({lang})", str(q["findings"]), _text(q["mean_precision_at_10"]), _text(q["mean_precision_at_50"]),
                _text(q["mean_base_rate"])] for lang, q in figures["finding_queries"].items()]
    ecg = figures["ecg_queries"]
    summary.append([f"ECG → {ecg['neighbours']} nearest (other patients) sharing a finding", str(ecg["queries"]),
                    _text(ecg["share_sharing_a_finding"]), "", _text(ecg["chance"])])
    per_header = ["finding", "所見", "n", "base %", *(f"P@{k} {lang}" for lang in langs for k in PRECISION_AT)]
    first = figures["finding_queries"][langs[0]]["per_finding"] if langs else []
    by_lang = {lang: {r["id"]: r for r in q["per_finding"]} for lang, q in figures["finding_queries"].items()}
    per_rows = [[r["en"], r["ja"], str(r["positives"]), _text(r["base_rate"]),
                 *(_text(by_lang[lang][r["id"]][f"precision_at_{k}"]) for lang in langs for k in PRECISION_AT)]
                for r in first]
    return [
        (f"Retrieval on {figures['records']} records ({figures['records_with_findings']} labelled): "
         f"mean precision of --finding queries (findings with ≥ {figures['min_positives']} positives) "
         "and of ECG queries, against chance", summary_header, summary),
        ("Retrieval per finding: precision at 10 / 50 of a --finding query", per_header, per_rows),
    ]


def retrieval_markdown(figures: dict) -> str:
    parts = []
    for title, header, rows in retrieval_tables(figures):
        parts.append(f"### {title}\n")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "|".join("---" for _ in header) + "|")
        parts.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
        parts.append("")
    return "\n".join(parts) + "\n"


def print_retrieval(figures: dict, console) -> None:
    from ecgtool.bench.table import print_table

    for title, header, rows in retrieval_tables(figures):
        print_table(console, title, header, rows, text_columns=2 if "所見" in header else 1)
