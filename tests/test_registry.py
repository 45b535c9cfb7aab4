"""Tests for ecgtool.registry against the real registry, paper tables and vocabulary files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from ecgtool.registry import FINDING_COUNT, RegistryError, load_registry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DOCS = REPO / "docs" / "registry.md"

CPSC_CODES = ("AF", "I-AVB", "LBBB", "Normal", "PAC", "PVC", "RBBB", "STD", "STE")


def shared_file(*parts: str) -> Path:
    """Return a file under ../shared, skipping the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/{parts[0]} not found: {path}")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def vocabulary_codes(vocabulary: str) -> set[str]:
    """Every code of a public vocabulary, read from the files the registry must cover."""
    if vocabulary == "scp":
        rows = read_csv(shared_file("data", "ptb-xl", "scp_statements.csv"))
        return {row[""] for row in rows}
    if vocabulary == "snomed":
        challenge = ("data", "challenge")
        codes = set()
        for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
            codes |= {row["SNOMEDCTCode"] for row in read_csv(shared_file(*challenge, name))}
        chapman = shared_file(*challenge, "chapman-shaoxing", "ConditionNames_SNOMED-CT.csv")
        return codes | {row["Snomed_CT"] for row in read_csv(chapman)}
    return set(CPSC_CODES)


def snake_case(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def registry_text(registry) -> str:
    return registry.path.read_text(encoding="utf-8")


# --- findings -----------------------------------------------------------------------------


def test_findings_are_table9_names_in_table9_order(registry):
    rows = read_csv(shared_file("paper", "table9_per_label_accuracy.csv"))
    published = [row["finding_en"] for row in rows if row["finding_en"] != "all labels"]

    assert len(published) == FINDING_COUNT == len(registry)
    assert [finding.en for finding in registry.findings] == published
    assert [finding.index for finding in registry.findings] == list(range(FINDING_COUNT))
    assert "Ventricular Couplet" in published
    assert "Ventricular Premature Contractions Couplets" in published


def test_ids_are_the_english_names_in_snake_case(registry):
    assert [finding.id for finding in registry.findings] == [
        snake_case(finding.en) for finding in registry.findings
    ]
    assert registry.ids() == tuple(finding.id for finding in registry.findings)


@pytest.mark.parametrize(
    ("finding_id", "ja"),
    [
        ("sinus_tachycardia", "洞性頻脈"),
        ("complete_right_bundle_branch_block", "完全右脚ブロック"),
        ("left_ventricular_hypertrophy", "左室肥大"),
        ("abnormal_q_wave", "異常Q波"),
        ("negative_t_wave", "陰性T波"),
        ("flat_t_wave", "平低T波"),
        ("clockwise_rotation", "時計方向回転"),
        ("counterclockwise_rotation", "反時計方向回転"),
        ("supraventricular_premature_contractions", "上室性期外収縮"),
        ("ventricular_premature_contractions", "心室性期外収縮"),
        ("first_degree_atrioventricular_block", "第1度房室ブロック"),
        ("left_anterior_fascicular_block", "左脚前枝ブロック"),
        ("suspected_inferior_wall_infarction", "下壁梗塞の疑い"),
        ("low_voltage_limb_leads", "肢誘導低電位"),
        ("high_voltage_leads_corresponding_to_left_ventricle", "左室高電位"),
        ("prolonged_qt_interval", "QT延長"),
        ("atrial_fibrillation", "心房細動"),
    ],
)
def test_japanese_device_statements(registry, finding_id, ja):
    assert registry.finding(finding_id).ja == ja


@pytest.mark.parametrize(
    ("prefix", "suffix"), [("Suspected ", "の疑い"), ("Possible ", "の可能性")]
)
def test_hedged_findings_follow_one_japanese_convention(registry, prefix, suffix):
    hedged = [finding for finding in registry.findings if finding.en.startswith(prefix)]
    assert hedged, f"no finding starts with {prefix!r}"
    for finding in hedged:
        assert finding.ja.endswith(suffix), finding.id
        base = registry.lookup_term(finding.en.removeprefix(prefix))
        if base is not None:
            assert finding.ja == base.ja + suffix, finding.id


def test_every_name_and_synonym_resolves_to_its_own_finding(registry):
    for finding in registry.findings:
        names = (finding.en, finding.ja, *finding.synonyms_en, *finding.synonyms_ja)
        for term in (finding.id, *names):
            assert registry.lookup_term(term) == finding, term
        for term in names:
            assert registry.extract_findings(term) == (finding.id,), term


def test_unknown_finding_id_raises_a_clear_key_error(registry):
    with pytest.raises(KeyError, match="unknown finding id 'sinus_tachy'"):
        registry.finding("sinus_tachy")
    with pytest.raises(KeyError, match="unknown finding id"):
        registry.index("Sinus Tachycardia")


# --- lookup and extraction -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "finding_id"),
    [
        ("洞性頻脈", "sinus_tachycardia"),
        ("Sinus tachycardia", "sinus_tachycardia"),
        ("sinus_tachycardia", "sinus_tachycardia"),
        ("RBBB", "complete_right_bundle_branch_block"),
        ("ＲＢＢＢ", "complete_right_bundle_branch_block"),
        ("  complete   right bundle branch block ", "complete_right_bundle_branch_block"),
        ("右脚ブロック", "complete_right_bundle_branch_block"),
        ("Af", "atrial_fibrillation"),
        ("AF", "atrial_fibrillation"),
        ("AFL", "atrial_flutter"),
        ("ｐｖｃ", "ventricular_premature_contractions"),
        ("第Ⅰ度房室ブロック", "first_degree_atrioventricular_block"),
        ("ST－T異常", "st_t_abnormality"),
        ("RSR\u2019 pattern", "rsr_pattern"),
        ("第2度房室ブロック(ウェンケバッハ型)", "second_degree_atrioventricular_block_wenckebach"),
    ],
)
def test_lookup_term(registry, term, finding_id):
    assert registry.lookup_term(term).id == finding_id


@pytest.mark.parametrize("term", ["洞調律", "sinus rhythm", "bundle branch block", "AMI", ""])
def test_lookup_term_returns_none_for_unknown_terms(registry, term):
    assert registry.lookup_term(term) is None


def test_extract_findings_from_a_japanese_report_line(registry):
    assert registry.extract_findings("洞調律、完全右脚ブロック、左室肥大の疑い") == (
        "complete_right_bundle_branch_block",
        "left_ventricular_hypertrophy",
    )


def test_extract_findings_takes_the_longest_match(registry):
    report = "不完全右脚ブロック、反時計方向回転、軽度ST-T異常の疑い、下壁梗塞の疑い"
    assert registry.extract_findings(report) == (
        "suspected_inferior_wall_infarction",
        "incomplete_right_bundle_branch_block",
        "suspected_mild_st_t_abnormality",
        "counterclockwise_rotation",
    )


def test_extract_findings_reads_left_to_right(registry):
    # The longest name overall, 急性前壁梗塞の疑い, starts inside 亜急性: subacute must win.
    assert registry.extract_findings("亜急性前壁梗塞の疑い") == ("subacute_anterior_wall_infarction",)
    assert registry.extract_findings("急性前壁梗塞の疑い") == (
        "suspected_acute_anterior_wall_infarction",
    )


def test_extract_findings_from_an_english_report(registry):
    report = "Sinus rhythm. 1st degree AV block. Complete right bundle branch block. LVH."
    assert registry.extract_findings(report) == (
        "complete_right_bundle_branch_block",
        "first_degree_atrioventricular_block",
        "left_ventricular_hypertrophy",
    )


def test_extract_findings_does_not_match_short_terms_inside_words(registry):
    report = "PACED rhythm. AFL with variable block. Run of SVT. Normal axis. Abnormal ECG."
    assert registry.extract_findings(report) == (
        "pacemaker_rhythm",
        "supraventricular_tachycardia",
        "atrial_flutter",
    )


def test_extract_findings_single_english_words_only_as_statements(registry):
    assert registry.extract_findings("Sinus rhythm\nＮｏｒｍａｌ") == ("normal",)
    assert registry.extract_findings("tachycardia, LAD") == ("tachycardia", "left_axis_deviation")
    assert registry.extract_findings("atrial tachycardia; normal sinus rhythm") == ()


def test_extract_findings_returns_unique_ids(registry):
    assert registry.extract_findings("Af。心房細動。atrial fibrillation") == ("atrial_fibrillation",)


# --- multi-hot -------------------------------------------------------------------------------


def test_multi_hot_round_trip(registry):
    ids = ["normal", "sinus_tachycardia", "suspected_acute_anterior_wall_infarction"]
    vector = registry.multi_hot(ids)

    assert vector.dtype == np.uint8
    assert vector.shape == (FINDING_COUNT,)
    assert np.flatnonzero(vector).tolist() == [0, 68, 97]
    assert registry.ids_from_multi_hot(vector) == (
        "sinus_tachycardia",
        "normal",
        "suspected_acute_anterior_wall_infarction",
    )
    assert registry.multi_hot([]).sum() == 0


def test_multi_hot_rejects_bad_input(registry):
    with pytest.raises(KeyError):
        registry.multi_hot(["not_a_finding"])
    with pytest.raises(TypeError):
        registry.multi_hot("normal")
    with pytest.raises(ValueError, match="shape"):
        registry.ids_from_multi_hot(np.zeros(FINDING_COUNT - 1))


# --- prompts -------------------------------------------------------------------------------


def test_prompt_orders_by_registry_and_joins_per_language(registry):
    ids = ["complete_right_bundle_branch_block", "sinus_tachycardia", "sinus_tachycardia"]

    assert registry.prompt(ids, "ja") == "この心電図は洞性頻脈、完全右脚ブロックを示す。"
    assert registry.prompt(ids, "en") == (
        "This ECG shows Sinus Tachycardia, Complete Right Bundle Branch Block."
    )
    assert registry.prompt(reversed(ids), "ja") == registry.prompt(ids, "ja")


def test_prompt_for_a_single_finding(registry):
    assert registry.prompt(["rsr_pattern"], "en") == "This ECG shows RSR' Pattern."
    assert registry.prompt(["normal"], "ja") == "この心電図は正常心電図を示す。"


def test_prompt_without_findings_is_none(registry):
    assert registry.prompt([], "ja") is None
    assert registry.prompt(iter(()), "en") is None


def test_prompt_rejects_unknown_language_and_ids(registry):
    with pytest.raises(ValueError, match="language"):
        registry.prompt(["normal"], "de")
    with pytest.raises(KeyError):
        registry.prompt(["sinus_rhythm"], "en")


def test_superset_prompt_fills_the_template_with_the_class_name(registry):
    assert registry.superset_prompt("rhythm", "sinus_rhythm", "ja") == "この心電図は洞調律を示す。"
    assert registry.superset_prompt("mitbih", "lbbb_beat", "en") == (
        "This ECG shows Left bundle branch block beat."
    )
    with pytest.raises(KeyError):
        registry.superset_prompt("rhythm", "normal_beat", "en")


# --- supersets -----------------------------------------------------------------------------


def test_superset_classes_are_the_paper_classes(registry):
    rows = read_csv(shared_file("paper", "tables2to7_superset_accuracy.csv"))
    published: dict[str, list[str]] = {}
    for row in rows:
        if row["class"] != "all":
            published.setdefault(row["test"], []).append(row["class"])

    assert {test: [cls.en for cls in classes] for test, classes in registry.supersets.items()} == (
        published
    )


def test_superset_classes_are_a_union_in_class_order(registry):
    ids = ["ventricular_premature_contractions", "complete_left_bundle_branch_block", "normal"]
    assert registry.superset_classes(ids, "mitbih") == (
        "normal_beat",
        "lbbb_beat",
        "premature_ventricular_contraction",
    )
    assert registry.superset_classes(ids, "superclass") == ("norm", "cd")
    assert registry.superset_classes(["left_axis_deviation"], "superclass") == ()
    with pytest.raises(KeyError, match="unknown superset test"):
        registry.superset_classes(ids, "rhythms")


def test_sinus_rhythm_and_normal_beat_come_from_normal_only(registry):
    assert registry.findings_in_class("rhythm", "sinus_rhythm") == ("normal",)
    assert registry.findings_in_class("mitbih", "normal_beat") == ("normal",)
    assert registry.findings_in_class("superclass", "norm") == ("normal",)


@pytest.mark.parametrize(
    ("finding_id", "test", "classes"),
    [
        ("atrial_fibrillation", "rhythm", ("atrial_fibrillation",)),
        ("sinus_bradycardia", "rhythm", ("sinus_bradycardia",)),
        ("bradycardia", "rhythm", ()),
        ("complete_right_bundle_branch_block", "mitbih", ("rbbb_beat",)),
        ("incomplete_right_bundle_branch_block", "mitbih", ()),
        ("left_anterior_fascicular_block", "mitbih", ()),
        ("frequent_supraventricular_premature_contractions", "mitbih", ("atrial_premature_beat",)),
        ("ventricular_tachycardia", "mitbih", ("premature_ventricular_contraction",)),
        ("clockwise_rotation", "mitbih", ()),
        ("sinoatrial_block", "superclass", ("cd",)),
        ("severe_bradycardia", "superclass", ()),
        ("possible_high_posterior_wall_infarction", "superclass", ("mi",)),
        ("left_atrial_enlargement", "superclass", ("hyp",)),
        ("prolonged_qt_interval", "superclass", ("sttc",)),
        ("supraventricular_premature_contractions", "rhythm", ()),
    ],
)
def test_clinical_superset_memberships(registry, finding_id, test, classes):
    assert registry.superset_classes([finding_id], test) == classes


TABLE8_CLASSES = {
    "Normal ECG": ("superclass", "norm"),
    "Conduction Disturbance": ("superclass", "cd"),
    "Mycardial Infarction": ("superclass", "mi"),
    "Mycardinal Infarction": ("superclass", "mi"),
    "Hypertrophy": ("superclass", "hyp"),
    "ST/T change": ("superclass", "sttc"),
    "Sinus Tachycardia": ("rhythm", "sinus_tachycardia"),
    "Sinus Arrhythmia": ("rhythm", "sinus_arrhythmia"),
    "Sinus Bradycardia": ("rhythm", "sinus_bradycardia"),
    "Atrial fibrillation": ("rhythm", "atrial_fibrillation"),
    "Normal Beat": ("mitbih", "normal_beat"),
    "Left bundle branch block beat": ("mitbih", "lbbb_beat"),
    "Right bundle branch block beat": ("mitbih", "rbbb_beat"),
    "Atrial premature beat": ("mitbih", "atrial_premature_beat"),
    "Premature ventricular contraction": ("mitbih", "premature_ventricular_contraction"),
}


def documented_departures() -> set[str]:
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- departures:", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    return {row.split("|")[1].strip() for row in rows}


def test_every_table8_departure_is_documented(registry):
    rows = read_csv(shared_file("paper", "table8_label_mapping.csv"))
    departures = set()
    for row in rows:
        # Table 8's columns are shifted: each cell is placed by its class name, not its column.
        cells = (row["superclass"], row["rhythm"], row["mitbih"])
        table8 = {TABLE8_CLASSES[cell] for cell in cells if cell}
        finding = registry.lookup_term(row["finding_en"])
        ours = {(test, cls) for test, classes in finding.supersets.items() for cls in classes}
        if ours != table8:
            departures.add(finding.en)

    assert len(rows) == FINDING_COUNT
    assert documented_departures() == departures


def test_docs_list_every_finding_with_its_names_and_classes(registry):
    text = DOCS.read_text(encoding="utf-8")
    header = "| # | id | en (Table 9) | ja | superset classes |"
    table = text.split(header, 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    expected = [
        [
            str(finding.index),
            f"`{finding.id}`",
            finding.en,
            finding.ja,
            "; ".join(f"{test}: {', '.join(c)}" for test, c in finding.supersets.items()) or "—",
        ]
        for finding in registry.findings
    ]
    assert rows == expected


# --- vocabularies --------------------------------------------------------------------------


@pytest.mark.parametrize("vocabulary", ["scp", "snomed", "cpsc"])
def test_vocabulary_covers_exactly_the_published_codes(registry, vocabulary):
    codes = vocabulary_codes(vocabulary)
    known = registry.vocabularies[vocabulary]

    assert {code for code in codes if registry.codes_to_findings(vocabulary, code) is None} == set()
    assert set(known.mapped) | set(known.unmapped) == codes


@pytest.mark.parametrize(
    ("vocabulary", "code", "finding_ids"),
    [
        ("scp", "CRBBB", ("complete_right_bundle_branch_block",)),
        ("scp", "IRBBB", ("incomplete_right_bundle_branch_block",)),
        ("scp", "AFIB", ("atrial_fibrillation",)),
        ("scp", "1AVB", ("first_degree_atrioventricular_block",)),
        ("scp", "NORM", ("normal",)),
        ("scp", "STACH", ("sinus_tachycardia",)),
        ("scp", "ILMI", ("inferior_wall_infarction", "lateral_wall_infarction")),
        ("scp", "LVOLT", ("low_voltage_limb_leads", "low_voltage_chest_leads")),
        ("snomed", "164889003", ("atrial_fibrillation",)),
        ("snomed", "427084000", ("sinus_tachycardia",)),
        ("snomed", "270492004", ("first_degree_atrioventricular_block",)),
        ("snomed", "713427006", ("complete_right_bundle_branch_block",)),
        ("snomed", "59931005", ("negative_t_wave",)),
        ("snomed", "27885002", ("complete_atrioventricular_block",)),
        ("snomed", "54016002", ("second_degree_atrioventricular_block_wenckebach",)),
        ("cpsc", "I-AVB", ("first_degree_atrioventricular_block",)),
        ("cpsc", "AF", ("atrial_fibrillation",)),
        ("cpsc", "PVC", ("ventricular_premature_contractions",)),
        ("cpsc", "Normal", ("normal",)),
    ],
)
def test_clinically_certain_mappings(registry, vocabulary, code, finding_ids):
    assert registry.codes_to_findings(vocabulary, code) == finding_ids


@pytest.mark.parametrize(
    ("vocabulary", "code"),
    [
        ("scp", "SR"),
        ("snomed", "426783006"),  # sinus rhythm
        ("snomed", "6374002"),  # bundle branch block, side unstated
        ("snomed", "164865005"),  # myocardial infarction, location unstated
        ("snomed", "195042002"),  # second-degree AV block, type unstated
        ("scp", "2AVB"),
        ("cpsc", "STD"),
    ],
)
def test_parent_and_counterpart_less_codes_are_known_but_unmapped(registry, vocabulary, code):
    assert registry.codes_to_findings(vocabulary, code) == ()


def test_codes_are_normalised_and_unknown_codes_give_none(registry):
    assert registry.codes_to_findings("scp", " crbbb ") == ("complete_right_bundle_branch_block",)
    assert registry.codes_to_findings("cpsc", "i-avb") == ("first_degree_atrioventricular_block",)
    assert registry.codes_to_findings("snomed", " 164889003\n") == ("atrial_fibrillation",)
    assert registry.codes_to_findings("scp", "XYZ") is None
    assert registry.codes_to_findings("snomed", "164889004") is None
    with pytest.raises(KeyError, match="unknown vocabulary"):
        registry.codes_to_findings("icd10", "I48")


# --- loading, hash, validation -------------------------------------------------------------


def test_default_registry_is_packaged_and_cached(registry):
    assert load_registry() is registry
    assert registry.path.name == "findings.yaml"
    assert registry.version == "1.0.0"
    assert re.fullmatch(r"[0-9a-f]{16}", registry.hash)


def test_hash_is_stable_across_loads_and_ignores_layout(registry, registry_text, tmp_path):
    first = load_registry(registry.path)
    second = load_registry(registry.path)
    assert first.hash == second.hash == registry.hash
    assert first == second

    # Same content, other comments and quoting.
    relaid_text = re.sub(r"(?m)^(  - id: \w+)$", r"\1  # finding", registry_text)
    relaid_text = relaid_text.replace('version: "1.0.0"', "version: '1.0.0'")
    relaid_text = "# a new comment\n\n" + relaid_text
    assert relaid_text.count("# finding") == FINDING_COUNT
    relaid = tmp_path / "findings.yaml"
    relaid.write_text(relaid_text, encoding="utf-8")
    assert load_registry(relaid).hash == registry.hash


def test_hash_changes_when_a_japanese_name_changes(registry, registry_text, tmp_path):
    changed = tmp_path / "findings.yaml"
    text, _ = edit(registry_text, "    ja: 洞性頻脈\n", "    ja: 洞性頻拍\n")
    changed.write_text(text, encoding="utf-8")

    reloaded = load_registry(changed)
    assert reloaded.finding("sinus_tachycardia").ja == "洞性頻拍"
    assert reloaded.hash != registry.hash
    assert reloaded.version == registry.version


def edit(text: str, old: str, new: str) -> tuple[str, int]:
    """Replace the first ``old`` with ``new``; return the new text and the edit's line."""
    assert old in text, old
    position = text.index(old)
    return text[:position] + new + text[position + len(old):], text.count("\n", 0, position) + 1


def line_of(text: str, fragment: str) -> int:
    return text.count("\n", 0, text.index(fragment)) + 1


def duplicate_id(text):
    text, line = edit(text, "  - id: tachycardia\n", "  - id: bradycardia\n")
    return text, line, "duplicate id 'bradycardia'"


def unknown_mapping_target(text):
    text, line = edit(text, "STACH: [sinus_tachycardia]", "STACH: [sinus_tachycardy]")
    return text, line, "unknown finding id 'sinus_tachycardy'"


def unknown_superset_class(text):
    old = "supersets: {rhythm: [sinus_tachycardia]}"
    text, line = edit(text, old, old.replace("sinus_tachycardia", "sinus_tachy"))
    return text, line, "unknown class 'sinus_tachy'"


def ninety_seven_findings(text):
    start = text.index("  - id: suspected_acute_anterior_wall_infarction")
    text = text[:start] + text[text.index("\n\n", start) + 2:]
    return text, line_of(text, "\nfindings:") + 1, "expected exactly 98 findings, found 97"


def ambiguous_synonym(text):
    text, line = edit(text, "en: [CLBBB, LBBB,", "en: [CLBBB, RBBB, LBBB,")
    return text, line, "ambiguous"


def code_mapped_and_unmapped(text):
    marker = '      SR: "sinus rhythm'
    text, line = edit(text, marker, '      NORM: "also unmapped"\n' + marker)
    return text, line, "listed twice"


def duplicate_yaml_key(text):
    entry = "      NORM: [normal]\n"
    text, line = edit(text, entry, entry + entry)
    return text, line + 1, "duplicate key 'NORM'"


def template_without_slot(text):
    text, line = edit(text, "This ECG shows {findings}.", "This ECG shows.")
    return text, line, "{findings}"


def unquoted_snomed_code(text):
    text, line = edit(text, '"164889003": [atrial', "164889003: [atrial")
    return text, line, "must be a string"


def broken_yaml(text):
    text, line = edit(text, "    en: Sinus Tachycardia\n", "    en: [Sinus Tachycardia\n")
    return text, None, "invalid YAML"  # the parser notices later than the typo


@pytest.mark.parametrize(
    "corrupt",
    [
        duplicate_id,
        unknown_mapping_target,
        unknown_superset_class,
        ninety_seven_findings,
        ambiguous_synonym,
        code_mapped_and_unmapped,
        duplicate_yaml_key,
        template_without_slot,
        unquoted_snomed_code,
        broken_yaml,
    ],
)
def test_malformed_registry_is_rejected_at_the_right_line(registry_text, tmp_path, corrupt):
    text, line, problem = corrupt(registry_text)
    path = tmp_path / "findings.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(RegistryError) as caught:
        load_registry(path)

    assert problem in caught.value.problem
    if line is not None:
        assert caught.value.line == line
        assert str(caught.value).startswith(f"{path}:{line}: ")


def test_missing_version_is_rejected(registry_text, tmp_path):
    path = tmp_path / "findings.yaml"
    path.write_text(edit(registry_text, 'version: "1.0.0"\n', "")[0], encoding="utf-8")
    with pytest.raises(RegistryError, match="missing 'version'"):
        load_registry(path)


def test_missing_file_is_a_registry_error(tmp_path):
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "absent.yaml")


def test_the_built_wheel_ships_the_top_level_registry_as_ecgtool_labels(tmp_path):
    """labels/findings.yaml is the one source; the build maps it into the package."""
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(repo)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("ecgtool-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("ecgtool/labels/findings.yaml")
        names = archive.namelist()
    assert shipped == (repo / "labels" / "findings.yaml").read_bytes()
    assert "ecgtool/models/default/model.safetensors" in names and not any(n.startswith("labels/") for n in names)
