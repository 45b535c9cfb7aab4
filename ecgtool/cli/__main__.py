"""``python -m ecgtool.cli`` (and ``torchrun ... -m ecgtool.cli train``): the ``ecgtool`` command."""

from ecgtool.cli import app

app()
