"""The bench run: every held-out figure of a bundle on a store split, beside the published ones.

One function, ``run_bench``, computes everything into a plain dict (the ``--json`` output); the
terminal tables, the Markdown and the plot are all rendered from that dict (``bench.report``), so
they cannot disagree. ``regressions`` compares its headline figures with a stored baseline.

Protocols (written out in docs/bench.md):

* Per label (the paper's Table 9): for every (test record, finding in its report) pair, is that
  finding ranked first / within the first five of the 98 label prompts by cosine similarity?
* Superset tests (Tables 2–7), zero-shot: each record's true classes come from the registry's
  superset mapping of its findings; the model ranks the test's class prompts; a record with no
  class is left out (and counted); a record is right when its top-1 class is one of its true
  classes (any-of rule).
* Registry-aggregated superset scores (not in the paper): a class scores the maximum similarity
  of its member findings' label prompts; same rule.
* AUROC: one-vs-rest from the similarities, per finding over all records of the split, per
  superset class over the records the test counts; macro = mean over columns where defined.
* Calibration (bundles that carry one): Brier score, expected calibration error and reliability
  of the probabilities of presence, and per finding sensitivity / specificity / PPV at the stored
  operating point (``bench.calibration``).
* Measured findings (bundles whose calibration combines the model with the measurement): for
  each finding a criterion supports, AUROC of the score and of the combined probability, and
  sensitivity / PPV / F1 of the model-only call, the criterion and the combined call
  (``bench.measured``).
* Retrieval: precision at 10 / 50 of ``search --finding`` queries against the base rate, and the
  share of an ECG's 10 nearest neighbours (other patients) sharing a finding, against chance
  (``bench.retrieval``).
* Against the machines (stores whose files carry a cart's own measurements): ecgtool's
  measurements of the split's records against the machine's, bias and SD per measurement and
  machine program (``bench.machine``); no model involved.
"""

from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ecgtool.bench.calibration import LOWER_IS_BETTER_PREFIX, calibration_figures
from ecgtool.bench.calibration import headline as calibration_headline
from ecgtool.bench.machine import machine_comparison
from ecgtool.bench.measured import measured_finding_figures
from ecgtool.bench.retrieval import retrieval_figures
from ecgtool.bundle import DEFAULT_BUNDLE, Bundle, bundle_scores, check_store_matches, reading_scores

# The per-label tables' row of the reading score (``ecgtool.bundle.reading_scores``), beside ja and en.
READING = "reading"
from ecgtool.errors import EcgToolError
from ecgtool.files import json_safe
from ecgtool.metrics import macro_auroc, per_label_topk, superset_accuracy, top1_confusions
from ecgtool.registry import LANGUAGES, Registry, parse_language
from ecgtool.split_embeddings import embed_split
from ecgtool.split_measurements import measure_split
from ecgtool.store import Store
from ecgtool.supervised_baseline import supervised_figures

BENCH_FORMAT_VERSION = 1
SUPERSET_MODES = ("prompt", "aggregated")
PAPER_SYSTEMS = {"medllama3_jp_v2": "MedLlama3-JP-v2", "swallow": "Llama-3-Swallow"}


class BenchError(EcgToolError):
    """The bench cannot run (mismatched registry, empty split, bad baseline)."""


def run_bench(bundle: Bundle, store: Store, registry: Registry, split: str = "test",
              languages: tuple[str, ...] = LANGUAGES, most_confused: int = 3,
              device: torch.device = torch.device("cpu"), supervised: str | Path | None = None) -> dict:
    """Every bench figure of ``bundle`` on ``split`` of ``store``, with the paper's beside them.

    Raises
    ------
    BenchError
        The bundle was built with another registry than this installation's, the split is empty,
        or a language has no prompt vectors in the bundle.
    BundleError
        The store was built with another registry than the bundle.
    """
    _check_inputs(bundle, store, registry, split, languages)
    try:
        embeddings, findings, record_ids, patient_ids = embed_split(bundle, store, split, device=device)
    except EcgToolError as error:
        raise BenchError(str(error)) from None
    if not findings.any():
        raise BenchError(f"{store.directory}: the {split} split has {len(record_ids)} records but no record with a finding "
                         "(ingest it with --metadata or a sidecar that gives findings)")
    embeddings_tensor = torch.from_numpy(embeddings).to(device)
    label_similarity = {lang: bundle_scores(bundle, embeddings_tensor, lang)[0] for lang in languages}
    # The reading score (what predict ranks and calls with, whatever the language) beside each
    # language's own prompts.
    reading = reading_scores(bundle, embeddings_tensor)[0]
    result = {
        "bench_format_version": BENCH_FORMAT_VERSION,
        "model": _model_name(bundle),
        "store": str(store.directory),
        "split": split,
        "records": len(record_ids),
        "records_with_findings": int(findings.any(axis=1).sum()),
        "registry": {"version": registry.version, "hash": registry.hash},
        "languages": list(languages),
        "per_label": _per_label({**label_similarity, READING: reading}, findings, registry, most_confused),
        "superset": {
            test: _superset_test(bundle, embeddings_tensor, label_similarity, findings, registry, test)
            for test in bundle.description["supersets"]
        },
    }
    if supervised is not None:  # the honest reference: the same encoder trained supervised (ecgtool.supervised_baseline)
        result["supervised_baseline"] = supervised_figures(supervised, store, split, MIN_AUROC_POSITIVES, device)
    result["retrieval"] = retrieval_figures(embeddings, findings, patient_ids, bundle, registry, languages)
    # The findings a measurement supports are read as predict reads them: with the record's
    # measurements, where the bundle's calibration combines the two (ecgtool.combined_calibration).
    combines = bundle.calibration is not None and any(c.fitted for c in bundle.calibration.combined)
    measurements = measure_split(store, split, keep=findings.any(axis=1)) if combines else None
    result["calibration"] = calibration_figures(bundle, reading, findings, registry, measurements)
    if measurements is not None:
        result["measured_findings"] = measured_finding_figures(bundle, reading, findings, measurements)
    if result["calibration"] is not None:
        fitted = result["calibration"]["fitted_on"] or {}
        # The same records scored as fitted on say nothing about held-out calibration: flag it.
        result["calibration"]["in_sample"] = fitted.get("split") == split and fitted.get("store") == store.directory.name
    machine = machine_comparison(store, split)
    if machine is not None:  # only where the split's files carry the machine's own measurements
        result["machine_measurements"] = machine
    result["headline"] = headline_figures(result)
    return json_safe(result)


def per_label_accuracy(bundle: Bundle, store: Store, split: str = "test", lang: str = "ja",
                       device: torch.device = torch.device("cpu")) -> dict:
    """Per-label and overall top-1/top-5 over the split's (record, finding) pairs (Table 9 alone)."""
    embeddings, findings, _, _ = embed_split(bundle, store, split, device=device)
    similarity, _ = bundle_scores(bundle, torch.from_numpy(embeddings).to(device), lang)
    return per_label_topk(similarity, findings)


def _model_name(bundle: Bundle) -> str:
    """The bundle as a reader can find it on another machine: the shipped one by name, others
    by the path given (no absolute path of this machine in a baseline file)."""
    if Path(bundle.directory).resolve() == Path(DEFAULT_BUNDLE).resolve():
        return "ecgtool/models/default (shipped)"
    return str(bundle.directory)


def _check_inputs(bundle: Bundle, store: Store, registry: Registry, split: str, languages) -> None:
    check_store_matches(bundle, store)
    if bundle.description["registry"]["hash"] != registry.hash:
        raise BenchError(f"{bundle.directory}: built with registry {bundle.description['registry']['hash']}, this installation has {registry.hash}")
    if store.counts().get(split, {}).get("records", 0) == 0:
        raise BenchError(f"{store.directory}: the {split} split is empty (nothing to benchmark)")
    store.verify(split)
    for lang in map(parse_language, languages):
        if f"label/{lang}" not in bundle.text:
            raise BenchError(f"{bundle.directory}: no {lang} label prompt vectors in this bundle")


# Macro AUROC is the mean over findings with at least this many positives in the split (fewer make
# a finding's AUROC too uncertain to average); the findings with WEAK_MIN_POSITIVES or more whose
# AUROC is below WEAK_AUROC are listed by name.
MIN_AUROC_POSITIVES = 10
WEAK_MIN_POSITIVES = 20
WEAK_AUROC = 0.75


def _per_label(similarity: dict[str, np.ndarray], findings: np.ndarray, registry: Registry, most_confused: int) -> dict:
    paper = published_per_label()
    measured = {}
    for lang, scores in similarity.items():
        topk = per_label_topk(scores, findings)
        macro, per_label_auroc = macro_auroc(scores, findings)
        confusions = top1_confusions(scores, findings, most_confused)
        measured[lang] = (topk, macro, per_label_auroc, confusions)
    labels = []
    for finding in registry.findings:
        row = {"id": finding.id, "en": finding.en, "ja": finding.ja, "paper": paper.get(finding.en), "ours": {}}
        for lang, (topk, _, per_label_auroc, confusions) in measured.items():
            entry = topk["per_label"][finding.index]
            row["ours"][lang] = {
                **entry,
                "auroc": per_label_auroc[finding.index],
                "confused_with": [
                    {"id": registry.findings[j].id, "count": count} for j, count in confusions.get(finding.index, [])
                ],
            }
        labels.append(row)
    overall = {"paper": paper["all labels"], "ours": {}}
    counts = findings.sum(axis=0)
    for lang, (topk, macro_all, per_label_auroc, _) in measured.items():
        counted = [value for value, count in zip(per_label_auroc, counts) if count >= MIN_AUROC_POSITIVES and not math.isnan(value)]
        overall["ours"][lang] = {
            "pairs": topk["pairs"], "top1": topk["top1"], "top5": topk["top5"],
            "macro_auroc": float(np.mean(counted)) if counted else float("nan"),
            "auroc_labels": len(counted),
            "macro_auroc_all_defined": macro_all,
            "auroc_labels_all_defined": int(sum(not math.isnan(value) for value in per_label_auroc)),
            f"below_{WEAK_AUROC:g}_with_{WEAK_MIN_POSITIVES}_positives": [
                registry.findings[j].id for j, (value, count) in enumerate(zip(per_label_auroc, counts))
                if count >= WEAK_MIN_POSITIVES and value < WEAK_AUROC
            ],
        }
    return {"all": overall, "labels": labels}


def _superset_test(bundle: Bundle, embeddings: torch.Tensor, label_similarity: dict[str, np.ndarray],
                   findings: np.ndarray, registry: Registry, test: str) -> dict:
    class_ids = list(bundle.description["supersets"][test])
    classes = {c.id: c for c in registry.supersets[test]}
    membership = np.zeros((len(registry.findings), len(class_ids)), dtype=bool)
    for column, class_id in enumerate(class_ids):
        for finding_id in registry.findings_in_class(test, class_id):
            membership[registry.index(finding_id), column] = True
    truth = (findings.astype(bool)[:, :, None] & membership[None]).any(axis=1)
    counted = truth.any(axis=1)
    paper = published_superset().get(test, {})
    result = {
        "classes": [{"id": c, "en": classes[c].en, "ja": classes[c].ja, "paper": paper.get(classes[c].en)} for c in class_ids],
        "paper": paper.get("all"),
    }
    for mode in SUPERSET_MODES:
        result[mode] = {}
        for lang, labels in label_similarity.items():
            if mode == "prompt":
                scores = bundle_scores(bundle, embeddings, lang, test)[0]
            else:
                scores = np.stack([labels[:, membership[:, j]].max(axis=1) for j in range(len(class_ids))], axis=1)
            accuracy = superset_accuracy(scores, truth)
            macro, per_class_auroc = macro_auroc(scores[counted], truth[counted])
            accuracy["macro_auroc"] = macro
            accuracy["per_class"] = {
                class_ids[j]: {**entry, "auroc": per_class_auroc[j]} for j, entry in accuracy["per_class"].items()
            }
            result[mode][lang] = accuracy
    return result


def headline_figures(result: dict) -> dict[str, float]:
    """The figures the regression gate watches, all in percentage points (AUROC × 100)."""
    headline = {}
    for lang in result["languages"]:
        overall = result["per_label"]["all"]["ours"][lang]
        headline[f"per_label/{lang}/top1"] = overall["top1"]
        headline[f"per_label/{lang}/top5"] = overall["top5"]
        headline[f"per_label/{lang}/macro_auroc"] = 100 * overall["macro_auroc"]
        for test, tables in result["superset"].items():
            for mode in SUPERSET_MODES:
                headline[f"superset/{test}/{mode}/{lang}/accuracy"] = tables[mode][lang]["accuracy"]
                headline[f"superset/{test}/{mode}/{lang}/macro_auroc"] = 100 * tables[mode][lang]["macro_auroc"]
    reading = result["per_label"]["all"]["ours"].get(READING)
    if reading:
        headline[f"per_label/{READING}/top1"] = reading["top1"]
        headline[f"per_label/{READING}/top5"] = reading["top5"]
        headline[f"per_label/{READING}/macro_auroc"] = 100 * reading["macro_auroc"]
    retrieval = result.get("retrieval")
    if retrieval:
        for lang, queries in retrieval["finding_queries"].items():
            headline[f"retrieval/finding/{lang}/precision_at_10"] = queries["mean_precision_at_10"]
        headline["retrieval/ecg/share_sharing_a_finding"] = retrieval["ecg_queries"]["share_sharing_a_finding"]
    headline.update(calibration_headline(result.get("calibration")))
    return headline


def regressions(result: dict, baseline: dict, max_drop: float, source: str | Path = "the baseline") -> list[str]:
    """Headline figures that fell by more than ``max_drop`` points against ``baseline`` (read
    from ``source``, named in errors).

    Figures missing on either side or undefined (``nan``) are not compared; ``BenchError`` when
    none can be compared at all (a baseline of another split or language, say).
    """
    current, before = result["headline"], _headline(baseline, source)
    compared = [key for key in before if key in current and _defined(before[key]) and _defined(current[key])]
    if not compared:
        raise BenchError(f"{source}: shares no headline figure with this run (other split or languages?)")
    dropped = []
    for key in compared:
        # Calibration errors (Brier, ECE) are better when lower: for them a rise is the drop.
        drop = before[key] - current[key] if not key.startswith(LOWER_IS_BETTER_PREFIX) else current[key] - before[key]
        if drop > max_drop:
            dropped.append(f"{key}: {before[key]:.2f} -> {current[key]:.2f} ({current[key] - before[key]:+.2f} points)")
    return dropped


def _defined(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def published_per_label() -> dict[str, dict]:
    """Table 9 of the paper by English finding name (and ``"all labels"``): count, top-1 %, top-5 %."""
    rows = {}
    for row in _published_rows("table9_per_label_accuracy.csv"):
        rows[row["finding_en"]] = {
            "count": int(row["test_count"]) if row["test_count"] else None,
            "top1": float(row["top1_pct"]),
            "top5": float(row["top5_pct"]),
        }
    return rows


def published_superset() -> dict[str, dict[str, dict]]:
    """Tables 2–7 of the paper: ``{test: {class English name or "all": {system: %}}}``."""
    tables: dict[str, dict[str, dict]] = {}
    for row in _published_rows("tables2to7_superset_accuracy.csv"):
        tables.setdefault(row["test"], {})[row["class"]] = {system: float(row[f"{system}_pct"]) for system in PAPER_SYSTEMS}
    return tables


def _published_rows(name: str) -> list[dict]:
    text = resources.files("ecgtool").joinpath("published", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def load_baseline(path: str | Path) -> dict:
    """A bench JSON output used as the regression gate's reference.

    A baseline must be one: a JSON object whose ``headline`` maps figure names to numbers
    (``null`` where undefined), at least one of them defined. Anything else (``null``, ``[]``,
    ``0``, an object without figures) is a ``BenchError`` naming the file, so that a gate never
    passes by comparing nothing."""
    path = Path(path)
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path}: no such baseline file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = f"{error.msg} at line {error.lineno}" if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
        raise BenchError(f"{path}: not a bench JSON file ({where})") from None
    _headline(baseline, path)
    return baseline


def _headline(baseline, source: str | Path) -> dict:
    """The headline figures of a baseline, or a ``BenchError`` naming ``source`` saying why it is none."""
    if not isinstance(baseline, dict):
        raise BenchError(f"{source}: not a bench baseline (a JSON {_json_kind(baseline)}, not the object "
                         "`ecgtool bench --json` writes)")
    headline = baseline.get("headline")
    if not isinstance(headline, dict) or not headline:
        raise BenchError(f"{source}: not a bench baseline (no headline figures; `ecgtool bench --json` writes them)")
    for key, value in headline.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BenchError(f"{source}: headline figure {key} is a JSON {_json_kind(value)}, not a number")
    if not any(_defined(value) for value in headline.values()):
        raise BenchError(f"{source}: not a bench baseline (every headline figure is null)")
    return headline


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"number ({value})"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
