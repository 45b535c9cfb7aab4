"""Which findings exclude each other on one report, and how a reading resolves a conflict.

The rules live in the registry (``labels/findings.yaml``, section ``exclusions``), as entries of
two kinds:

* ``group: [a, b, c]``: at most one of these findings is called (one dominant rhythm; one grade
  of LVH; one certainty of an infarction of one wall; ...);
* ``finding: x`` with ``excludes: [a, b]`` or ``excludes: all``: ``x`` is never called together
  with those (``normal`` excludes every other finding).

Each entry carries a ``why``. A reading calls the findings above their operating points, then
walks them from the most probable down: a finding that conflicts with one already kept is not
called but shown as "excluded by" it. The stronger statement wins; the order of the rules does
not matter, and no two kept findings conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExclusionRules:
    """``conflicts[i, j]``: findings ``i`` and ``j`` (registry order) are never called together.
    Symmetric, with a false diagonal."""

    conflicts: np.ndarray
    reasons: tuple[str, ...]

    def resolve(self, called: Sequence[int], strength: Sequence[float]) -> tuple[list[int], dict[int, int]]:
        """Keep the strongest of every conflicting set.

        Parameters
        ----------
        called : finding indices above their operating points
        strength : each one's strength (its calibrated probability), same order

        Returns
        -------
        kept : the indices called present, strongest first
        excluded : ``{index: index of the kept finding that excludes it}``
        """
        order = sorted(range(len(called)), key=lambda k: (-strength[k], called[k]))
        kept: list[int] = []
        excluded: dict[int, int] = {}
        for k in order:
            finding = called[k]
            winner = next((other for other in kept if self.conflicts[finding, other]), None)
            if winner is None:
                kept.append(finding)
            else:
                excluded[finding] = winner
        return kept, excluded


def parse_exclusions(raw, index_by_id: Mapping[str, int], error: Callable[[tuple, str], Exception]) -> ExclusionRules:
    """The ``exclusions`` section → :class:`ExclusionRules`. ``error(keys, problem)`` makes the
    registry's one-line error pointing at the offending line."""
    n = len(index_by_id)
    conflicts = np.zeros((n, n), dtype=bool)
    reasons = []
    if not isinstance(raw, list):
        raise error(("exclusions",), "exclusions must be a list of rules")

    def indices(value, keys) -> list[int]:
        if not isinstance(value, list) or not value:
            raise error(keys, "expected a non-empty list of finding ids")
        unknown = [v for v in value if v not in index_by_id]
        if unknown:
            raise error(keys, f"unknown finding id {unknown[0]!r}")
        if len(set(value)) != len(value):
            raise error(keys, "a finding is listed twice")
        return [index_by_id[v] for v in value]

    for position, entry in enumerate(raw):
        keys = ("exclusions", position)
        if not isinstance(entry, dict) or not isinstance(entry.get("why"), str) or not entry["why"].strip():
            raise error(keys, "each rule is a mapping with a `why`")
        if set(entry) == {"group", "why"}:
            members = indices(entry["group"], keys + ("group",))
            if len(members) < 2:
                raise error(keys + ("group",), "a group needs at least two findings")
            for a in members:
                for b in members:
                    conflicts[a, b] = a != b
        elif set(entry) == {"finding", "excludes", "why"}:
            if entry["finding"] not in index_by_id:
                raise error(keys + ("finding",), f"unknown finding id {entry['finding']!r}")
            finding = index_by_id[entry["finding"]]
            others = [i for i in range(n) if i != finding] if entry["excludes"] == "all" else indices(entry["excludes"], keys + ("excludes",))
            if finding in others:
                raise error(keys + ("excludes",), "a finding cannot exclude itself")
            conflicts[finding, others] = True
            conflicts[others, finding] = True
        else:
            raise error(keys, "a rule has either `group` and `why`, or `finding`, `excludes` and `why`")
        reasons.append(entry["why"].strip())
    return ExclusionRules(conflicts, tuple(reasons))
