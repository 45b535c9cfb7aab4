"""Render a ``run_bench`` result: Rich tables on the terminal, Markdown, and a per-label plot.

Every renderer reads only the result dict and formats numbers with the same helpers, so the
terminal, the Markdown and the JSON show the same figures.
"""

from __future__ import annotations

import math
from pathlib import Path

from ecgtool.bench.calibration import operating_point_table, reliability_table, summary_table, uncalibrated_note
from ecgtool.bench.machine import ALL_RECORDS, COMPARED_KEYS
from ecgtool.bench.retrieval import print_retrieval, retrieval_markdown
from ecgtool.bench.run import PAPER_SYSTEMS, SUPERSET_MODES
from ecgtool.bench.table import print_table
from ecgtool.plot import japanese_font, save_figure

MODE_TITLES = {
    "prompt": "zero-shot class prompts (the paper's protocol)",
    "aggregated": "registry-aggregated: a class scores its best member finding (not in the paper)",
}
TEST_TITLES = {"superclass": "Superclass (Tables 2–3)", "rhythm": "Rhythm (Tables 4–5)", "mitbih": "MIT-BIH beat type (Tables 6–7)"}
# Each measurement the machines print: its name in the table and its unit.
MACHINE_MEASUREMENTS = {
    "heart_rate_bpm": ("heart rate", "bpm"), "rr_ms": ("RR", "ms"), "pr_ms": ("PR", "ms"), "qrs_ms": ("QRS", "ms"),
    "qt_ms": ("QT", "ms"), "qtc_ms": ("QTc", "ms"), "p_axis_deg": ("P axis", "°"), "qrs_axis_deg": ("QRS axis", "°"),
    "t_axis_deg": ("T axis", "°"),
}


def percent(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def auroc_text(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def count_text(value) -> str:
    return "–" if value is None else str(value)


# --- the tables as rows of strings (shared by the terminal and Markdown) -------------------------

def summary_lines(result: dict) -> list[str]:
    lines = [
        f"model {result['model']} · store {result['store']} · split {result['split']}: "
        f"{result['records']} records, {result['records_with_findings']} with at least one finding",
        f"registry {result['registry']['version']} ({result['registry']['hash']})",
    ]
    warning = in_sample_warning(result["split"])
    if warning:
        lines.append(f"WARNING: {warning}")
    supervised = result.get("supervised_baseline")
    if supervised:
        ours = result["per_label"]["all"]["ours"]
        zero_shot = ", ".join(f"{lang} {auroc_text(ours[lang]['macro_auroc'])}" for lang in ours)
        lines.append(f"supervised baseline (same encoder, binary cross-entropy on the findings, {supervised['checkpoint']}): "
                     f"macro AUROC {auroc_text(supervised['macro_auroc'])} over {supervised['auroc_labels']} findings; "
                     f"zero-shot: {zero_shot}")
    return lines


def in_sample_warning(split: str) -> str | None:
    """Why figures on ``split`` are not held-out figures, or None for val and test."""
    if split != "train":
        return None
    return ("the train split: a model trained on this store has learnt these records, so these figures are not "
            "held-out and overstate its accuracy (use --split test)")


def per_label_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-label table: ours per language, then the paper's Table 9.

    The pair count does not depend on the prompts' language, so it is shown once. After the
    languages, the reading score's columns (the mean over languages predict calls with).
    """
    langs = [*result["languages"], *(["reading"] if "reading" in result["per_label"]["all"]["ours"] else [])]
    header = ["finding", "所見", "n", *(f"{name} {lang}" for lang in langs for name in ("top-1", "top-5", "AUROC")),
              "paper n", "paper top-1", "paper top-5", f"most mistaken for ({langs[0]})"]
    overall = result["per_label"]["all"]["ours"]
    paper_all = result["per_label"]["all"]["paper"]
    rows = [[
        "all labels", "全所見", count_text(overall[langs[0]]["pairs"]),
        *(cell for lang in langs for cell in (percent(overall[lang]["top1"]), percent(overall[lang]["top5"]),
                                              auroc_text(overall[lang]["macro_auroc"]))),
        count_text(paper_all["count"]), percent(paper_all["top1"]), percent(paper_all["top5"]), "",
    ]]
    names = {row["id"]: row for row in result["per_label"]["labels"]}
    name_key = "ja" if langs[0] == "ja" else "en"
    for row in result["per_label"]["labels"]:
        paper = row["paper"] or {}
        ours = row["ours"]
        mistaken = ", ".join(f"{names[c['id']][name_key]} ({c['count']})" for c in ours[langs[0]]["confused_with"])
        rows.append([
            row["en"], row["ja"], count_text(ours[langs[0]]["count"]),
            *(cell for lang in langs for cell in (percent(ours[lang]["top1"]), percent(ours[lang]["top5"]),
                                                  auroc_text(ours[lang]["auroc"]))),
            count_text(paper.get("count")), percent(paper.get("top1")), percent(paper.get("top5")), mistaken,
        ])
    return header, rows


def superset_table(result: dict, test: str) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and footnotes of one superset test: ours per mode and language, then the paper's."""
    tables = result["superset"][test]
    langs = result["languages"]
    columns = [(mode, lang) for mode in SUPERSET_MODES for lang in langs]
    header = ["class", "クラス", "n", *(f"{'prompt' if m == 'prompt' else 'aggr.'} {lang}" for m, lang in columns),
              *(f"AUROC {'prompt' if m == 'prompt' else 'aggr.'} {lang}" for m, lang in columns),
              *(f"paper {name}" for name in PAPER_SYSTEMS.values())]
    first = tables["prompt"][langs[0]]
    paper_all = tables["paper"] or {}
    rows = [[
        "all", "全体", count_text(first["records"]),
        *(percent(tables[m][lang]["accuracy"]) for m, lang in columns),
        *(auroc_text(tables[m][lang]["macro_auroc"]) for m, lang in columns),
        *(percent(paper_all.get(system)) for system in PAPER_SYSTEMS),
    ]]
    for cls in tables["classes"]:
        paper = cls["paper"] or {}
        rows.append([
            cls["en"], cls["ja"], count_text(first["per_class"][cls["id"]]["count"]),
            *(percent(tables[m][lang]["per_class"][cls["id"]]["accuracy"]) for m, lang in columns),
            *(auroc_text(tables[m][lang]["per_class"][cls["id"]]["auroc"]) for m, lang in columns),
            *(percent(paper.get(system)) for system in PAPER_SYSTEMS),
        ])
    notes = [
        f"{first['left_out']} records with no {test} class left out; {first['multi_class']} records with several "
        f"classes (right when the top-1 class is any of them; single-class records only: "
        f"{percent(first['single_class_accuracy'])} % with {langs[0]} prompts)",
        *(f"{'prompt' if mode == 'prompt' else 'aggr.'}: {MODE_TITLES[mode]}" for mode in SUPERSET_MODES),
    ]
    return header, rows, notes


def calibration_sections(result: dict) -> list[tuple[str, tuple[list[str], list[list[str]]], str]]:
    """(title, (header, rows), caption) of each calibration table; none for an uncalibrated bundle."""
    calibration = result.get("calibration")
    if not calibration or not calibration["languages"]:
        return [("Calibration: this bundle carries none (run `ecgtool calibrate BUNDLE --store S`)", ([], []), "")]
    fitted = calibration.get("fitted_on") or {}
    where = f"fitted on {fitted.get('store')} {fitted.get('split')} ({fitted.get('records')} records)"
    warning = "  WARNING: scored on the records it was fitted on (in-sample)." if calibration.get("in_sample") else ""
    sections = [(f"Calibration of the probabilities of presence on {calibration['records']} {result['split']} records",
                 summary_table(calibration),
                 f"{where}; operating point {(calibration.get('rules') or {}).get('operating_point')}; "
                 f"Brier and ECE over every (record, calibrated finding) cell.{warning}"),
                (f"Reliability ({calibration['bins']} bins of predicted probability)",
                 reliability_table(calibration), "")]
    for lang in calibration["languages"]:
        sections.append((f"Present/absent at the stored operating point ({lang} prompts)",
                         operating_point_table(calibration, lang),
                         uncalibrated_note(calibration, lang)))
    return sections


def measured_section(result: dict) -> list[tuple[str, tuple[list[str], list[list[str]]], str]]:
    """(title, (header, rows), caption) of the table of the findings a measurement supports, read
    three ways; none when the bundle combines none."""
    figures = result.get("measured_findings")
    if not figures:
        return []
    header = ["finding", "test n+", "AUROC model", "AUROC combined", *(f"{name} sens / PPV / F1 %" for name in
                                                                       ("model", "criterion", "combined"))]
    rows = []
    for row in sorted(figures["findings"], key=lambda r: -r["test_positives"]):
        cells = [row["id"], str(row["test_positives"]), auroc_text(row["auroc_model"]), auroc_text(row["auroc_combined"])]
        for name in ("model", "criterion", "combined"):
            point = row[name]
            cells.append("not called" if point is None else
                         " / ".join(_fraction_percent(point[key]) for key in ("sensitivity", "ppv", "f1")))
        rows.append(cells)
    macro = figures["macro"]
    rows.append([f"macro ({macro['findings']} with ≥ {figures['min_positives']} test n+; "
                 f"F1 over the {macro['f1_findings']} both call)", "",
                 auroc_text(macro["auroc_model"]), auroc_text(macro["auroc_combined"]),
                 *(f"F1 {_fraction_percent(macro[f'f1_{name}'])}" for name in ("model", "criterion", "combined"))])
    caption = ("Each finding read by the model's score alone (its model-only calibration), by its criterion alone "
               "(any supporting criterion met), and by the two together as `predict` reads it (fitted on the val "
               f"split); over the {figures['records']} {result['split']} records with a finding "
               f"({figures['measured']} measured).")
    return [(f"The findings a measurement supports, on the {result['split']} split: model, criterion, both", (header, rows),
             caption)]


def _fraction_percent(value) -> str:
    """A fraction as a percentage to 0.1 (``–``: undefined, which ``--json`` writes as null)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def machine_sections(result: dict) -> list[tuple[str, tuple[list[str], list[list[str]]], str]]:
    """(title, (header, rows), caption) of each table of ecgtool against the machines' own
    measurements: over all records when several programs measured, then per program; none when
    the split's records carry no machine values."""
    machine = result.get("machine_measurements")
    if not machine:
        return []
    where = f"the {machine['split']} split" if machine["split"] else "every split"
    programs = machine["programs"]
    several = len(programs) > 2  # "all records" and at least two programs
    shown = [name for name in programs if name != ALL_RECORDS or several]
    note = (f"ecgtool − machine over the records of {where} whose files carry the machine's own measurements "
            f"({machine['records_without_machine_values']} without are not counted). The machine's values are "
            "references, not labels: nothing is fitted on them. bias = mean difference, SD = sample SD (n − 1), "
            "axes wrapped to (−180°, 180°]; tolerance: issue 22 (20 ms, 20°, 3 bpm); ecgtool's QTc is Bazett's.")
    sections = []
    for index, name in enumerate(shown):
        figures = programs[name]
        programs_named = "every program together" if name == ALL_RECORDS else name
        records = f"{figures['records']} record{'' if figures['records'] == 1 else 's'}"
        title = f"ecgtool against the machines' own measurements: {programs_named}, {records} ({where})"
        caption = " ".join(filter(None, [note if index == 0 else "", _unmeasured_note(figures)]))
        sections.append((title, machine_table(figures), caption))
    return sections


def machine_table(figures: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one machine program's comparison: one row per measurement it gives."""
    header = ["measurement", "n", "bias", "SD", "max |diff|", "within", "tolerance", "ecgtool none", "machine none"]
    rows = []
    for key in COMPARED_KEYS:
        if key not in figures:
            continue
        entry, (name, unit) = figures[key], MACHINE_MEASUREMENTS[key]
        rows.append([f"{name} ({unit})", str(entry["n"]), signed(entry["bias"]), one_decimal(entry["sd"]),
                     one_decimal(entry["max_abs"]), f"{entry['within_tolerance']}/{entry['n']}",
                     _with_unit(entry["tolerance"], unit),
                     str(entry["ecgtool_none"]), str(entry["machine_none"])])
    return header, rows


def _unmeasured_note(figures: dict) -> str:
    """Why ecgtool gave None where the machine gave a value, per measurement (empty when never)."""
    parts = []
    for key in COMPARED_KEYS:
        reasons = figures.get(key, {}).get("reasons")
        if reasons:
            counted = ", ".join(f"{reason} ×{count}" for reason, count in reasons.items())
            parts.append(f"{MACHINE_MEASUREMENTS[key][0]}: {counted}")
    return f"Not measured by ecgtool: {'; '.join(parts)}." if parts else ""


def _with_unit(value: float, unit: str) -> str:
    return f"{value:g}°" if unit == "°" else f"{value:g} {unit}"


def signed(value) -> str:
    """A difference to 0.1 with its sign (``+6.0``, ``-2.4``; never ``-0.0``); ``–`` when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text


def one_decimal(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def headline_rows(result: dict, dropped: list[str] | None = None) -> list[list[str]]:
    failing = {line.split(":")[0] for line in dropped or []}
    return [[key, "–" if value is None else f"{value:.2f}", "DROPPED" if key in failing else ""]
            for key, value in result["headline"].items()]


# --- terminal ---------------------------------------------------------------------------------

def print_terminal(result: dict, console, dropped: list[str] | None = None) -> None:
    """The tables on the terminal, as wide as ``console`` and without a number cut
    (``bench.table.print_table``)."""
    for line in summary_lines(result):
        console.print(line, highlight=False)
    header, rows = per_label_table(result)
    print_table(console, "Per-label top-1 / top-5 % over (record, finding) pairs — the paper's Table 9 protocol",
                header, rows, text_columns=2, trailing_text=True)
    for test in result["superset"]:
        header, rows, notes = superset_table(result, test)
        print_table(console, f"Zero-shot {TEST_TITLES.get(test, test)}: accuracy %", header, rows, text_columns=2,
                    caption="\n".join(notes))
    for title, (header, rows), caption in calibration_sections(result):
        if not header:
            console.print(title)
            continue
        text_columns = 3 if header[:2] == ["finding", "所見"] else 1
        print_table(console, title, header, rows, text_columns=text_columns, caption=caption)
    for title, (header, rows), caption in measured_section(result):
        print_table(console, title, header, rows, text_columns=1, caption=caption)
    if result.get("retrieval"):
        print_retrieval(result["retrieval"], console)
    for title, (header, rows), caption in machine_sections(result):
        print_table(console, title, header, rows, text_columns=1, caption=caption)
    print_table(console, "Headline figures (points; AUROC × 100)", ["figure", "value", ""], headline_rows(result, dropped),
                text_columns=1, trailing_text=True)


# --- Markdown -------------------------------------------------------------------------------

def to_markdown(result: dict, dropped: list[str] | None = None) -> str:
    parts = ["# ecgtool bench", "", *(f"{line}  " for line in summary_lines(result)), ""]
    header, rows = per_label_table(result)
    parts += ["## Per-label top-1 / top-5 % (the paper's Table 9 protocol)", "", *_markdown_table(header, rows), ""]
    for test in result["superset"]:
        header, rows, notes = superset_table(result, test)
        parts += [f"## Zero-shot {TEST_TITLES.get(test, test)}: accuracy %", "", *_markdown_table(header, rows), "",
                  *(f"- {note}" for note in notes), ""]
    for title, (header, rows), caption in calibration_sections(result):
        table = [*_markdown_table(header, rows), ""] if header else []
        parts += [f"## {title}", "", *table, *([caption, ""] if caption else [])]
    for title, (header, rows), caption in measured_section(result):
        parts += [f"## {title}", "", *_markdown_table(header, rows), "", caption, ""]
    if result.get("retrieval"):
        parts += ["## Retrieval (`ecgtool search`)", "", retrieval_markdown(result["retrieval"])]
    for title, (header, rows), caption in machine_sections(result):
        parts += [f"## {title}", "", *_markdown_table(header, rows), "", *([caption, ""] if caption else [])]
    parts += ["## Headline figures (points; AUROC × 100)", "",
              *_markdown_table(["figure", "value", ""], headline_rows(result, dropped)), ""]
    return "\n".join(parts)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(row) for row in rows)]


# --- plot ----------------------------------------------------------------------------------

def plot_per_label(result: dict, out_path: str | Path, lang: str | None = None) -> Path:
    """Horizontal bars of top-1 and top-5 per finding, ours beside the paper's, findings with a
    test pair on either side, ordered by the paper's test count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lang = lang or result["languages"][0]
    rows = [row for row in result["per_label"]["labels"] if row["ours"][lang]["count"] or (row["paper"] or {}).get("count")]
    rows.sort(key=lambda row: ((row["paper"] or {}).get("count") or 0, row["ours"][lang]["count"]))
    font = japanese_font()
    height = max(3.0, 0.32 * len(rows) + 1.5)
    figure, axes = plt.subplots(figsize=(11, height))
    positions = range(len(rows))

    def values(getter):
        return [(lambda v: 0.0 if v is None or math.isnan(v) else v)(getter(row)) for row in rows]

    bar = 0.2
    axes.barh([p + 1.5 * bar for p in positions], values(lambda r: r["ours"][lang]["top5"]), bar, label=f"ours top-5 ({lang})", color="#9ecae1")
    axes.barh([p + 0.5 * bar for p in positions], values(lambda r: r["ours"][lang]["top1"]), bar, label=f"ours top-1 ({lang})", color="#3182bd")
    axes.barh([p - 0.5 * bar for p in positions], values(lambda r: (r["paper"] or {}).get("top5")), bar, label="paper top-5", color="#fdae6b")
    axes.barh([p - 1.5 * bar for p in positions], values(lambda r: (r["paper"] or {}).get("top1")), bar, label="paper top-1", color="#e6550d")
    labels = [f"{row[lang]}  (n={row['ours'][lang]['count']} / paper {count_text((row['paper'] or {}).get('count'))})"
              for row in rows]
    axes.set_yticks(list(positions), labels, fontproperties=font, fontsize=7)
    axes.set_xlim(0, 100)
    axes.set_xlabel("accuracy over (record, finding) pairs, %")
    ours, paper = result["per_label"]["all"]["ours"][lang], result["per_label"]["all"]["paper"]
    axes.set_title(
        f"Per-label accuracy, {lang} prompts: ours top-1 {percent(ours['top1'])} % / top-5 {percent(ours['top5'])} % "
        f"({ours['pairs']} pairs); paper {percent(paper['top1'])} / {percent(paper['top5'])} % ({paper['count']} pairs)",
        fontsize=9, fontproperties=font)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out_path)
