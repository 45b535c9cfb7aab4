"""``ecgtool labels``, ``ecgtool ingest`` and ``ecgtool embed-labels``: the registry, the store
and the text cache a model is trained from."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ecgtool.cli.common import device_option, one_line_errors, output, rate_progress
from ecgtool.errors import EcgToolError


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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a store made with other settings or from other records."),
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
        left_out = result.records_converted - result.records_stored
        output.print(
            f"stored {result.records_stored} records"
            + (f" of {result.records_converted} read ({left_out} skipped, listed below)" if left_out else "")
            + f" in {result.seconds:.1f} s ({result.records_per_second:,.0f} records/s); {result.shards_written} shards written"
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


@one_line_errors
def embed_labels(
    model: Path = typer.Option(..., "--model", help="Local Hugging Face model folder or .gguf file (nothing is downloaded)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Store whose train/val report prompts are embedded too."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cache directory (default: <store>/text-cache)."),
    lang: str = typer.Option("both", "--lang", help="ja, en or both."),
    pooling: str = typer.Option("mean", "--pooling", help="mean (masked mean of the tokens) or last (last token)."),
    layer: int = typer.Option(-1, "--layer", help="Hidden-state index: -1 is the last layer, 0 the embeddings."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per forward pass.", min=1),
    device: str = device_option(),
):
    """Embed the label, superset and report prompts with a frozen language model into a vector cache.

    The model runs in bfloat16 on CUDA, in float32 on the CPU.

    Example: ecgtool embed-labels --model models/MedLlama3-JP-v2 --store stores/ptbxl --device cuda
    """
    from ecgtool.devices import resolve_device
    from ecgtool.registry import load_registry, parse_languages
    from ecgtool.store import Store
    from ecgtool.text import collect_prompts, embed_prompts

    langs = parse_languages(lang)
    torch_device = resolve_device(device)
    if pooling not in ("mean", "last"):
        raise EcgToolError(f"--pooling {pooling}: expected mean or last")
    if out is None:
        if store is None:
            raise EcgToolError("--out is required when no --store is given")
        out = store / "text-cache"
    registry = load_registry()
    prompts = collect_prompts(registry, Store(store) if store is not None else None, langs)
    with rate_progress("embed", "prompts") as show:
        result = embed_prompts(model, prompts, out, pooling, layer, batch_size, str(torch_device), registry, show)
    output.print(
        f"{result.prompts} prompts in {result.cache_dir}: {result.cached} cached, {result.new} new "
        f"in {result.seconds:.1f} s ({result.prompts_per_second:,.1f} prompts/s)",
        highlight=False, soft_wrap=True,
    )
