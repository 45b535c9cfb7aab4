"""A split of the store paired with cached text vectors, held in memory for training.

Each record is paired with the cached vector of its own report prompt in each training language
(``text_index[i, j]``: the prompt of record ``i`` in the ``j``-th language).
When the split fits in memory it is loaded once (float16 samples, as stored) and batches are
taken by index, on the GPU when it fits there: no DataLoader, no per-step read from disk.
Otherwise the samples stay in the shards and worker processes read each batch ahead of its step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from ecgtool.errors import EcgToolError
from ecgtool.registry import Registry, parse_languages
from ecgtool.store import Store, read_shard
from ecgtool.text_cache import TextCache


class TrainingDataError(EcgToolError):
    """The store and the text cache cannot be used together."""


@dataclass
class SplitData:
    """One split: ``signals[i]`` (or the HDF5 row ``locations[i]`` when streamed) pairs with
    ``text_vectors[text_index[i, j]]``, its prompt in ``langs[j]``."""

    record_ids: list[str]
    signals: torch.Tensor | None
    findings: torch.Tensor
    text_index: torch.Tensor
    text_vectors: torch.Tensor
    dropped_unlabelled: int
    locations: list[tuple[str, int]] | None = None
    langs: tuple[str, ...] = ("ja",)

    def __len__(self) -> int:
        return len(self.record_ids)

    @property
    def streamed(self) -> bool:
        return self.signals is None

    def to(self, device: torch.device) -> "SplitData":
        return SplitData(
            self.record_ids,
            None if self.signals is None else self.signals.to(device),
            self.findings.to(device),
            self.text_index.to(device),
            self.text_vectors.to(device),
            self.dropped_unlabelled,
            self.locations,
            self.langs,
        )


class StreamedSignals(torch.utils.data.Dataset):
    """Reads the samples of a batch of records from the shards, for splits too large for memory.

    Indexed by a list of record indices (one batch): used with a ``DataLoader`` whose sampler
    yields the batches, so worker processes read upcoming batches while the model trains.
    """

    def __init__(self, locations: list[tuple[str, int]]):
        self.locations = locations
        self._files: dict[str, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, indices) -> torch.Tensor:
        indices = [int(i) for i in indices]
        by_file: dict[str, list[tuple[int, int]]] = {}
        for position, index in enumerate(indices):
            path, row = self.locations[index]
            by_file.setdefault(path, []).append((row, position))
        batch = None
        for path, rows in by_file.items():
            shard = self._files.get(path)
            if shard is None:
                shard = self._files[path] = h5py.File(path, "r")
            rows.sort()
            unique_rows = sorted({row for row, _ in rows})
            block = shard["signal"][unique_rows]  # h5py wants increasing, unique rows
            if batch is None:
                batch = np.empty((len(indices), *block.shape[1:]), dtype=block.dtype)
            lookup = {row: i for i, row in enumerate(unique_rows)}
            for row, position in rows:
                batch[position] = block[lookup[row]]
        return torch.from_numpy(batch)


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


def split_fits_in_memory(store: Store, split: str, fraction: float = 0.5) -> bool:
    """Whether the split's samples take less than ``fraction`` of the memory available now."""
    itemsize = 2 if store.contract.get("stored_dtype", "float16") == "float16" else 4
    needed = store.counts()[split]["records"] * len(store.contract["lead_order"]) * store.contract["n_samples"] * itemsize
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return True
    return needed < fraction * available


def load_split(
    store: Store, split: str, cache: TextCache, lang: str, max_records: int | None = None, with_signals: bool = True
) -> SplitData:
    """Read ``split`` of ``store`` and pair each record with its prompt vector in each language of
    ``lang`` (``ja``, ``en`` or ``both``).

    Records without findings (no prompt) are dropped and counted; a prompt missing from the
    cache is an error naming the record. With ``with_signals=False`` the samples stay on disk
    and ``locations`` says where each record's are (see ``StreamedSignals``).
    """
    langs = parse_languages(lang)
    record_ids: list[str] = []
    signals: list[np.ndarray] = []
    findings: list[np.ndarray] = []
    text_index: list[list[int]] = []
    locations: list[tuple[str, int]] = []
    dropped = 0
    for path in store.shard_paths(split):
        shard = read_shard(path, with_signal=with_signals)
        prompts = {lang: getattr(shard, f"prompt_{lang}") for lang in langs}
        keep = [i for i in range(len(shard.record_id)) if all(prompts[lang][i] for lang in langs)]
        dropped += len(shard.record_id) - len(keep)
        for i in keep:
            rows = []
            for lang in langs:
                row = cache.row_of(prompts[lang][i], lang)
                if row is None:
                    raise TrainingDataError(
                        f"{cache.directory}: no vector for the {lang} prompt of record {shard.record_id[i]} "
                        f"({prompts[lang][i]!r}); run `ecgtool embed-labels --lang {'both' if len(langs) > 1 else lang}` on this store"
                    )
                rows.append(row)
            text_index.append(rows)
        record_ids.extend(shard.record_id[i] for i in keep)
        locations.extend((str(path), i) for i in keep)
        if with_signals:
            signals.append(shard.signal[keep])
        findings.append(shard.findings[keep])
        if max_records is not None and len(record_ids) >= max_records:
            break
    if not record_ids:
        raise TrainingDataError(f"{store.directory}: the {split} split has no record with a {lang} prompt")
    n = len(record_ids) if max_records is None else min(len(record_ids), max_records)
    return SplitData(
        record_ids=record_ids[:n],
        signals=torch.from_numpy(np.concatenate(signals)[:n]) if with_signals else None,
        findings=torch.from_numpy(np.concatenate(findings)[:n]),
        text_index=torch.tensor(text_index[:n], dtype=torch.long),
        text_vectors=torch.from_numpy(cache.vectors),
        dropped_unlabelled=dropped,
        locations=locations[:n],
        langs=langs,
    )
