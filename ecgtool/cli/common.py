"""What every command shares: the consoles, one-line errors, progress bars and the ``--device`` option."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ecgtool.errors import EcgToolError

console = Console(stderr=True)
output = Console()
_debug = False


def set_debug(debug: bool) -> None:
    """``--debug``: tracebacks instead of one-line errors."""
    global _debug
    _debug = debug
    if not debug:
        sys.unraisablehook = _quiet_h5py_teardown


def device_option():
    """The ``--device`` option of every command that runs a model (``ecgtool.devices.resolve_device``)."""
    return typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")


def print_note(note: str) -> None:
    """A library's note for the user (``on_note``), on stderr."""
    console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


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
