"""Shared fixtures: the real public records in ../shared/data (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real records not found at {SHARED_DATA}: clone the project beside its shared/ folder")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ptbxl500(shared_data) -> Path:
    return shared_data / "ptb-xl" / "records500"
