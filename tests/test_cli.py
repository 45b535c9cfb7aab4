"""End-to-end through the command line: one-line errors, exit codes, the summary."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from typer.testing import CliRunner

from ecgtool.cli import app
from ecgtool.registry import load_registry

runner = CliRunner()


def test_labels_lists_every_finding_in_both_languages():
    result = runner.invoke(app, ["labels", "--lang", "both"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    registry = load_registry()
    for finding in registry.findings:
        assert finding.ja in result.output and finding.en in result.output


def test_labels_superset_filter_and_unknown_superset():
    result = runner.invoke(app, ["labels", "--superset", "rhythm"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "心房細動" in result.output and "完全右脚ブロック" not in result.output
    bad = runner.invoke(app, ["labels", "--superset", "nonsense"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == ["error: --superset nonsense: no such superset test or class, or no finding maps into it"]


def test_ingest_missing_input_is_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "store")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such file or directory"]


def test_ingest_shipped_examples_and_rerun(tmp_path):
    examples = Path(__file__).resolve().parents[1] / "examples" / "ptb-xl"
    args = ["ingest", str(examples), "--metadata", str(examples / "ptbxl_database.csv"), "--out", str(tmp_path / "store")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["counts"]["test"] == {"records": 4, "patients": 4, "labelled": 4}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing to convert" in again.output


def test_every_train_recipe_field_is_an_option_with_the_same_default():
    """``ecgtool train``'s options build ``TrainConfig`` field by field: each field has an option
    whose default is the field's (but the library-only ones), and the command has no other."""
    import dataclasses

    import typer

    from ecgtool.cli import training
    from ecgtool.training.train import TrainConfig

    options = {name: parameter.default for name, parameter in inspect.signature(training.train).parameters.items()
               if isinstance(parameter.default, typer.models.OptionInfo)}
    for field in dataclasses.fields(TrainConfig):
        if field.name in training.LIBRARY_ONLY_FIELDS:
            continue
        option = options.pop(training.PARAMETER_OF_FIELD.get(field.name, field.name), None)
        assert option is not None, f"TrainConfig.{field.name} has no train option"
        assert option.default == field.default, f"--{field.name.replace('_', '-')}: {option.default!r} != {field.default!r}"
    assert set(options) == {"store", "text_cache", "out", "resume"}  # where to read and write, not the recipe
    defaults = {training.PARAMETER_OF_FIELD.get(f.name, f.name): f.default for f in dataclasses.fields(TrainConfig)}
    assert training.train_config(defaults) == TrainConfig()


def test_python_m_ecgtool_cli_runs_the_command_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ecgtool.cli", "labels", "--lang", "xx"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip() == "error: --lang xx: expected ja, en or both"
