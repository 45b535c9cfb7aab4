"""The text cache: prompt vectors made once by a frozen language model, read by ``train`` and
``export`` without it.

A cache directory holds::

    vectors.safetensors  one tensor ``vectors`` (n, hidden) float32, row i = prompts.jsonl line i
    prompts.jsonl        one JSON object per row: text, kind, lang, finding_ids, key
    cache.json           how the vectors were made: model, fingerprint, pooling, layer, dtype,
                         registry version/hash/templates, hidden size, ecgtool version

``ecgtool.text.embed_prompts`` writes it (docs/embed-labels.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ecgtool.errors import EcgToolError
from ecgtool.files import write_json_atomic, write_text_atomic, written_whole
from ecgtool.registry import Registry

VECTORS = "vectors.safetensors"
PROMPTS = "prompts.jsonl"
METADATA = "cache.json"


class TextCacheError(EcgToolError):
    """A text cache that cannot be read, or lacks a vector it is asked for; names the directory."""


@dataclass(frozen=True)
class Prompt:
    """One text to embed.

    Attributes
    ----------
    text : str
        The prompt as given to the language model.
    kind : {"label", "superset", "report"}
        A single-finding label prompt, a superset class prompt or a store record's prompt.
    lang : {"ja", "en"}
    finding_ids : tuple of str
        The findings the prompt names (empty for superset prompts).
    key : str
        Finding id for labels, ``"<test>/<class>"`` for supersets, ``""`` for reports.
    """

    text: str
    kind: str
    lang: str
    finding_ids: tuple[str, ...] = ()
    key: str = ""


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
                raise TextCacheError(f"{self.directory}: no vector for the {lang} label prompt of {finding.id}")
            rows.append(row)
        return rows

    @cached_property
    def _rows(self) -> dict:
        return {(p.lang, p.text): i for i, p in enumerate(self.prompts)}


def load_text_cache(directory: str | Path) -> TextCache:
    """Read a cache written by ``ecgtool embed-labels``."""
    directory = Path(directory)
    if not (directory / METADATA).is_file():
        raise TextCacheError(f"{directory}: not a text cache (no {METADATA}; run `ecgtool embed-labels`)")
    metadata, prompts, vectors = read_cache(directory)
    return TextCache(directory, vectors.astype(np.float32, copy=False), prompts, metadata)


def read_cache(cache_dir: str | Path) -> tuple[dict, list[Prompt], np.ndarray]:
    """Read a vector cache: (metadata, prompts, vectors)."""
    from safetensors.numpy import load_file

    cache_dir = Path(cache_dir)
    try:
        metadata = json.loads((cache_dir / METADATA).read_text(encoding="utf-8"))
        lines = (cache_dir / PROMPTS).read_text(encoding="utf-8").splitlines()
        prompts = [_prompt_from_json(json.loads(line)) for line in lines if line]
        vectors = load_file(cache_dir / VECTORS)["vectors"]
    except (OSError, ValueError, KeyError) as error:
        raise TextCacheError(f"{cache_dir}: unreadable text cache ({error})") from None
    if len(prompts) != len(vectors):
        raise TextCacheError(f"{cache_dir}: {PROMPTS} has {len(prompts)} rows but {VECTORS} {len(vectors)}")
    return metadata, prompts, vectors


def _prompt_from_json(row: dict) -> Prompt:
    return Prompt(row["text"], row["kind"], row["lang"], tuple(row["finding_ids"]), row.get("key", ""))


def write_cache(cache_dir: Path, metadata: dict, prompts: list[Prompt], vectors: np.ndarray) -> None:
    """Write a whole cache: vectors and prompts first, metadata last, so that a ``cache.json``
    only exists beside the rows it describes."""
    from safetensors.numpy import save_file

    cache_dir.mkdir(parents=True, exist_ok=True)
    with written_whole(cache_dir / VECTORS) as tmp:
        save_file({"vectors": np.ascontiguousarray(vectors)}, str(tmp))
    lines = (json.dumps({**asdict(p), "finding_ids": list(p.finding_ids)}, ensure_ascii=False) for p in prompts)
    write_text_atomic(cache_dir / PROMPTS, "".join(line + "\n" for line in lines))
    write_json_atomic(cache_dir / METADATA, metadata)
