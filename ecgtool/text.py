"""Frozen language model → prompt vectors, written into a text cache (``ecgtool.text_cache``).

Rows are re-used by text while the model fingerprint, pooling, layer and registry hash match;
a cache made otherwise is refused rather than mixed. See ``docs/embed-labels.md``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecgtool import __version__
from ecgtool.errors import EcgToolError
from ecgtool.output_lock import writes_output
from ecgtool.text_cache import METADATA, Prompt, read_cache, write_cache

__all__ = [
    "CacheResult",
    "TextModelError",
    "collect_prompts",
    "embed_prompts",
    "embed_texts",
    "load_text_model",
    "model_fingerprint",
]

POOLINGS = ("mean", "last")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CONFIG = "config.json"
_BLOCK = 1 << 20
# Activations, KV buffers and the CUDA context on top of the weights.
_CUDA_HEADROOM = 1.2
_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

ProgressCallback = Callable[[int, int], None]


class TextModelError(EcgToolError):
    """A language model that cannot be used, or a cache made with another one; the message names the path."""


@dataclass(frozen=True)
class CacheResult:
    """What :func:`embed_prompts` did."""

    cache_dir: Path
    prompts: int
    cached: int
    new: int
    seconds: float

    @property
    def prompts_per_second(self) -> float:
        return self.new / self.seconds if self.seconds > 0 else 0.0


# --- model ------------------------------------------------------------------------------


def _model_files(path: Path) -> tuple[Path | None, list[Path]]:
    """Return (config file, weight files) of a model folder or a .gguf file."""
    if path.is_file() and path.suffix == ".gguf":
        return None, [path]
    if path.is_dir() and (path / _CONFIG).is_file():
        weights = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
        if weights:
            return path / _CONFIG, weights
    raise TextModelError(
        f"{path}: not a Hugging Face model folder or .gguf file "
        f"(expected {_CONFIG} with *.safetensors/*.bin weights, or a single .gguf file)"
    )


def model_fingerprint(path: str | Path) -> str:
    """Return the first 16 hex digits of a SHA-256 over the model's config and weights.

    Parameters
    ----------
    path : path
        A Hugging Face model folder or a ``.gguf`` file.

    Returns
    -------
    str
        Changes whenever the config text or any weight byte changes; the tokenizer is not
        included (a changed tokenizer with equal weights is not a realistic case).
    """
    config, weights = _model_files(Path(path))
    digest = hashlib.sha256()
    if config is not None:
        digest.update(config.read_bytes())
    for weight in weights:
        digest.update(weight.name.encode("utf-8"))
        with open(weight, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()[:16]


def estimate_parameter_bytes(path: str | Path, element_bytes: int = 2) -> int:
    """Estimate the bytes the weights take once loaded with ``element_bytes`` per element.

    Safetensors headers and GGUF tensor tables give exact element counts; other formats are
    estimated from their file size.
    """
    _, weights = _model_files(Path(path))
    total = 0
    for weight in weights:
        if weight.suffix == ".safetensors":
            total += _safetensors_elements(weight) * element_bytes
        elif weight.suffix == ".gguf":
            total += _gguf_elements(weight) * element_bytes
        else:
            total += weight.stat().st_size * element_bytes // 4
    return total


def _gguf_elements(path: Path) -> int:
    """Element count of a GGUF file's tensors (they are de-quantised on load)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return path.stat().st_size * 2  # Q4 packs about two elements per byte
    return sum(int(tensor.n_elements) for tensor in GGUFReader(str(path)).tensors)


def _safetensors_elements(path: Path) -> int:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(
        int(np.prod(entry["shape"], dtype=np.int64))
        for name, entry in header.items()
        if name != "__metadata__"
    )


def _check_memory(path: Path, dtype, device: str) -> None:
    """Refuse, with a one-line message, a model whose weights cannot fit the device's free memory."""
    import torch

    needed = estimate_parameter_bytes(path, torch.empty((), dtype=dtype).element_size())
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        where, advice = "the GPU has", "free the GPU or use a smaller model"
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
        where, advice = "this machine has", "use --device cuda or a smaller model"
    if needed * _CUDA_HEADROOM > free:
        raise TextModelError(
            f"{path}: the weights need about {needed / 2**30:.1f} GiB in {str(dtype).removeprefix('torch.')} "
            f"(plus ~{(_CUDA_HEADROOM - 1) * 100:.0f}% for activations) but {where} "
            f"{free / 2**30:.1f} GiB free; {advice}"
        )


def load_text_model(path: str | Path, device: str = "cpu", dtype=None):
    """Load a frozen language model and its tokenizer from a local path.

    Parameters
    ----------
    path : path
        A Hugging Face model folder (config, tokenizer, weights; decoder or encoder models)
        or a single ``.gguf`` file. Nothing is downloaded.
    device : str
        "cpu" or "cuda" (or "cuda:N").
    dtype : torch.dtype, optional
        Default float32 on CPU, bfloat16 on CUDA.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode with gradients off.

    Raises
    ------
    TextModelError
        If the path is not a model, the model cannot be loaded, or it does not fit the GPU.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    _model_files(path)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TextModelError(f"{path}: --device {device} asked for but CUDA is not available")
    _check_memory(path, dtype, device)
    folder, extra = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype, **extra)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TextModelError(f"{path}: cannot load the model ({reason})") from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TextModelError(f"{path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer


# --- embedding --------------------------------------------------------------------------


def embed_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    pooling: str = "mean",
    layer: int = -1,
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Embed texts with a frozen model's hidden states.

    Parameters
    ----------
    texts : sequence of str
    pooling : {"mean", "last"}
        Masked mean over the text's tokens, or the hidden state of its last token.
    layer : int
        Index into ``hidden_states`` (0 is the embedding output, -1 the last layer).
    batch_size : int
        Texts per forward pass; texts are batched by token length, so padding stays small.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.

    Returns
    -------
    numpy.ndarray
        float32, shape (len(texts), hidden), in input order. A vector does not depend on
        which other texts share its batch or on the padding side.
    """
    import torch

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    vectors: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [int(i) for i in order[start : start + batch_size]]
            encoded = tokenizer([texts[i] for i in batch], padding=True, return_tensors="pt").to(device)
            mask = encoded["attention_mask"]
            inputs = dict(encoded)
            if takes_positions:
                # Count positions from each text's first token, so left padding shifts nothing.
                inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden = model(**inputs, output_hidden_states=True).hidden_states[layer].float()
            pooled = _pool(hidden, mask, pooling).cpu().numpy()  # one copy (and wait) per batch, not per row
            for row, index in enumerate(batch):
                vectors[index] = pooled[row]
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
    if not texts:
        return np.zeros((0, _hidden_size(model)), dtype=np.float32)
    return np.stack(vectors).astype(np.float32, copy=False)


def _pool(hidden, mask, pooling: str):
    import torch

    keep = mask.bool().unsqueeze(-1)
    if pooling == "mean":
        # where, not multiply: a fully masked padding row may hold NaN.
        summed = torch.where(keep, hidden, torch.zeros_like(hidden)).sum(1)
        return summed / keep.sum(1).clamp(min=1)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).amax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _hidden_size(model) -> int:
    config = model.config
    config = getattr(config, "text_config", None) or config
    return int(config.hidden_size)


# --- prompts ----------------------------------------------------------------------------


def collect_prompts(registry, store=None, langs: Iterable[str] = ("ja", "en")) -> list[Prompt]:
    """List every prompt the model will need vectors for.

    Parameters
    ----------
    registry : Registry
    store : Store, optional
        Its train and val records add their ``prompt_ja``/``prompt_en`` texts, each distinct
        text once.
    langs : iterable of {"ja", "en"}

    Returns
    -------
    list of Prompt
        Per language: the single-finding label prompts in registry order, then each superset
        class prompt, then the distinct report prompts in order of first appearance.
    """
    langs = tuple(langs)
    prompts: list[Prompt] = []
    for lang in langs:
        for finding in registry.findings:
            prompts.append(Prompt(registry.prompt([finding.id], lang), "label", lang, (finding.id,), finding.id))
        for test, classes in registry.supersets.items():
            for cls in classes:
                text = registry.superset_prompt(test, cls.id, lang)
                prompts.append(Prompt(text, "superset", lang, (), f"{test}/{cls.id}"))
    if store is not None:
        prompts += _store_prompts(registry, store, langs)
    return prompts


def _store_prompts(registry, store, langs: tuple[str, ...]) -> list[Prompt]:
    ids = registry.ids()
    seen: set[tuple[str, str]] = set()
    prompts: list[Prompt] = []
    for split in ("train", "val"):
        for shard in store.shards(split, with_signal=False):
            for row in range(len(shard)):
                for lang in langs:
                    text = getattr(shard, f"prompt_{lang}")[row]
                    if not text or (lang, text) in seen:
                        continue
                    seen.add((lang, text))
                    finding_ids = tuple(ids[i] for i in np.flatnonzero(shard.findings[row]))
                    prompts.append(Prompt(text, "report", lang, finding_ids, ""))
    return prompts


# --- cache ------------------------------------------------------------------------------


def _cache_metadata(model_path: Path, fingerprint: str, pooling: str, layer: int, dtype: str,
                    registry, hidden: int) -> dict:
    return {
        "model_path": str(model_path),
        "model_fingerprint": fingerprint,
        "pooling": pooling,
        "layer": layer,
        "dtype": dtype,
        "templates": {lang: asdict(t) for lang, t in registry.templates.items()},
        "registry_version": registry.version,
        "registry_hash": registry.hash,
        "hidden_size": hidden,
        "ecgtool_version": __version__,
    }


_MUST_MATCH = ("model_fingerprint", "pooling", "layer", "registry_hash")


def _check_compatible(cache_dir: Path, old: dict, wanted: dict) -> None:
    for key in _MUST_MATCH:
        if old.get(key) != wanted[key]:
            raise TextModelError(
                f"{cache_dir}: this cache was made with {key} {old.get(key)!r} "
                f"(model {old.get('model_path')}), not {wanted[key]!r}; choose another --out"
            )


@writes_output("cache_dir", is_directory=True)
def embed_prompts(
    model_path: str | Path,
    prompts: Sequence[Prompt],
    cache_dir: str | Path,
    pooling: str = "mean",
    layer: int = -1,
    batch_size: int = 16,
    device: str = "cpu",
    registry=None,
    progress: ProgressCallback | None = None,
) -> CacheResult:
    """Embed ``prompts`` into the cache at ``cache_dir``, re-using rows already there, holding
    the cache's lock (one process writes a cache at a time).

    Parameters
    ----------
    model_path : path
        Hugging Face folder or ``.gguf`` file (see :func:`load_text_model`).
    prompts : sequence of Prompt
        Usually from :func:`collect_prompts`. The cache keeps earlier rows too.
    cache_dir : path
        Created if needed.
    registry : Registry, optional
        Recorded in the metadata (default: the packaged registry).

    Returns
    -------
    CacheResult

    Raises
    ------
    TextModelError
        If the cache was made with another model, pooling, layer or registry.
    """
    import torch

    from ecgtool.registry import load_registry

    started = time.perf_counter()
    registry = registry or load_registry()
    model_path, cache_dir = Path(model_path), Path(cache_dir)
    if pooling not in POOLINGS:
        raise TextModelError(f"{model_path}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if not prompts:
        raise TextModelError(f"{cache_dir}: no prompts to embed")
    fingerprint = model_fingerprint(model_path)
    wanted = {"model_fingerprint": fingerprint, "pooling": pooling, "layer": layer, "registry_hash": registry.hash}
    old_prompts: list[Prompt] = []
    old_vectors = None
    old_meta: dict = {}
    if (cache_dir / METADATA).is_file():
        old_meta, old_prompts, old_vectors = read_cache(cache_dir)
        _check_compatible(cache_dir, old_meta, wanted)
    unique = _unique(prompts)
    known = {p.text for p in old_prompts}
    rows = {(p.text, p.kind, p.lang, p.key) for p in old_prompts}
    added = [p for p in unique if (p.text, p.kind, p.lang, p.key) not in rows]
    new_texts = list(dict.fromkeys(p.text for p in added if p.text not in known))
    cached = sum(p.text in known for p in unique)
    if not added and old_vectors is not None:
        return CacheResult(cache_dir, len(old_prompts), cached, 0, time.perf_counter() - started)

    by_text = {} if old_vectors is None else {p.text: v for p, v in zip(old_prompts, old_vectors)}
    dtype = old_meta["dtype"] if old_vectors is not None else None
    if new_texts or old_vectors is None:
        model, tokenizer = load_text_model(model_path, device)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        new_vectors = embed_texts(model, tokenizer, new_texts, pooling, layer, batch_size, progress)
        by_text.update(zip(new_texts, new_vectors))
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    all_prompts = old_prompts + added
    vectors = np.stack([by_text[p.text] for p in all_prompts]).astype(np.float32)
    metadata = _cache_metadata(model_path.resolve(), fingerprint, pooling, layer, dtype, registry, vectors.shape[1])
    write_cache(cache_dir, metadata, all_prompts, vectors)
    return CacheResult(cache_dir, len(all_prompts), cached, len(new_texts), time.perf_counter() - started)


def _unique(prompts: Iterable[Prompt]) -> list[Prompt]:
    return list(dict.fromkeys(prompts))

