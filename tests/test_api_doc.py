"""docs/api.md stays true: its ```python blocks run in order, in one namespace, from a folder that
holds the repository's examples/ (and ../shared where a block reads it), and a ```text block right
below a python block is what that block prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "api.md"
SHARED = REPO.parent / "shared"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def doc_blocks(text: str) -> list[tuple[str, str | None]]:
    """Each python block's code, and the text block right below it (None where there is none)."""
    fences = [(match.group(1), match.group(2), match.start(), match.end()) for match in _FENCE.finditer(text)]
    blocks = []
    for index, (kind, body, _, end) in enumerate(fences):
        if kind != "python":
            continue
        following = fences[index + 1] if index + 1 < len(fences) else None
        printed = following[1] if following and following[0] == "text" and not text[end:following[2]].strip() else None
        blocks.append((body, printed))
    return blocks


def test_the_doc_has_blocks_to_run():
    blocks = doc_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8 and sum(printed is not None for _, printed in blocks) >= 7


def test_api_doc_runs_as_written(tmp_path, monkeypatch):
    text = DOC.read_text(encoding="utf-8")
    if "../shared" in text and not SHARED.is_dir():
        pytest.skip(f"docs/api.md reads ../shared, absent here ({SHARED})")
    work = tmp_path / "work"  # what the blocks write (a plot, FHIR files) lands here
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__api_doc__"}
    for number, (code, printed) in enumerate(doc_blocks(text), start=1):
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            exec(compile(code, f"docs/api.md block {number}", "exec"), namespace)  # noqa: S102
        if printed is not None:
            assert captured.getvalue() == printed, f"docs/api.md block {number} printed something else"
    assert (work / "00299_hr.png").stat().st_size > 10_000
    assert (work / "readings.ndjson").read_text(encoding="utf-8").count("\n") == 4


def test_readme_api_lines_run(monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API"):]
    code = next(match.group(2) for match in _FENCE.finditer(section) if match.group(1) == "python")
    assert len(code.strip().splitlines()) == 3
    monkeypatch.chdir(REPO)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        exec(compile(code, "README.md Python API", "exec"), {"__name__": "__readme__"})  # noqa: S102
    assert captured.getvalue().startswith("This ECG shows Left Ventricular Hypertrophy")
