"""The ``ecgtool`` command line: options in, one library call out.

One module per group of commands: ``data`` (labels, ingest, embed-labels), ``training`` (train,
export, calibrate), ``predict``, ``bench``, ``search`` (embed, search); what they share (consoles,
one-line errors, progress bars, the ``--device`` option) is in ``common``. The app below lists
every command, in the order ``--help`` shows them. ``python -m ecgtool.cli`` runs it
(``__main__``), as ``torchrun ... -m ecgtool.cli train`` does.
"""

from __future__ import annotations

import typer

from ecgtool.cli import bench, common, data, predict, search, training

app = typer.Typer(
    name="ecgtool",
    help="Train and use an ECG–text contrastive model on your own 12-lead ECGs and reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    common.set_debug(debug)


app.command()(data.labels)
app.command()(data.ingest)
app.command("embed-labels")(data.embed_labels)
app.command()(training.train)
app.command()(training.export)
app.command()(predict.predict)
app.command()(training.calibrate)
app.command()(bench.bench)
app.command()(search.embed)
app.command()(search.search)
