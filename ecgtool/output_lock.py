"""One output, one writer: an exclusive lock held while a command writes a file or directory.

A second ``predict --out x.csv``, ``ingest --out store``, ``embed-labels``, ``train`` or
``export`` into an output that another process is writing is refused at once with a one-line
error naming the output and the process holding it, instead of interleaving rows or shards.
The lock is an ``flock`` on ``<file>.lock`` (outputs that are files) or ``<dir>/.ecgtool.lock``
(directories): the kernel releases it when its process ends, even on ``kill -9``, so a stale
lock file never blocks a re-run.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

from ecgtool.errors import EcgToolError

DIRECTORY_LOCK = ".ecgtool.lock"


class OutputInUseError(EcgToolError):
    """Another process is writing the same output."""


def lock_path_for(output: Path, is_directory: bool) -> Path:
    return output / DIRECTORY_LOCK if is_directory else output.with_name(output.name + ".lock")


@contextmanager
def exclusive_output(output: str | Path, is_directory: bool) -> Iterator[None]:
    """Hold the output's lock for the duration of the ``with`` block (directories are created)."""
    output = Path(output)
    if is_directory:
        output.mkdir(parents=True, exist_ok=True)
    path = lock_path_for(output, is_directory)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise OutputInUseError(
                f"{output}: being written by another ecgtool process (pid {holder}); "
                "wait for it to finish, or choose another output"
            ) from None
        # The file may have been replaced between open and lock by a holder that just finished.
        try:
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(descriptor)


def writes_output(parameter: str, is_directory: bool, when: Callable[[], bool] = lambda: True):
    """Decorate a function that writes the output named by its argument ``parameter``: the call
    holds that output's lock (``exclusive_output``). ``when()`` false skips the lock (e.g. the
    non-main ranks of a distributed run, which write nothing)."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with exclusive_output(bound.arguments[parameter], is_directory) if when() else nullcontext():
                return function(*args, **kwargs)

        return locked

    return decorate
