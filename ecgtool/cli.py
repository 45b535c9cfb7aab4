"""The ``ecgtool`` command line: options in, one library call out."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ecgtool.devices import resolve_device
from ecgtool.errors import EcgToolError

app = typer.Typer(
    name="ecgtool",
    help="Train and use an ECG–text contrastive model on your own 12-lead ECGs and reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
output = Console()
_debug = False


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    global _debug
    _debug = debug
    if not debug:
        sys.unraisablehook = _quiet_h5py_teardown


def _quiet_h5py_teardown(unraisable) -> None:
    """h5py prints a traceback when it tears down a file whose write failed (a full disk): the
    command has already said so in one line. Everything else goes to Python's own hook."""
    if "h5py" in str(getattr(unraisable, "object", "")) or "h5py" in str(getattr(unraisable, "err_msg", "")):
        return
    sys.__unraisablehook__(unraisable)


def one_line_errors(command):
    """No traceback reaches the user without ``--debug``: library errors become
    ``error: <file>: <what is wrong>`` and exit code 1; a failing file operation (disk full,
    permission, missing folder) names the file and the cause; Ctrl-C says how to resume
    (exit 130); anything else is reported in one line as a bug."""

    def fail(message: str, code: int = 1):
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(code) from None

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except Exception as error:
            if _debug:
                raise
            if isinstance(error, EcgToolError):
                fail(escape(str(error)))
            if isinstance(error, OSError):
                where = error.filename or ""
                fail(escape(f"{where}: {error.strerror or error}" if where else str(error.strerror or error)))
            fail(escape(f"unexpected {type(error).__name__}: {error} (a bug in ecgtool: --debug shows the traceback)"))
        except KeyboardInterrupt:
            if _debug:
                raise
            fail("interrupted: finished outputs are kept; re-run the same command to continue", 130)

    return wrapper


@contextmanager
def rate_progress(label: str, unit: str):
    """A rich progress bar; yields ``show(done, total, **fields)`` that also prints ``unit``/s."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(label, total=None, rate="", extra="")

        def show(done: int, total: int, extra: str = "") -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:,.1f} {unit}/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate, extra=extra)

        yield show


@app.command()
@one_line_errors
def labels(
    lang: str = typer.Option("ja", "--lang", help="ja, en or both."),
    superset: Optional[str] = typer.Option(
        None, "--superset", help="Only findings mapped into this superset test (superclass, rhythm, mitbih) or class id."
    ),
    registry_path: Optional[Path] = typer.Option(None, "--registry", help="Another registry YAML (default: the packaged one)."),
):
    """List the label registry's findings.

    Example: ecgtool labels --lang both --superset rhythm
    """
    from ecgtool.registry import load_registry, parse_languages

    registry = load_registry(registry_path)
    langs = parse_languages(lang)
    table = Table(title=f"findings.yaml v{registry.version} ({registry.hash}): {len(registry)} findings")
    table.add_column("#", justify="right")
    table.add_column("id", overflow="fold")
    if "ja" in langs:
        table.add_column("日本語", overflow="fold")
    if "en" in langs:
        table.add_column("English", overflow="fold")
    for test in registry.supersets:
        table.add_column(test, overflow="fold")
    shown = 0
    for finding in registry.findings:
        classes = {test: finding.supersets.get(test, ()) for test in registry.supersets}
        if superset and not (classes.get(superset) or any(superset in ids for ids in classes.values())):
            continue
        names = [finding.name(lang) for lang in langs]
        table.add_row(str(finding.index), finding.id, *names, *(", ".join(ids) for ids in classes.values()))
        shown += 1
    if superset and not shown:
        raise EcgToolError(f"--superset {superset}: no such superset test or class, or no finding maps into it")
    output.print(table)


@app.command()
@one_line_errors
def ingest(
    inputs: list[Path] = typer.Argument(..., help="Directories (searched recursively, formats recognised by content) or record files."),
    out: Path = typer.Option(..., "--out", "-o", help="Store directory to create or resume."),
    metadata: list[Path] = typer.Option(
        [], "--metadata", "-m", help="PTB-XL ptbxl_database.csv or a sidecar CSV (record, patient, report, findings, split). Repeatable."
    ),
    workers: int = typer.Option(0, "--workers", "-j", help="Worker processes reading records (0: one per CPU core).", min=0),
    shard_size: int = typer.Option(512, "--shard-size", help="Records per HDF5 shard.", min=1),
    dtype: str = typer.Option("float16", "--dtype", help="Stored sample type: float16 (error ≤ 2^-11 of the value) or float32."),
    min_seconds: float = typer.Option(5.0, "--min-seconds", help="Reject records shorter than this instead of zero-padding them.", min=0.0),
    derive_limb_leads: bool = typer.Option(
        False, "--derive-limb-leads", help="Opt-in repair for WFDB: build missing III, aVR, aVL, aVF from I and II (MFER, MUSE, SCP 8-lead files always derive them)."
    ),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Patients in val when no fold/split column decides.", min=0.0, max=1.0),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Patients in test when no fold/split column decides.", min=0.0, max=1.0),
    seed: str = typer.Option("ecgtool", "--seed", help="Salt of the patient hash that places patients in splits."),
    no_checksums: bool = typer.Option(False, "--no-checksums", help="Do not verify signal checksums (WFDB, MUSE CRC-32, SCP-ECG CRC)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a store made with other settings."),
):
    """Ingest raw records into a sharded HDF5 store with patient-level splits.

    Example: ecgtool ingest ../shared/data/ptb-xl/records500 --metadata ../shared/data/ptb-xl/ptbxl_database.csv --out stores/ptbxl
    """
    from ecgtool.ingest import IngestOptions, ingest as run_ingest
    from ecgtool.signal import CanonicalOptions
    from ecgtool.splits import SplitFractions

    try:
        fractions = SplitFractions(1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    except ValueError as error:
        raise EcgToolError(f"--val-fraction/--test-fraction: {error}") from None
    options = IngestOptions(
        workers=workers,
        shard_size=shard_size,
        dtype=dtype,
        canonical=CanonicalOptions(min_seconds=min_seconds, derive_limb_leads=derive_limb_leads),
        fractions=fractions,
        seed=seed,
        verify_checksums=not no_checksums,
    )
    with rate_progress("ingest", "records") as show:
        result = run_ingest(inputs, out, metadata, options, overwrite=overwrite, progress=show)
    _print_ingest_summary(result)


def _print_ingest_summary(result) -> None:
    manifest = result.manifest
    table = Table(title=f"store {result.out_dir}")
    for column in ("split", "records", "patients", "labelled"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, counts in manifest["counts"].items():
        table.add_row(split, str(counts["records"]), str(counts["patients"]), str(counts["labelled"]))
    table.add_row("skipped", str(len(manifest["skipped"])), "", "")
    output.print(table)
    if result.records_converted:
        output.print(
            f"converted {result.records_converted} records in {result.seconds:.1f} s "
            f"({result.records_per_second:,.0f} records/s); {result.shards_written} shards written"
        )
    else:
        output.print("nothing to convert: every shard was already complete")
    for skip in manifest["skipped"][:20]:
        output.print(f"  skipped {skip['path']}: {skip['reason']}", highlight=False, soft_wrap=True)
    if len(manifest["skipped"]) > 20:
        output.print(f"  … {len(manifest['skipped']) - 20} more in {result.out_dir / 'manifest.json'}")
    for warning in manifest["warnings"][:10]:
        output.print(f"  warning: {warning}", highlight=False, soft_wrap=True)
    if manifest.get("unknown_finding_terms"):
        terms = manifest["unknown_finding_terms"]
        shown = ", ".join(f"{term!r} ×{n}" for term, n in list(terms.items())[:5])
        output.print(f"  warning: {sum(terms.values())} finding terms ({len(terms)} distinct) the registry does not know, "
                     f"ignored: {shown} (all in {result.out_dir / 'manifest.json'})", highlight=False, soft_wrap=True)
    if manifest["unknown_codes"]:
        codes = ", ".join(f"{code} ×{n}" for code, n in list(manifest["unknown_codes"].items())[:10])
        output.print(f"  warning: label codes the registry does not know: {codes}", highlight=False, soft_wrap=True)


@app.command("embed-labels")
@one_line_errors
def embed_labels(
    model: Path = typer.Option(..., "--model", help="Local Hugging Face model folder or .gguf file (nothing is downloaded)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Store whose train/val report prompts are embedded too."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cache directory (default: <store>/text-cache)."),
    lang: str = typer.Option("both", "--lang", help="ja, en or both."),
    pooling: str = typer.Option("mean", "--pooling", help="mean (masked mean of the tokens) or last (last token)."),
    layer: int = typer.Option(-1, "--layer", help="Hidden-state index: -1 is the last layer, 0 the embeddings."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per forward pass.", min=1),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bfloat16 on cuda, float32 on cpu)."),
):
    """Embed the label, superset and report prompts with a frozen language model into a vector cache.

    Example: ecgtool embed-labels --model models/MedLlama3-JP-v2 --store stores/ptbxl --device cuda
    """
    from ecgtool.registry import load_registry, parse_languages
    from ecgtool.store import Store
    from ecgtool.text import collect_prompts, embed_prompts

    langs = parse_languages(lang)
    if pooling not in ("mean", "last"):
        raise EcgToolError(f"--pooling {pooling}: expected mean or last")
    if out is None:
        if store is None:
            raise EcgToolError("--out is required when no --store is given")
        out = store / "text-cache"
    registry = load_registry()
    prompts = collect_prompts(registry, Store(store) if store is not None else None, langs)
    with rate_progress("embed", "prompts") as show:
        result = embed_prompts(model, prompts, out, pooling, layer, batch_size, device, registry, show)
    output.print(
        f"{result.prompts} prompts in {result.cache_dir}: {result.cached} cached, {result.new} new "
        f"in {result.seconds:.1f} s ({result.prompts_per_second:,.1f} prompts/s)",
        highlight=False, soft_wrap=True,
    )


@app.command()
@one_line_errors
def train(
    store: Path = typer.Option(..., "--store", help="Store made by `ecgtool ingest`."),
    text_cache: Optional[Path] = typer.Option(None, "--text-cache", help="Cache made by `ecgtool embed-labels` (default: <store>/text-cache)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints/, metrics.jsonl."),
    epochs: int = typer.Option(200, "--epochs", min=1),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch, split over torchrun ranks.", min=1),
    lr: float = typer.Option(1e-3, "--lr", min=0.0),
    weight_decay: float = typer.Option(1e-3, "--weight-decay", help="AdamW decay (not on biases and norms).", min=0.0),
    beta1: float = typer.Option(0.9, "--beta1", min=0.0, max=1.0),
    beta2: float = typer.Option(0.999, "--beta2", min=0.0, max=1.0),
    eps: float = typer.Option(1e-8, "--eps", min=0.0),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping norm (0: off).", min=0.0),
    warmup_steps: int = typer.Option(0, "--warmup-steps", min=0),
    schedule: str = typer.Option("linear", "--schedule", help="linear (decay to 0), cosine (half-cosine decay to 0) or constant; after --warmup-steps."),
    embed_dim: int = typer.Option(512, "--embed-dim", help="Shared ECG-text dimension.", min=1),
    lang: str = typer.Option("ja", "--lang", help="Report language trained on: ja, en, or both (each record's prompt in either, drawn per step)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32."),
    seed: int = typer.Option(0, "--seed"),
    checkpoint_every_steps: int = typer.Option(0, "--checkpoint-every-steps", help="Also checkpoint every N steps (0: per epoch only).", min=0),
    mask_same_text: bool = typer.Option(False, "--mask-same-text", help="Remove same-report pairs from the negatives (off: the paper's loss)."),
    mask_implied_texts: bool = typer.Option(False, "--mask-implied-texts", help="Remove from the negatives every text whose findings all belong to the record (implies --mask-same-text's rule)."),
    label_prompt_prob: float = typer.Option(0.0, "--label-prompt-prob", help="Probability of pairing a record with the label prompt of one of its findings instead of its report prompt.", min=0.0, max=1.0),
    augment: bool = typer.Option(False, "--augment", help="Signal augmentation: amplitude, noise, baseline wander, time shift, lead masking (docs/train.md)."),
    input_lowpass_hz: Optional[float] = typer.Option(None, "--input-lowpass-hz", help="Fixed FIR low-pass inside the model, applied to the 500 Hz input (e.g. 40; default: none, the paper's)."),
    input_decimation: int = typer.Option(1, "--input-decimation", help="Keep every N-th sample after the low-pass (e.g. 5: the encoder runs at 100 Hz).", min=1),
    select_by: str = typer.Option("val_loss", "--select-by", help="The epoch exported as best: lowest val_loss, or highest val_macro_auroc, val_top1 or val_top5."),
    max_records: Optional[int] = typer.Option(None, "--max-records", help="Train on the first N labelled training records only.", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    stream: str = typer.Option("auto", "--stream", help="auto: read batches from the shards only when the split does not fit in memory; always; never."),
    loader_workers: int = typer.Option(2, "--loader-workers", help="Processes reading batches ahead when streaming.", min=0),
    compile_step: str = typer.Option("auto", "--compile", help="torch.compile the step: auto (on for CUDA, off on CPU), on or off."),
    compile_mode: str = typer.Option("auto", "--compile-mode", help="auto (CUDA graphs on one CUDA process, else default), or a torch.compile mode: default, reduce-overhead, max-autotune-no-cudagraphs."),
    log_every_steps: int = typer.Option(0, "--log-every-steps", help="Read the loss back (progress bar, non-finite check) every N steps; 0: auto (1 on CPU, 50 on CUDA).", min=0),
    objective: str = typer.Option("contrastive", "--objective", help="contrastive (report InfoNCE, + the label loss with --label-loss-weight) or supervised (the reference baseline: BCE of a linear finding head, no text; not exported as a bundle)."),
    label_loss_weight: float = typer.Option(0.0, "--label-loss-weight", help="Weight of the multi-positive label loss: a sigmoid per (ECG, label or superset prompt) pair, both languages (0: off, the v2 recipe).", min=0.0),
    ema_decay: float = typer.Option(0.0, "--ema-decay", help="Validate and export an exponential moving average of the weights with this decay (e.g. 0.999; 0: off).", min=0.0, max=0.999999),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
):
    """Train the ResNet1d-18 ECG encoder against the cached text vectors (symmetric InfoNCE).

    Multi-GPU: torchrun --nproc_per_node=2 -m ecgtool.cli train ...

    Example: ecgtool train --store stores/ptbxl --out runs/ptbxl --device cuda
    """
    from ecgtool.distributed import context_from_environment
    from ecgtool.train import TrainConfig, train as run_train

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2, eps=eps,
        max_grad_norm=max_grad_norm, warmup_steps=warmup_steps, schedule=schedule, embed_dim=embed_dim, lang=lang,
        precision=precision, seed=seed, checkpoint_every_steps=checkpoint_every_steps, mask_same_text=mask_same_text,
        mask_implied_texts=mask_implied_texts, label_prompt_prob=label_prompt_prob, augment=augment,
        input_lowpass_hz=input_lowpass_hz, input_decimation=input_decimation, select_by=select_by, max_records=max_records, device=device, stream=stream, loader_workers=loader_workers,
        compile=compile_step, compile_mode=compile_mode, log_every_steps=log_every_steps,
        objective=objective, label_loss_weight=label_loss_weight, ema_decay=ema_decay,
    )
    main_process = context_from_environment().is_main
    with rate_progress("train", "steps") as show:
        def on_step(step: int, total: int, loss: float, samples_per_second: float) -> None:
            show(step, total, f"loss {loss:.4f} · {samples_per_second:,.0f} samples/s")

        result = run_train(store, text_cache or store / "text-cache", out, config, resume=resume,
                           on_step=on_step if main_process else None,
                           on_note=lambda note: console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True))
    if main_process:
        last = result.state.history[-1] if result.state.history else {}
        summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
        output.print(f"epoch {result.state.epoch}/{epochs}, step {result.state.global_step}: {summary}", highlight=False, soft_wrap=True)
        output.print(f"checkpoints in {result.last_checkpoint.parent}; metrics in {result.out_dir / 'metrics.jsonl'}", highlight=False, soft_wrap=True)


@app.command()
@one_line_errors
def export(
    run: Path = typer.Option(..., "--run", help="Run directory of `ecgtool train`."),
    text_cache: Path = typer.Option(..., "--text-cache", help="The text cache the run was trained with."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle directory to write."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    float32: bool = typer.Option(False, "--float32", help="Keep float32 weights (default: float16)."),
    calibrate_on: Optional[Path] = typer.Option(None, "--calibrate-store", help="Store whose val split calibrates the bundle (default: the run's own store, when it is there)."),
    no_calibration: bool = typer.Option(False, "--no-calibration", help="Export without calibrating (predict then shows scores only)."),
):
    """Export a trained run as a model bundle for predict and bench (no LM, no GPU needed to load it).

    Example: ecgtool export --run runs/ptbxl --text-cache stores/ptbxl/text-cache --out models/ptbxl
    """
    import torch

    from ecgtool.bundle import export_bundle
    from ecgtool.calibrate import export_calibrated_bundle

    path = run / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint not in ("best", "last") or not path.exists():
        raise EcgToolError(f"{path}: no such checkpoint (--checkpoint best or last)")
    dtype = torch.float32 if float32 else torch.float16
    if no_calibration:
        export_bundle(path, text_cache, out, dtype=dtype)
        output.print(f"bundle written to {out}", highlight=False, soft_wrap=True)
        return
    exported = export_calibrated_bundle(path, text_cache, out, calibrate_on, dtype=dtype,
                                        on_note=lambda note: console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True))
    output.print(f"bundle written to {out}", highlight=False, soft_wrap=True)
    if exported.calibration is not None:
        output.print(f"calibrated on {exported.calibration['fitted_on']['records']} val records of {exported.store}",
                     highlight=False, soft_wrap=True)


@app.command()
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
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Records per forward pass (default: 1024 on CUDA, compiled bf16; 64 on the CPU).", min=1),
    workers: int = typer.Option(0, "--workers", "-j", help="Processes reading records (0: one per core on CUDA; on CPU, read in-process).", min=0),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
):
    """Read ECGs: top-k findings by score, each with its calibrated probability of presence and a
    present/absent call, and the report line of the findings called present.

    Example: ecgtool predict examples/ptb-xl/00172_hr.hea --top 5
    """
    import torch

    from ecgtool.bundle import canonical_options, resolve_bundle
    from ecgtool.io.canonical import load_canonical
    from ecgtool.predict import ReadingOptions, predict_directory, predict_signal, prediction_as_dict

    torch_device = resolve_device(device)
    bundle = resolve_bundle(model).to(torch_device)
    single = len(inputs) == 1 and not inputs[0].is_dir() and inputs[0].suffix.lower() not in (".txt", ".lst", ".list")
    if bundle.calibration is None and superset is None:
        console.print(f"note: {escape(str(bundle.directory))} carries no calibration: scores only, no probability of "
                      "presence or report line (run `ecgtool calibrate`)", highlight=False, soft_wrap=True)
    if single:
        record_id, signal = load_canonical(inputs[0], canonical_options(bundle))  # read once: scores and plot
        prediction = predict_signal(record_id, str(inputs[0]), signal, bundle, top, lang, superset, device=torch_device)
        if as_json:
            output.print_json(data=prediction_as_dict(prediction, bundle))
        else:
            _print_reading(prediction, lang, superset, show_ids)
        if plot is not None:
            from ecgtool.plot import plot_ecg

            plot_ecg(signal, plot, f"{prediction.record_id} — 25 mm/s, 10 mm/mV — ecgtool", _plot_lines(prediction, lang))
            output.print(f"plot written to {plot}", highlight=False, soft_wrap=True)
        return
    if out is None:
        raise EcgToolError("--out FILE.csv|FILE.jsonl is required when scoring directories")
    reading = ReadingOptions(top, lang, superset, all_probabilities)
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


def _print_reading(prediction, lang: str, superset: Optional[str], show_ids: bool) -> None:
    """The reading of one record in 80 columns: the report line, then the top findings with score,
    probability of presence and call."""
    from rich import box

    from ecgtool.registry import CALL_WORDS, FINDING_HEADER

    what = f"superset {superset}" if superset else "findings"
    if prediction.report is not None:
        output.print(escape(prediction.report), highlight=False)
    output.print(f"{escape(prediction.record_id)}: top {len(prediction.findings)} {what} by score", highlight=False)
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
            cells += ["–" if finding.probability is None else f"{finding.probability:.1%}", CALL_WORDS[lang][finding.present]]
        if show_ids:
            cells.append(finding.id)
        table.add_row(*cells)
    output.print(table)
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
    lines += [f"• {f.name}  {f.probability:.0%}" for f in prediction.present]
    return lines


@app.command()
@one_line_errors
def calibrate(
    bundle_dir: Path = typer.Argument(..., help="Model bundle to calibrate (written in place)."),
    store: Path = typer.Option(..., "--store", "-s", help="Store whose val split the calibration is fitted on (never its test split)."),
    split: str = typer.Option("val", "--split", help="Split to fit on (val; train only if you know why)."),
    min_positives: int = typer.Option(10, "--min-positives", help="Fewer val positives (or negatives): the finding stays uncalibrated.", min=2),
    isotonic_min: int = typer.Option(100, "--isotonic-min", help="From this many val positives and negatives: isotonic regression instead of Platt scaling.", min=2),
    rule: str = typer.Option("max_f1", "--rule", help="Operating point: max_f1 (val threshold of highest F1), probability (called present when its calibrated probability is >= 50 %) or sensitivity (with --target-sensitivity)."),
    target_sensitivity: Optional[float] = typer.Option(None, "--target-sensitivity", help="With --rule sensitivity: the highest threshold reaching this val sensitivity (0-1).", min=0.0, max=1.0),
    min_f1: float = typer.Option(0.2, "--min-f1", help="A finding whose val F1 at its operating point is below this is never called present.", min=0.0, max=1.0),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
):
    """Fit each finding's probability of presence and operating point on a store's val split, into the bundle.

    Example: ecgtool calibrate models/ptbxl --store stores/ptbxl
    """
    from ecgtool.calibrate import calibrate_bundle

    entry = calibrate_bundle(bundle_dir, store, split, min_positives, isotonic_min, rule, target_sensitivity, min_f1,
                             resolve_device(device))
    fitted = entry["fitted_on"]
    for lang, count in entry["calibrated_findings"].items():
        output.print(f"{lang}: {count} findings calibrated, {entry['findings_with_operating_point'][lang]} with an "
                     f"operating point ({entry['rules']['operating_point']})", highlight=False)
    output.print(f"fitted on {fitted['records']} {fitted['split']} records of {store} "
                 f"({fitted['records_without_findings_left_out']} without findings left out); written to {bundle_dir}",
                 highlight=False, soft_wrap=True)


@app.command()
@one_line_errors
def bench(
    store: Path = typer.Option(..., "--store", "-s", help="Store made by `ecgtool ingest` (its held-out split is scored)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle (default: the one shipped with ecgtool)."),
    split: str = typer.Option("test", "--split", help="Store split to score: test (default) or val."),
    lang: str = typer.Option("both", "--lang", help="Prompt language(s): ja, en or both."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Write every figure as JSON here (the --baseline format)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the tables as Markdown here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the per-label table (ours beside the paper's)."),
    reliability: Optional[Path] = typer.Option(None, "--reliability", help="Write the calibration's reliability diagram as a PNG (calibrated bundles)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="A stored `bench --json` output to compare the headline figures with."),
    max_drop: float = typer.Option(2.0, "--max-drop", help="With --baseline: fail when a headline figure drops by more points than this.", min=0.0),
    confusions: int = typer.Option(3, "--confusions", help="How many 'most mistaken for' findings to list per finding.", min=0),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
):
    """Per-label top-1/top-5 (Table 9), zero-shot superset tests (Tables 2–7), AUROC and calibration, beside the paper.

    Exits with 1 when --baseline is given and a headline figure dropped by more than --max-drop points.

    Example: ecgtool bench --store store-public --json bench.json --baseline benchmarks/baselines/default-model.json
    """
    import torch

    from ecgtool.bench.report import plot_per_label, print_terminal, to_markdown
    from ecgtool.bench.run import load_baseline, regressions, run_bench
    from ecgtool.bundle import resolve_bundle
    from ecgtool.files import write_json_atomic, write_text_atomic
    from ecgtool.registry import load_registry, parse_languages
    from ecgtool.store import Store

    languages = parse_languages(lang)
    registry = load_registry()
    torch_device = resolve_device(device)
    bundle = resolve_bundle(model, registry).to(torch_device)
    reference = load_baseline(baseline) if baseline is not None else None
    result = run_bench(bundle, Store(store), registry, split, languages, confusions, torch_device)
    dropped = regressions(result, reference, max_drop) if reference is not None else []
    print_terminal(result, output, dropped)
    if as_json is not None:
        write_json_atomic(as_json, result)
    if markdown is not None:
        write_text_atomic(markdown, to_markdown(result, dropped))
    if plot is not None:
        plot_per_label(result, plot)
    if reliability is not None:
        if not (result.get("calibration") or {}).get("languages"):
            raise EcgToolError(f"--reliability {reliability}: {bundle.directory} carries no calibration (run `ecgtool calibrate`)")
        from ecgtool.bench.calibration import plot_reliability

        plot_reliability(result["calibration"], reliability)
    if dropped:
        console.print(f"[red]error:[/red] regression against {baseline} (more than {max_drop:g} points): "
                      + "; ".join(dropped), highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if reference is not None:
        output.print(f"no headline figure dropped by more than {max_drop:g} points against {baseline}", highlight=False)


def _register_more_commands() -> None:
    from ecgtool.cli_search import register_search_commands

    register_search_commands(app)


_register_more_commands()

if __name__ == "__main__":
    app()
