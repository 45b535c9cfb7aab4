"""Shared fixtures: the real public records in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real records not found at {SHARED_DATA}: clone the project beside its shared/ folder")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ptbxl500(shared_data) -> Path:
    return shared_data / "ptb-xl" / "records500"


@pytest.fixture(scope="session")
def public_store(shared_data, tmp_path_factory) -> Path:
    """The store the default model was trained and is benchmarked on, rebuilt exactly as
    ``scripts/default-model-store.sh`` builds it (once per test session)."""
    import os
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("default-model-store")
    script = Path(__file__).resolve().parents[1] / "scripts" / "default-model-store.sh"
    built = subprocess.run(["bash", str(script), str(work)], capture_output=True, text=True,
                           env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert built.returncode == 0, built.stderr[-2000:]
    return work / "store-public"


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="Device of the tests that take one (the `device` fixture): cpu (default), cuda or cuda:N.")


def pytest_configure(config):
    config.addinivalue_line("markers", "device: runs on the --device given to pytest (default cpu)")


@pytest.fixture(scope="session")
def device(request) -> str:
    """``--device`` of this pytest run; a GPU that is absent fails the run rather than skipping."""
    from ecgtool.devices import resolve_device

    return str(resolve_device(request.config.getoption("--device")))


# Deterministic runs (train --deterministic; test_compile, test_train on CUDA) need cuBLAS's fixed workspace, which
# cuBLAS reads when CUDA makes its first handle: set at collection, before any test touches CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture(autouse=True)
def _torch_switches_restored():
    """``train(deterministic=True)`` turns process-wide switches on: back as they were for the next test."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs, where the test may mount one (root on Linux); skipped elsewhere (the ingest
    test that needs it has a twin that injects the error instead)."""
    import subprocess

    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
