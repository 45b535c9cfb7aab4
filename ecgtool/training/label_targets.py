"""What the label loss compares each training ECG with: every label prompt and every superset
class prompt, in each training language, and which of them are true of the record.

The K prompts are the registry's findings in registry order, then the classes of each superset
test in registry order (the prompts ``predict`` and ``bench``'s prompt-mode superset tables score
with). A record is positive for its findings and for every superset class they belong to. Where
none of its findings belongs to any class of a test (PTB-XL states no rhythm for most records),
that test's classes are masked: unknown, not negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ecgtool.registry import Registry
from ecgtool.text_cache import TextCache
from ecgtool.training.data import TrainingDataError


@dataclass(frozen=True)
class LabelPrompts:
    """``rows[l, k]``: the cache row of prompt ``k`` in language ``l``; ``membership``: (findings,
    K) 0/1, finding ``f`` makes prompt ``k`` true; ``test_of_prompt[k]``: the superset test of
    prompt ``k`` (-1 for the findings' own prompts)."""

    rows: torch.Tensor
    membership: np.ndarray
    test_of_prompt: np.ndarray
    names: tuple[str, ...]

    def targets(self, findings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, mask), each (N, K) uint8, for multi-hot ``findings`` (N, n_findings)."""
        findings = findings.cpu().numpy().astype(np.float32)
        targets = (findings @ self.membership) > 0
        mask = np.ones_like(targets)
        for test in range(int(self.test_of_prompt.max()) + 1):
            columns = self.test_of_prompt == test
            mask[:, columns] = targets[:, columns].any(axis=1, keepdims=True)
        return torch.from_numpy(targets.astype(np.uint8)), torch.from_numpy(mask.astype(np.uint8))


def label_prompts(registry: Registry, cache: TextCache, langs: tuple[str, ...]) -> LabelPrompts:
    """The K prompts of the label loss, their cache rows per language and what makes them true."""
    n_findings = len(registry.findings)
    names = [f.id for f in registry.findings]
    columns: list[np.ndarray] = [np.eye(n_findings, dtype=np.float32)]
    test_of_prompt = [-1] * n_findings
    texts: dict[str, list[str]] = {lang: [registry.prompt([f.id], lang) for f in registry.findings] for lang in langs}
    for test_index, (test, classes) in enumerate(registry.supersets.items()):
        for cls in classes:
            members = set(registry.findings_in_class(test, cls.id))
            columns.append(np.array([[f.id in members] for f in registry.findings], dtype=np.float32))
            test_of_prompt.append(test_index)
            names.append(f"{test}/{cls.id}")
            for lang in langs:
                texts[lang].append(registry.superset_prompt(test, cls.id, lang))
    rows = []
    for lang in langs:
        lang_rows = []
        for name, text in zip(names, texts[lang]):
            row = cache.row_of(text, lang)
            if row is None:
                raise TrainingDataError(f"{cache.directory}: no vector for the {lang} prompt of {name} ({text!r}); "
                                        "run `ecgtool embed-labels` again")
            lang_rows.append(row)
        rows.append(lang_rows)
    return LabelPrompts(torch.tensor(rows, dtype=torch.long), np.concatenate(columns, axis=1),
                        np.array(test_of_prompt), tuple(names))
