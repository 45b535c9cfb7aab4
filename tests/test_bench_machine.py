"""``bench.machine``: ecgtool against the machines' own measurements, on a store of the public files.

Every file of ../shared/data/formats (GE MUSE and CardioSoft, Philips, HL7 aECG, DICOM, SCP-ECG)
is ingested with the four PTB-XL examples into one temporary store, all in the test split (the
examples by their PTB-XL fold 10, the files by ``--test-fraction 1``). The files' own machine
values, read here with ``ecgtool.io.read_record``, say what must be compared; the figures are
checked against the per-record differences and against issue 22's tolerance for GE 12SL.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from ecgtool.bench import machine
from ecgtool.bench.machine import (
    ALL_RECORDS, COMPARED_KEYS, TOLERANCES, difference, machine_comparison, machine_program, record_difference, summarise,
)
from ecgtool.bench.report import machine_sections, print_terminal, to_markdown
from ecgtool.bench.run import run_bench
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.ingest import IngestOptions, ingest
from ecgtool.io import read_record
from ecgtool.measure import measure
from ecgtool.registry import load_registry
from ecgtool.signal import canonicalize
from ecgtool.splits import SplitFractions
from ecgtool.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "ptb-xl"
# The files whose measurements GE's 12SL program made: the MUSE exports keep the cart's original
# 12SL values, and the CardioSoft file names "12SL V21" as its analysis program.
GE_12SL = {"MUSE_20200923_093504_79000_example", "braveheart_example1", "braveheart_example2",
           "guangxi_teaching_sinus_rhythm", "example-XML1"}
ALL_IN_TEST = IngestOptions(workers=1, fractions=SplitFractions(train=0.0, val=0.0, test=1.0))


@pytest.fixture(scope="module")
def machine_values_of_files(shared_data) -> dict[str, dict[str, float]]:
    """Record id → the machine's values of the compared keys, as each file gives them (every file)."""
    files = sorted(path for path in (shared_data / "formats").rglob("*") if path.is_file() and path.suffix != ".md")
    records = {path.stem: read_record(path) for path in files}
    return {record_id: {key: value for key, value in record.measurements.items() if key in COMPARED_KEYS}
            for record_id, record in records.items()}


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory) -> Store:
    out = tmp_path_factory.mktemp("machine") / "store"
    ingest([shared_data / "formats", EXAMPLES], out, [EXAMPLES / "ptbxl_database.csv"], ALL_IN_TEST)
    store = Store(out)
    assert store.counts()["train"]["records"] == store.counts()["val"]["records"] == 0
    return store


@pytest.fixture(scope="module")
def comparison(store) -> dict:
    return machine_comparison(store, "test")


def test_every_record_with_machine_values_is_compared_and_no_other(comparison, machine_values_of_files):
    with_values = {record_id for record_id, values in machine_values_of_files.items() if values}
    without = {record_id for record_id, values in machine_values_of_files.items() if not values}
    assert len(with_values) >= 10 and {"demo", "example-DICOM1"} <= without  # files without machine values
    compared = [row["record_id"] for row in comparison["per_record"]]
    assert sorted(compared) == sorted(with_values)
    # The four PTB-XL examples and the files without machine values are read for metadata only.
    assert comparison["records"] == len(with_values)
    assert comparison["records_without_machine_values"] == len(without) + len(list(EXAMPLES.glob("*.hea")))
    assert comparison["programs"][ALL_RECORDS]["records"] == len(with_values)


def test_only_records_with_machine_values_are_measured(store, comparison, monkeypatch):
    measured = []

    def counting_measure(signal):
        measured.append(signal.shape)
        return measure(signal)

    monkeypatch.setattr(machine, "measure", counting_measure)
    assert machine_comparison(store, "test")["records"] == len(measured) == comparison["records"]
    assert all(shape == (12, 5000) for shape in measured)


def test_compared_counts_per_measurement_follow_the_files(comparison, machine_values_of_files):
    rows = {row["record_id"]: row for row in comparison["per_record"]}
    for program, figures in comparison["programs"].items():
        members = [record_id for record_id, row in rows.items() if program == ALL_RECORDS or row["program"] == program]
        assert figures["records"] == len(members)
        for key in COMPARED_KEYS:
            given = sum(key in machine_values_of_files[record_id] for record_id in members)
            if not given:
                assert key not in figures, f"{program} {key}"
                continue
            assert figures[key]["n"] + figures[key]["ecgtool_none"] == given, f"{program} {key}"
            assert figures[key]["machine_none"] == len(members) - given
    ge = comparison["programs"]["GE 12SL"]
    assert ge["records"] == len(GE_12SL)
    for key in COMPARED_KEYS:
        if key != "rr_ms":  # every GE 12SL file gives the rest; one MUSE file has no PharmaData RR
            assert ge[key]["n"] == len(GE_12SL), key


def test_programs_are_named_from_the_format_and_device(comparison):
    programs = {row["record_id"]: row["program"] for row in comparison["per_record"]}
    assert {record_id for record_id, program in programs.items() if program == "GE 12SL"} == GE_12SL
    assert programs["129DYPRG"] == "Philips" and programs["waveform_ecg"] == "Mortara"
    assert list(comparison["programs"])[0] == ALL_RECORDS
    assert machine_program({"format": "scp-ecg", "device": "Acme Cart 3"}) == "Acme Cart 3"
    assert machine_program({"format": "scp-ecg"}) == "scp-ecg (device not named)"


def test_every_ge_12sl_difference_is_within_the_issue_tolerance(comparison):
    for row in comparison["per_record"]:
        if row["program"] != "GE 12SL":
            continue
        for key, reference in row["machine"].items():
            assert row["ecgtool"][key] is not None, f"{row['record_id']} {key}: {row['reasons'].get(key)}"
            assert abs(row["difference"][key]) <= TOLERANCES[key], (
                f"{row['record_id']} {key}: ecgtool {row['ecgtool'][key]:g}, GE 12SL {reference:g}")
    ge = comparison["programs"]["GE 12SL"]
    for key in COMPARED_KEYS:
        assert ge[key]["within_tolerance"] == ge[key]["n"] and ge[key]["ecgtool_none"] == 0, key
    assert TOLERANCES["heart_rate_bpm"] == 3 and TOLERANCES["qt_ms"] == TOLERANCES["t_axis_deg"] == 20


def test_bias_sd_and_max_are_what_the_per_record_differences_give(comparison):
    for program, figures in comparison["programs"].items():
        rows = [row for row in comparison["per_record"] if program == ALL_RECORDS or row["program"] == program]
        for key in COMPARED_KEYS:
            if key not in figures:
                continue
            differences = [row["difference"][key] for row in rows if row["difference"].get(key) is not None]
            entry = figures[key]
            assert entry["n"] == len(differences)
            assert entry["bias"] == pytest.approx(statistics.fmean(differences), abs=1e-9)
            if len(differences) > 1:
                assert entry["sd"] == pytest.approx(statistics.stdev(differences), abs=1e-9)
            else:
                assert entry["sd"] is None
            assert entry["max_abs"] == pytest.approx(max(map(abs, differences)), abs=1e-9)
            assert entry["within_tolerance"] == sum(abs(d) <= TOLERANCES[key] for d in differences)


def test_differences_are_ecgtool_minus_the_files_own_values(comparison, machine_values_of_files):
    for row in comparison["per_record"]:
        assert row["machine"] == machine_values_of_files[row["record_id"]]
        for key, reference in row["machine"].items():
            ours = row["ecgtool"][key]
            expected = ours - reference if not key.endswith("_deg") else (ours - reference + 180) % 360 - 180
            assert row["difference"][key] == pytest.approx(expected if expected != -180 else 180)


def test_the_stored_samples_measure_as_the_file_read_directly(comparison, shared_data):
    """The row read for a record is that record's (float16 storage moves a point by a sample at most)."""
    files = {path.stem: path for path in (shared_data / "formats").rglob("*") if path.is_file()}
    for row in comparison["per_record"]:
        direct = measure(canonicalize(read_record(files[row["record_id"]])).signal)
        for key, ours in row["ecgtool"].items():
            assert abs(ours - direct[key]) <= 2.0, f"{row['record_id']} {key}: stored {ours}, file {direct[key]}"


def test_a_value_ecgtool_cannot_measure_is_counted_with_its_reason_not_compared():
    acquisition = {"format": "ge-muse", "measurements": {"pr_ms": 160.0, "qrs_axis_deg": 30.0}}
    row = record_difference("flat", acquisition, measure(np.zeros((12, 5000), dtype=np.float32)))
    assert row["ecgtool"] == row["difference"] == {"pr_ms": None, "qrs_axis_deg": None}
    assert row["reasons"]["pr_ms"].startswith("every lead is flat")
    figures = summarise([row])
    assert figures["pr_ms"]["n"] == 0 and figures["pr_ms"]["ecgtool_none"] == 1
    assert figures["pr_ms"]["bias"] is figures["pr_ms"]["sd"] is figures["pr_ms"]["max_abs"] is None
    assert figures["pr_ms"]["reasons"] == {"every lead is flat": 1}
    assert "qt_ms" not in figures  # the machine gave no QT: nothing to compare
    section = {"split": "test", "records": 1, "records_without_machine_values": 0, "tolerances": TOLERANCES,
               "programs": {ALL_RECORDS: figures, "GE 12SL": figures}, "per_record": [row]}
    (title, (header, rows), caption), = machine_sections({"machine_measurements": section})
    assert title.endswith("GE 12SL, 1 record (the test split)")
    assert rows[0][:5] == ["PR (ms)", "0", "–", "–", "–"] and rows[0][-2:] == ["1", "0"]
    assert "Not measured by ecgtool: PR: every lead is flat ×1; QRS axis: every lead is flat ×1." in caption


def test_axis_differences_wrap_to_the_shorter_way_round():
    assert difference("qrs_axis_deg", 170.0, -170.0) == -20.0
    assert difference("qrs_axis_deg", -170.0, 170.0) == 20.0
    assert difference("t_axis_deg", 90.0, -90.0) == 180.0  # (−180, 180]: never −180
    assert difference("p_axis_deg", -90.0, 90.0) == 180.0
    assert difference("qt_ms", 400.0, 420.0) == -20.0  # intervals are not wrapped


def test_the_comparison_keeps_to_its_split(store, comparison):
    assert machine_comparison(store, "train") is None  # every record of this store is in test
    everywhere = machine_comparison(store, None)
    assert everywhere["split"] is None and everywhere["programs"] == comparison["programs"]


def test_a_store_without_machine_values_gives_no_section(tmp_path):
    out = tmp_path / "examples"
    ingest([EXAMPLES], out, [EXAMPLES / "ptbxl_database.csv"], IngestOptions(workers=1))
    store = Store(out)
    assert store.counts()["test"]["records"] == 4
    assert machine_comparison(store, "test") is None
    result = run_bench(load_bundle(DEFAULT_BUNDLE), store, load_registry(), languages=("ja",))
    assert "machine_measurements" not in result
    assert "machines' own measurements" not in to_markdown(result)


def test_bench_renders_the_table_on_the_terminal_and_in_markdown(store):
    result = run_bench(load_bundle(DEFAULT_BUNDLE), store, load_registry(), languages=("ja",))
    section = result["machine_measurements"]
    assert json.loads(json.dumps(section)) == section  # plain JSON, as --json writes it
    assert section["records"] == machine_comparison(store, "test")["records"]
    console = Console(record=True, width=200)
    print_terminal(result, console)
    terminal, markdown = console.export_text(), to_markdown(result)
    assert f"## ecgtool against the machines' own measurements: GE 12SL, {len(GE_12SL)} records (the test split)" in markdown
    assert "GE 12SL, 5 records (the test split)" in terminal
    ge = section["programs"]["GE 12SL"]
    for name, key in (("PR (ms)", "pr_ms"), ("QT (ms)", "qt_ms"), ("QRS axis (°)", "qrs_axis_deg")):
        entry = ge[key]
        cells = [name, str(entry["n"]), f"{entry['bias']:+.1f}", f"{entry['sd']:.1f}", f"{entry['max_abs']:.1f}",
                 f"{entry['n']}/{entry['n']}", "20°" if key.endswith("_deg") else "20 ms", "0", "0"]
        assert "| " + " | ".join(cells) + " |" in markdown, name
        assert any([cell.strip() for cell in line.split("│")[1:-1]] == cells for line in terminal.splitlines()), name
    assert "references, not labels" in markdown and "sample SD (n − 1)" in markdown
    # Several programs measured: a table over all of them comes first.
    assert markdown.index("every program together") < markdown.index("GE 12SL, 5 records")
