"""The ``ecgtool`` command line: options in, one library call out."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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


def one_line_errors(command):
    """Turn library errors into ``error: <file>: <what is wrong>`` and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EcgToolError as error:
            if _debug:
                raise
            console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


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
    from ecgtool.registry import load_registry

    registry = load_registry(registry_path)
    if lang not in ("ja", "en", "both"):
        raise typer.BadParameter("--lang must be ja, en or both")
    table = Table(title=f"findings.yaml v{registry.version} ({registry.hash}): {len(registry)} findings")
    table.add_column("#", justify="right")
    table.add_column("id", overflow="fold")
    if lang in ("ja", "both"):
        table.add_column("日本語", overflow="fold")
    if lang in ("en", "both"):
        table.add_column("English", overflow="fold")
    for test in registry.supersets:
        table.add_column(test, overflow="fold")
    shown = 0
    for finding in registry.findings:
        classes = {test: finding.supersets.get(test, ()) for test in registry.supersets}
        if superset and not (classes.get(superset) or any(superset in ids for ids in classes.values())):
            continue
        names = ([finding.ja] if lang in ("ja", "both") else []) + ([finding.en] if lang in ("en", "both") else [])
        table.add_row(str(finding.index), finding.id, *names, *(", ".join(ids) for ids in classes.values()))
        shown += 1
    if superset and not shown:
        raise EcgToolError(f"--superset {superset}: no such superset test or class, or no finding maps into it")
    output.print(table)


@app.command()
@one_line_errors
def ingest(
    inputs: list[Path] = typer.Argument(..., help="Directories (searched recursively) or .hea files."),
    out: Path = typer.Option(..., "--out", "-o", help="Store directory to create or resume."),
    metadata: list[Path] = typer.Option(
        [], "--metadata", "-m", help="PTB-XL ptbxl_database.csv or a sidecar CSV (record, patient, report, findings, split). Repeatable."
    ),
    workers: int = typer.Option(0, "--workers", "-j", help="Worker processes reading records (0: one per CPU core)."),
    shard_size: int = typer.Option(512, "--shard-size", help="Records per HDF5 shard."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored sample type: float16 (error ≤ 2^-11 of the value) or float32."),
    min_seconds: float = typer.Option(5.0, "--min-seconds", help="Reject records shorter than this instead of zero-padding them."),
    derive_limb_leads: bool = typer.Option(
        False, "--derive-limb-leads", help="Opt-in repair: build missing III, aVR, aVL, aVF from I and II."
    ),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Patients in val when no fold/split column decides."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Patients in test when no fold/split column decides."),
    seed: str = typer.Option("ecgtool", "--seed", help="Salt of the patient hash that places patients in splits."),
    no_checksums: bool = typer.Option(False, "--no-checksums", help="Do not verify WFDB signal checksums."),
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
    with Progress(
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("ingest", total=None, rate="")

        def show(done: int, total: int) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:,.0f} records/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

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
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bfloat16 on cuda, float32 on cpu)."),
):
    """Embed the label, superset and report prompts with a frozen language model into a vector cache.

    Example: ecgtool embed-labels --model models/MedLlama3-JP-v2 --store stores/ptbxl --device cuda
    """
    from ecgtool.registry import load_registry
    from ecgtool.store import Store
    from ecgtool.text import collect_prompts, embed_prompts

    if lang not in ("ja", "en", "both"):
        raise EcgToolError(f"--lang {lang}: expected ja, en or both")
    if pooling not in ("mean", "last"):
        raise EcgToolError(f"--pooling {pooling}: expected mean or last")
    if out is None:
        if store is None:
            raise EcgToolError("--out is required when no --store is given")
        out = store / "text-cache"
    registry = load_registry()
    langs = ("ja", "en") if lang == "both" else (lang,)
    prompts = collect_prompts(registry, Store(store) if store is not None else None, langs)
    with Progress(
        TextColumn("embed"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("embed", total=None, rate="")

        def show(done: int, total: int) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:,.1f} prompts/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        result = embed_prompts(model, prompts, out, pooling, layer, batch_size, device, registry, show)
    output.print(
        f"{result.prompts} prompts in {result.cache_dir}: {result.cached} cached, {result.new} new "
        f"in {result.seconds:.1f} s ({result.prompts_per_second:,.1f} prompts/s)",
        highlight=False, soft_wrap=True,
    )


if __name__ == "__main__":
    app()
