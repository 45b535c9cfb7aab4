"""``import ecgtool``: the package re-exports the Python API (ecgtool.api) lazily, so importing it
costs neither torch nor NumPy, and ``ecgtool.labels()`` stays the function although the registry's
data package is also named ``ecgtool.labels``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ecgtool
from ecgtool import api

REPO = Path(__file__).resolve().parents[1]


def test_import_ecgtool_is_cheap_and_labels_survive_the_registry_package():
    script = ("import sys, ecgtool; assert 'torch' not in sys.modules and 'numpy' not in sys.modules; "
              "found = ecgtool.labels(); import ecgtool.labels; from ecgtool.registry import load_registry; load_registry(); "
              "assert ecgtool.labels() == found and len(found) == 98 and [f.id for f in found] == list(load_registry().ids()); "
              "assert 'torch' not in sys.modules; print(sorted(ecgtool.__all__))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "load_model" in done.stdout and "read_record" in done.stdout


def test_the_face_is_the_api_module():
    for name in ("load_model", "read_record", "labels", "Model", "Reading", "ReadingFinding", "SourceError"):
        assert getattr(ecgtool, name) is getattr(api, name), name
    assert set(ecgtool.__all__) - {"__version__"} == set(api.__all__)
    assert {"load_model", "read_record", "labels", "Model", "Reading"} <= set(dir(ecgtool))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ecgtool.nothing  # noqa: B018
