"""The registry's exclusion rules and how a reading resolves a conflict (issue 25: no report
line calls two exclusive findings together; the stronger one wins)."""

from __future__ import annotations

import pytest

from ecgtool.registry import RegistryError, _parse_registry, load_registry


def _resolve(registry, probabilities: dict[str, float]):
    ids = list(probabilities)
    kept, excluded = registry.exclusions.resolve([registry.index(i) for i in ids], list(probabilities.values()))
    name = lambda index: registry.findings[index].id
    return [name(i) for i in kept], {name(i): name(j) for i, j in excluded.items()}


def test_the_stronger_of_two_exclusive_findings_wins_and_the_other_is_excluded_by_it():
    registry = load_registry()
    kept, excluded = _resolve(registry, {"complete_left_bundle_branch_block": 0.6, "complete_right_bundle_branch_block": 0.8,
                                         "left_anterior_fascicular_block": 0.7})
    assert kept == ["complete_right_bundle_branch_block", "left_anterior_fascicular_block"]
    assert excluded == {"complete_left_bundle_branch_block": "complete_right_bundle_branch_block"}


def test_normal_excludes_every_abnormal_finding_either_way():
    registry = load_registry()
    assert _resolve(registry, {"normal": 0.9, "left_ventricular_hypertrophy": 0.4, "inferior_wall_infarction": 0.3}) == (
        ["normal"], {"left_ventricular_hypertrophy": "normal", "inferior_wall_infarction": "normal"})
    assert _resolve(registry, {"normal": 0.5, "inferior_wall_infarction": 0.6}) == (
        ["inferior_wall_infarction"], {"normal": "inferior_wall_infarction"})


def test_one_rhythm_one_axis_one_grade_one_statement_per_wall():
    registry = load_registry()
    conflicts = registry.exclusions.conflicts
    pairs = [("atrial_fibrillation", "sinus_bradycardia"), ("atrial_fibrillation", "sinus_arrhythmia"),
             ("complete_right_bundle_branch_block", "incomplete_right_bundle_branch_block"),
             ("left_axis_deviation", "right_axis_deviation"), ("mild_left_ventricular_hypertrophy", "left_ventricular_hypertrophy"),
             ("inferior_wall_infarction", "possible_inferior_wall_infarction"),
             ("complete_atrioventricular_block", "first_degree_atrioventricular_block")]
    for a, b in pairs:
        assert conflicts[registry.index(a), registry.index(b)] and conflicts[registry.index(b), registry.index(a)], (a, b)
    compatible = [("complete_right_bundle_branch_block", "left_anterior_fascicular_block"),
                  ("atrial_fibrillation", "ventricular_premature_contractions"),
                  ("left_ventricular_hypertrophy", "st_t_abnormality"), ("inferior_wall_infarction", "anteroseptal_infarction")]
    for a, b in compatible:
        assert not conflicts[registry.index(a), registry.index(b)], (a, b)
    assert not conflicts.diagonal().any() and (conflicts == conflicts.T).all()


def test_a_bad_rule_is_a_one_line_error_at_its_line_and_rules_leave_the_hash_alone():
    registry = load_registry()
    text = registry.path.read_text(encoding="utf-8")
    broken = text.replace("  - group: [clockwise_rotation, counterclockwise_rotation]",
                          "  - group: [clockwise_rotation, anticlockwise_rotation]")
    with pytest.raises(RegistryError, match="unknown finding id 'anticlockwise_rotation'") as caught:
        _parse_registry(broken, registry.path)
    assert "findings.yaml:" in str(caught.value)
    start = text.index("\nexclusions:")
    without = text[:start] + "\n" + text[text.index("\nvocabularies:"):]
    assert _parse_registry(without, registry.path).hash == registry.hash
