"""``ecgtool bench``: a bundle's held-out figures beside the paper's, and the regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ecgtool.cli.common import console, device_option, one_line_errors, output
from ecgtool.errors import EcgToolError


@one_line_errors
def bench(
    store: Path = typer.Option(..., "--store", "-s", help="Store made by `ecgtool ingest` (its held-out split is scored)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle (default: the one shipped with ecgtool)."),
    split: str = typer.Option("test", "--split", help="Store split to score: test (default) or val (train: in-sample, with a warning)."),
    lang: str = typer.Option("both", "--lang", help="Prompt language(s): ja, en or both."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Write every figure as JSON here (the --baseline format)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the tables as Markdown here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the per-label table (ours beside the paper's)."),
    reliability: Optional[Path] = typer.Option(None, "--reliability", help="Write the calibration's reliability diagram as a PNG (calibrated bundles)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="A stored `bench --json` output to compare the headline figures with."),
    max_drop: float = typer.Option(2.0, "--max-drop", help="With --baseline: fail when a headline figure drops by more points than this.", min=0.0),
    confusions: int = typer.Option(3, "--confusions", help="How many 'most mistaken for' findings to list per finding.", min=0),
    supervised: Optional[Path] = typer.Option(None, "--supervised", help="A checkpoint of `ecgtool train --objective supervised`: its macro AUROC on the same records, beside the zero-shot model's."),
    device: str = device_option(),
):
    """Per-label top-1/top-5 (Table 9), zero-shot superset tests (Tables 2–7), AUROC and calibration, beside the paper.

    Exits with 1 when --baseline is given and a headline figure dropped by more than --max-drop points.

    Example: ecgtool bench --store store-public --json bench.json --baseline benchmarks/baselines/default-model.json
    """
    from ecgtool.bench.report import in_sample_warning, plot_per_label, print_terminal, to_markdown
    from ecgtool.bench.run import load_baseline, regressions, run_bench
    from ecgtool.bundle import resolve_bundle
    from ecgtool.devices import resolve_device
    from ecgtool.files import write_json_atomic, write_text_atomic
    from ecgtool.registry import load_registry, parse_languages
    from ecgtool.store import Store

    languages = parse_languages(lang)
    warning = in_sample_warning(split)
    if warning:
        console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    registry = load_registry()
    torch_device = resolve_device(device)
    bundle = resolve_bundle(model, registry).to(torch_device)
    reference = load_baseline(baseline) if baseline is not None else None
    result = run_bench(bundle, Store(store), registry, split, languages, confusions, torch_device, supervised)
    dropped = regressions(result, reference, max_drop, baseline) if reference is not None else []
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
