"""``ecgtool predict``: read ECGs, one record as a table (or JSON, or a picture), directories into a file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ecgtool.cli.common import console, device_option, one_line_errors, output, rate_progress
from ecgtool.errors import EcgToolError


@one_line_errors
def predict(
    inputs: list[Path] = typer.Argument(..., help="A record (WFDB .hea/.dat/.mat, MFER, vendor XML, DICOM, SCP-ECG), or directories / list files for batch scoring."),
    top: int = typer.Option(5, "--top", "-k", help="How many findings (or classes) to show, by score.", min=1),
    lang: str = typer.Option("ja", "--lang", help="ja or en."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle (default: the one shipped with ecgtool)."),
    superset: Optional[str] = typer.Option(None, "--superset", help="Zero-shot superset scores instead: superclass, rhythm or mitbih."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table (single record; schema in docs/predict.md)."),
    show_ids: bool = typer.Option(False, "--ids", help="Add the findings' registry ids to the table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the 12-lead ECG with its report line and findings to this PNG (single record)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Batch output .csv or .jsonl (directories); re-runs resume."),
    all_probabilities: bool = typer.Option(False, "--all-probabilities", help="Batch output: also one probability column per finding (98)."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Batch: also append each record's ECG embedding to this file (.h5, for `ecgtool search`)."),
    fhir: Optional[Path] = typer.Option(None, "--fhir", help="Also write HL7 FHIR R4: one Bundle (.json) for a record; for directories one per line (.ndjson), from --out X.jsonl (docs/fhir.md)."),
    fhir_all_calibrated: bool = typer.Option(False, "--fhir-all-calibrated", help="--fhir: every listed finding with a probability or a measured call, not only those present (--top 98: all)."),
    measurements: bool = typer.Option(True, "--measurements/--no-measurements", help="Measure each record (rate, PR, QRS, QT/QTc, axes, voltages) and read the findings they support with it; --no-measurements: the model's scores alone (docs/measurements.md)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Records per forward pass (default: 1024 on CUDA, compiled bf16; 64 on the CPU).", min=1),
    workers: int = typer.Option(0, "--workers", "-j", help="Processes reading records (0: one per core on CUDA; on CPU, read in-process).", min=0),
    device: str = device_option(),
):
    """Read ECGs: top-k findings by score, each with its calibrated probability of presence and a
    present/absent call, and the report line of the findings called present.

    Example: ecgtool predict examples/ptb-xl/00172_hr.hea --top 5
    """
    from ecgtool.bundle import canonical_options, resolve_bundle
    from ecgtool.devices import resolve_device
    from ecgtool.io.canonical import load_canonical
    from ecgtool.predict import ReadingOptions, predict_directory, predict_signal, prediction_as_dict

    torch_device = resolve_device(device)
    bundle = resolve_bundle(model).to(torch_device)
    records_only = all(not p.is_dir() and p.suffix.lower() not in (".txt", ".lst", ".list") for p in inputs)
    single = len(inputs) == 1 and records_only
    if fhir is not None and superset is not None:
        raise EcgToolError("--fhir: not with --superset (FHIR carries the registry's findings, not superset classes)")
    if fhir is not None and not single and (out is None or out.suffix.lower() != ".jsonl"):
        raise EcgToolError("--fhir with several records needs --out FILE.jsonl: the Bundles are made from its readings")
    if records_only and len(inputs) > 1 and out is None:
        # A few records named on the command line: each read in turn, as one record is.
        for path in inputs:
            record_id, signal = load_canonical(path, canonical_options(bundle))
            prediction = predict_signal(record_id, str(path), signal, bundle, top, lang, superset, device=torch_device,
                                        measured=measurements)
            if as_json:
                output.print_json(data=prediction_as_dict(prediction, bundle))
            else:
                _print_reading(prediction, lang, superset, show_ids, top)
                output.print("")
        return
    if bundle.calibration is None and superset is None:
        console.print(f"note: {escape(str(bundle.directory))} carries no calibration: scores only, no probability of "
                      "presence or report line (run `ecgtool calibrate`)", highlight=False, soft_wrap=True)
    if single:
        record_id, signal = load_canonical(inputs[0], canonical_options(bundle))  # read once: scores and plot
        prediction = predict_signal(record_id, str(inputs[0]), signal, bundle, top, lang, superset, device=torch_device,
                                    measured=measurements)
        if as_json:
            output.print_json(data=prediction_as_dict(prediction, bundle))
        else:
            _print_reading(prediction, lang, superset, show_ids, top)
        if plot is not None:
            from ecgtool.plot import plot_ecg

            plot_ecg(signal, plot, f"{prediction.record_id} — 25 mm/s, 10 mm/mV — ecgtool",
                     ([measurement_line(prediction.measurements, lang)] if prediction.measurements is not None else [])
                     + _plot_lines(prediction, lang), prediction.measurements)
            output.print(f"plot written to {plot}", highlight=False, soft_wrap=True)
        if fhir is not None:
            from ecgtool.fhir import write_record_fhir

            write_record_fhir(fhir, prediction, bundle, lang=lang, all_calibrated=fhir_all_calibrated)
            console.print(f"FHIR Bundle written to {escape(str(fhir))}", highlight=False, soft_wrap=True)
        return
    if out is None:
        raise EcgToolError("--out FILE.csv|FILE.jsonl is required when scoring directories")
    reading = ReadingOptions(top, lang, superset, all_probabilities, measurements)
    with rate_progress("predict", "records") as show:
        result = predict_directory(inputs, out, bundle, reading, batch_size, workers, torch_device, progress=show,
                                   embeddings=embeddings)
    output.print(
        f"scored {result.scored} records ({result.records_per_second:,.0f} records/s), skipped {result.skipped}, "
        f"{result.already_done} already in {result.output}; skip list: {result.output}.skipped.csv",
        highlight=False, soft_wrap=True,
    )
    if embeddings is not None:
        output.print(f"embeddings in {embeddings}" + (f"; {result.embeddings_not_added} records not added: their record id "
                     "was already in the file (ids must be unique there)" if result.embeddings_not_added else ""),
                     highlight=False, soft_wrap=True)
    if fhir is not None:
        from ecgtool.fhir import write_directory_fhir

        count = write_directory_fhir(fhir, out, bundle, lang=lang, all_calibrated=fhir_all_calibrated)
        output.print(f"{count} FHIR Bundles written to {fhir}", highlight=False, soft_wrap=True)


def measurement_line(measurements, lang: str) -> str:
    """The machine-style measurement line in ``lang`` ("–" where a value is not measurable)."""
    from ecgtool.registry import MEASUREMENT_LINE

    def value(key: str) -> str:
        number = measurements.values.get(key)
        return "–" if number is None else f"{number:.0f}"

    return MEASUREMENT_LINE[lang].format(hr=value("heart_rate_bpm"), pr=value("pr_ms"), qrs=value("qrs_ms"),
                                         qt=value("qt_ms"), qtc=value("qtc_ms"), p=value("p_axis_deg"),
                                         axis=value("qrs_axis_deg"), t=value("t_axis_deg"))


def _print_reading(prediction, lang: str, superset: Optional[str], show_ids: bool, top: int) -> None:
    """The reading of one record in 80 columns: the report line, then the top findings with score,
    probability of presence and call."""
    from rich import box

    from ecgtool.registry import (
        CALL_WORDS,
        COMBINED_MARK,
        COMBINED_NOTE,
        EXCLUDED_BY,
        EXCLUDED_WORD,
        FINDING_HEADER,
        MEASURED_MARK,
        MEASURED_NOTE,
    )

    what = f"superset {superset}" if superset else "findings"
    if prediction.measurements is not None:
        output.print(escape(measurement_line(prediction.measurements, lang)), highlight=False)
    if prediction.report is not None:
        output.print(escape(prediction.report), highlight=False)
    extra = len(prediction.findings) - min(top, len(prediction.findings))  # calls ranked below the top ones
    shown = f"top {len(prediction.findings) - extra} {what} by score" + (f", and {extra} more with a call" if extra else "")
    output.print(f"{escape(prediction.record_id)}: {shown}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column(FINDING_HEADER[lang], overflow="fold", min_width=20)
    table.add_column("score", justify="right", no_wrap=True)
    if prediction.calibrated:
        table.add_column("P(present)", justify="right", no_wrap=True)
        table.add_column("call", no_wrap=True)
    if show_ids:
        table.add_column("id", no_wrap=True, overflow="ellipsis", max_width=24)
    for rank, finding in enumerate(prediction.findings, start=1):
        cells = [str(rank), escape(finding.name), f"{finding.score:.3f}"]
        if prediction.calibrated:
            call = EXCLUDED_WORD[lang] if finding.excluded_by else CALL_WORDS[lang][finding.present]
            call += {"measurement": MEASURED_MARK, "model+measurement": COMBINED_MARK}.get(finding.decided_by or "", "")
            cells += ["–" if finding.probability is None else f"{finding.probability:.1%}", call]
        if show_ids:
            cells.append(finding.id)
        table.add_row(*cells)
    output.print(table)
    names = {f.id: f.name for f in prediction.findings}
    if any(f.decided_by == "measurement" for f in prediction.findings):
        from ecgtool.measured_findings import measured_calls

        verdicts = measured_calls(prediction.measurements)
        for finding in prediction.findings:
            if finding.decided_by == "measurement" and finding.id in verdicts:
                verdict = verdicts[finding.id]
                output.print(escape(MEASURED_NOTE[lang].format(finding=finding.name, threshold=verdict.threshold,
                                                               values=verdict.values)), highlight=False)
    combined = [f for f in prediction.findings if f.decided_by == "model+measurement"]
    if combined:
        from ecgtool.combined_calibration import SUPPORTED_BY
        from ecgtool.measured_findings import supporting_values

        said = [f"{f.name}（{supporting_values(prediction.measurements, SUPPORTED_BY[f.id])}）" if lang == "ja"
                else f"{f.name} ({supporting_values(prediction.measurements, SUPPORTED_BY[f.id])})" for f in combined]
        output.print(escape(COMBINED_NOTE[lang].format(findings=("、" if lang == "ja" else "; ").join(said))),
                     highlight=False)
    for finding in prediction.findings:
        if finding.excluded_by:
            output.print(escape(EXCLUDED_BY[lang].format(excluded=finding.name, winner=names[finding.excluded_by])),
                         highlight=False, soft_wrap=True)
    if prediction.calibrated:
        uncalibrated = sum(f.probability is None for f in prediction.findings)
        if uncalibrated:
            output.print(f"–: too few validation records with the finding to calibrate it ({uncalibrated} shown)",
                         highlight=False)


def _plot_lines(prediction, lang: str) -> list[str]:
    """The lines printed on the ECG picture: the report line and the findings called present
    with their probabilities (the top findings by score for an uncalibrated bundle)."""
    if prediction.report is None:
        return [f"{rank}. {f.name}  (score {f.score:.3f})" for rank, f in enumerate(prediction.findings, start=1)]
    lines = [prediction.report]
    lines += [f"• {f.name}  " + ("†" if f.probability is None else f"{f.probability:.0%}") for f in prediction.present]
    return lines
