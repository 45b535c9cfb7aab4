"""``ecgtool embed`` and ``ecgtool search``: a store's ECG embeddings, and finding its ECGs by
findings, free text or an example ECG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ecgtool.cli.common import console, device_option, one_line_errors, output, rate_progress


@one_line_errors
def embed(
    store: Path = typer.Option(..., "--store", "-s", help="Store made by `ecgtool ingest`."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle (default: the one shipped with ecgtool)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Embedding file (default: <store>/embeddings/<bundle fingerprint>.h5)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = device_option(),
):
    """Write every record's ECG embedding beside the store; a re-run adds only new records, and
    re-embeds those whose stored samples changed (a re-ingest).

    Example: ecgtool embed --store stores/ptbxl
    """
    from ecgtool.bundle import resolve_bundle
    from ecgtool.devices import resolve_device
    from ecgtool.embeddings import embed_store
    from ecgtool.store import Store

    torch_device = resolve_device(device)
    bundle = resolve_bundle(model).to(torch_device)
    with rate_progress("embed", "records") as show:
        result = embed_store(Store(store), bundle, out, batch_size, torch_device, progress=show)
    rate = f"{result.records_per_second:,.1f} records/s" if result.embedded or result.reembedded else ""
    if result.reembedded:
        done = (f"{result.embedded} records embedded and {result.reembedded} re-embedded ({rate}; the store's samples "
                "of those had changed since they were embedded: re-ingested)")
    else:
        done = f"{result.embedded} records embedded" + (f" ({rate})" if rate else "")
    output.print(f"{done}, {result.already} already in {result.path}", highlight=False, soft_wrap=True)


@one_line_errors
def search(
    store: Path = typer.Option(..., "--store", "-s", help="Store whose records are searched (embedded by `ecgtool embed`)."),
    finding: list[str] = typer.Option([], "--finding", "-f", help="Finding id, Japanese or English name or synonym. Repeatable."),
    text: list[str] = typer.Option([], "--text", "-t", help="Free text (needs --lm). Repeatable."),
    lm: Optional[Path] = typer.Option(None, "--lm", help="The language model the bundle was trained with (folder or .gguf)."),
    like: list[Path] = typer.Option([], "--like", help="A record file (any format ingest reads): its nearest ECGs. Repeatable."),
    like_id: list[str] = typer.Option([], "--like-id", help="A record id of the store: its nearest other ECGs. Repeatable."),
    exclude_patient: bool = typer.Option(False, "--exclude-patient", help="Leave out the records of the --like/--like-id records' patients."),
    split: list[str] = typer.Option([], "--split", help="Only records of this split (train, val, test). Repeatable."),
    source: list[str] = typer.Option([], "--source", help="Only records whose source path contains this text. Repeatable (any)."),
    has: list[str] = typer.Option([], "--has", help="Only records whose stored labels hold this finding. Repeatable (all)."),
    lacks: list[str] = typer.Option([], "--lacks", help="Only labelled records whose stored labels lack this finding. Repeatable."),
    top: int = typer.Option(20, "--top", "-k", help="How many records to return.", min=1),
    lang: str = typer.Option("both", "--lang", help="Label vectors of ja, en or both (averaged); names shown in ja unless en."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle (default: the one shipped with ecgtool)."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Embedding file (default: <store>/embeddings/<bundle fingerprint>.h5)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the hits to this CSV."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write each hit as an ECG picture into this directory."),
    device: str = device_option(),
):
    """Find the store's ECGs by findings, free text or an example ECG (several parts: all must score high).

    Example: ecgtool search --store stores/ptbxl --finding 心房細動 --finding LBBB --top 20
    """
    from ecgtool.bundle import resolve_bundle
    from ecgtool.devices import resolve_device
    from ecgtool.errors import EcgToolError
    from ecgtool.registry import load_registry, parse_languages
    from ecgtool.search import (Filters, finding_parts, like_file_parts, like_id_parts, open_search_space,
                                plot_hits, resolve_finding, result_as_dict, search as run_search, text_parts,
                                write_hits_csv)
    from ecgtool.store import Store

    parse_languages(lang)
    if text and lm is None:
        raise EcgToolError("--text needs --lm: the language model the bundle was trained with")
    if not (finding or text or like or like_id):
        raise EcgToolError("nothing to search for: give --finding, --text, --like or --like-id")
    registry = load_registry()
    torch_device = resolve_device(device)
    bundle = resolve_bundle(model, registry).to(torch_device)
    filters = Filters(tuple(split), tuple(source), tuple(resolve_finding(registry, t).id for t in has),
                      tuple(resolve_finding(registry, t).id for t in lacks), exclude_patient)
    parts = finding_parts(bundle, registry, finding, lang)
    if text:
        parts += text_parts(bundle, lm, text, "cuda" if torch_device.type == "cuda" else "cpu")
    parts += like_file_parts(bundle, like, torch_device)
    space = open_search_space(Store(store), bundle, embeddings)
    parts += like_id_parts(space, like_id)
    result = run_search(space, parts, registry, filters, top, torch_device)
    names_lang = "en" if lang == "en" else "ja"
    if as_json:
        output.print_json(data=result_as_dict(result, registry, names_lang))
    else:
        _print_hits(output, result, registry, names_lang)
    if out is not None:
        write_hits_csv(out, result, registry, names_lang)
        console.print(f"hits written to {out}", highlight=False, soft_wrap=True)
    if plot is not None:
        written = plot_hits(space, result, plot, registry, names_lang)
        console.print(f"{len(written)} ECG pictures written to {plot}", highlight=False, soft_wrap=True)


def _print_hits(output, result, registry, lang: str) -> None:
    from rich.table import Table

    from ecgtool.registry import NAME_SEPARATOR
    from ecgtool.search import finding_names

    what = " + ".join(part.label if part.kind != "finding" else finding_names(registry, [part.label], lang)[0]
                      for part in result.parts)
    table = Table(title=f"{what}: top {len(result.hits)} of {result.eligible} records "
                        f"({result.searched} in the store)")
    for column in ("#", "record", "patient", "split", "score", "cosine", "stored findings"):
        table.add_column(column, justify="right" if column in ("#", "score", "cosine") else "left", overflow="fold")
    separator = NAME_SEPARATOR[lang]
    for hit in result.hits:
        table.add_row(str(hit.rank), hit.record_id, hit.patient_id, hit.split, f"{hit.score:.3f}",
                      " / ".join(f"{c:.3f}" for c in hit.cosines),
                      separator.join(finding_names(registry, hit.findings, lang)) or "–")
    output.print(table)
    if len(result.parts) > 1:
        output.print("score: the lowest over the parts of the z-score of the cosine (all parts must score high)",
                     highlight=False)
