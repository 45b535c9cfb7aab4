"""A split of the store paired with cached text vectors, held in memory for training.

Each record is paired with the cached vector of its own report prompt in the training language.
The split is loaded once (float16 samples, as stored) and batches are taken by index, on the GPU
when it fits there: no DataLoader, no per-step host→device copy of a whole batch from disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgtool.errors import EcgToolError
from ecgtool.registry import Registry
from ecgtool.store import Store
from ecgtool.text import METADATA, Prompt, read_cache


class TrainingDataError(EcgToolError):
    """The store and the text cache cannot be used together."""


@dataclass(frozen=True)
class TextCache:
    """Cached prompt vectors: ``vectors[i]`` embeds ``prompts[i]``."""

    directory: Path
    vectors: np.ndarray
    prompts: list[Prompt]
    metadata: dict

    def row_of(self, text: str, lang: str) -> int | None:
        return self._rows.get((lang, text))

    def label_rows(self, registry: Registry, lang: str) -> list[int]:
        """Rows of the 98 label prompts, in registry order."""
        rows = []
        for finding in registry.findings:
            row = self.row_of(registry.prompt([finding.id], lang), lang)
            if row is None:
                raise TrainingDataError(f"{self.directory}: no vector for the {lang} label prompt of {finding.id}")
            rows.append(row)
        return rows

    @property
    def _rows(self) -> dict:
        rows = self.__dict__.get("_row_index")
        if rows is None:
            rows = {(p.lang, p.text): i for i, p in enumerate(self.prompts)}
            object.__setattr__(self, "_row_index", rows)
        return rows


def load_text_cache(directory: str | Path) -> TextCache:
    """Read a cache written by ``ecgtool embed-labels``."""
    directory = Path(directory)
    if not (directory / METADATA).is_file():
        raise TrainingDataError(f"{directory}: not a text cache (no {METADATA}; run `ecgtool embed-labels`)")
    metadata, prompts, vectors = read_cache(directory)
    return TextCache(directory, vectors.astype(np.float32, copy=False), prompts, metadata)


@dataclass
class SplitData:
    """One split in memory: ``signals[i]`` pairs with ``text_vectors[text_index[i]]``."""

    record_ids: list[str]
    signals: torch.Tensor
    findings: torch.Tensor
    text_index: torch.Tensor
    text_vectors: torch.Tensor
    dropped_unlabelled: int

    def __len__(self) -> int:
        return len(self.record_ids)

    def to(self, device: torch.device) -> "SplitData":
        return SplitData(
            self.record_ids,
            self.signals.to(device),
            self.findings.to(device),
            self.text_index.to(device),
            self.text_vectors.to(device),
            self.dropped_unlabelled,
        )


def check_compatible(store: Store, cache: TextCache, registry: Registry) -> None:
    """One-line errors before training when store, cache and registry disagree."""
    if store.registry_hash != registry.hash:
        raise TrainingDataError(
            f"{store.directory}: built with registry {store.registry_hash}, installed registry is {registry.hash}; re-run ingest"
        )
    cache_hash = cache.metadata.get("registry_hash")
    if cache_hash != registry.hash:
        raise TrainingDataError(
            f"{cache.directory}: made with registry {cache_hash}, installed registry is {registry.hash}; re-run embed-labels"
        )


def load_split(store: Store, split: str, cache: TextCache, lang: str, max_records: int | None = None) -> SplitData:
    """Read ``split`` of ``store`` and pair each record with its ``lang`` prompt vector.

    Records without findings (no prompt) are dropped and counted; a prompt missing from the
    cache is an error naming the record.
    """
    record_ids: list[str] = []
    signals: list[np.ndarray] = []
    findings: list[np.ndarray] = []
    text_index: list[int] = []
    dropped = 0
    prompt_field = f"prompt_{lang}"
    for shard in store.shards(split):
        prompts = getattr(shard, prompt_field)
        keep = [i for i, prompt in enumerate(prompts) if prompt]
        dropped += len(prompts) - len(keep)
        for i in keep:
            row = cache.row_of(prompts[i], lang)
            if row is None:
                raise TrainingDataError(
                    f"{cache.directory}: no vector for the prompt of record {shard.record_id[i]} "
                    f"({prompts[i]!r}); run `ecgtool embed-labels` on this store"
                )
            text_index.append(row)
        record_ids.extend(shard.record_id[i] for i in keep)
        signals.append(shard.signal[keep])
        findings.append(shard.findings[keep])
        if max_records is not None and len(record_ids) >= max_records:
            break
    if not record_ids:
        raise TrainingDataError(f"{store.directory}: the {split} split has no record with a {lang} prompt")
    n = len(record_ids) if max_records is None else min(len(record_ids), max_records)
    return SplitData(
        record_ids=record_ids[:n],
        signals=torch.from_numpy(np.concatenate(signals)[:n]),
        findings=torch.from_numpy(np.concatenate(findings)[:n]),
        text_index=torch.tensor(text_index[:n], dtype=torch.long),
        text_vectors=torch.from_numpy(cache.vectors),
        dropped_unlabelled=dropped,
    )
