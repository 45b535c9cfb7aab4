"""The model bundle: what ``predict`` and ``bench`` load, with no language model and no GPU.

A bundle is one directory::

    bundle.json          format version, model shapes, temperature, registry version and hash,
                         label order, superset classes, input contract (canonical form, language
                         model id/fingerprint/pooling/layer), training summary
    model.safetensors    ECG encoder and ECG projection (float16 by default)
    text.safetensors     projected, L2-normalised prompt vectors: "label/ja", "label/en"
                         (98 × d, registry order) and "superset/<test>/<lang>" (classes × d)
    text_projection.safetensors
                         the text projection (language-model vector → shared space), for free-text
                         queries (``ecgtool search --text``); absent from bundles exported before it
    calibration-<sha12>.json
                         per-finding probability of presence and operating point
                         (``ecgtool.calibration_file``), when the bundle was calibrated

``resolve_bundle`` loads the bundle a command names (default: the one shipped with ecgtool), and
``canonical_options`` says how a record must be brought to the canonical form the bundle expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ecgtool import __version__
from ecgtool.calibration_file import BundleCalibration, load_calibration
from ecgtool.checkpoint_file import load_checkpoint
from ecgtool.errors import EcgToolError
from ecgtool.files import file_sha256, write_json_atomic, written_whole
from ecgtool.output_lock import writes_output
from ecgtool.model import EcgTextModel, ModelConfig, ResNet1d, input_filters
from ecgtool.registry import LANGUAGES, Registry, load_registry
from ecgtool.signal import CANONICAL_FORM_VERSION, LEADS, N_SAMPLES, SAMPLING_RATE, CanonicalOptions, QualityThresholds
from ecgtool.store import Store
from ecgtool.text_cache import TextCache, load_text_cache

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "models" / "default"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
MODEL_WEIGHTS = "model.safetensors"
TEXT_VECTORS = "text.safetensors"
TEXT_PROJECTION = "text_projection.safetensors"


class BundleError(EcgToolError):
    """A bundle that cannot be written or used; the message names the path."""


@writes_output("out_dir", is_directory=True)
def export_bundle(checkpoint: str | Path, text_cache: str | Path, out_dir: str | Path,
                  registry: Registry | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write a bundle from a training checkpoint and the text cache it was trained with.

    The label and superset prompts of both languages are projected once here, so that loading
    the bundle needs neither the language model nor the cache.
    """
    registry = registry or load_registry()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    payload = load_checkpoint(checkpoint)
    metadata = payload["metadata"]
    cache = load_text_cache(text_cache)
    if cache.metadata.get("model_fingerprint") != metadata.get("text_cache_fingerprint"):
        raise BundleError(f"{text_cache}: made with another language model than {checkpoint} was trained with")
    if metadata["registry"]["hash"] != registry.hash:
        raise BundleError(f"{checkpoint}: trained with registry {metadata['registry']['hash']}, installed is {registry.hash}")
    config = ModelConfig.from_dict(metadata["model"])
    if config.finding_head:
        raise BundleError(f"{checkpoint}: a supervised baseline (finding head, no text alignment) is not a bundle; "
                          "score it with scripts/bench-supervised.py")
    model = EcgTextModel(config)
    # A run with --ema-decay exports the moving average of its weights, as it was validated.
    model.load_checkpoint_state(payload.get("ema") or payload["model"])
    model.eval()
    text = {}
    langs = [lang for lang in LANGUAGES if cache.row_of(registry.prompt([registry.findings[0].id], lang), lang) is not None]
    if not langs:
        raise BundleError(f"{text_cache}: holds no label prompts; run embed-labels")
    with torch.no_grad():
        for lang in langs:
            text[f"label/{lang}"] = _project(model, cache, cache.label_rows(registry, lang))
            for test, classes in registry.supersets.items():
                rows = [_row(cache, registry.superset_prompt(test, c.id, lang), lang) for c in classes]
                text[f"superset/{test}/{lang}"] = _project(model, cache, rows)
    weights = {f"ecg_encoder.{k}": v for k, v in model.ecg_encoder.state_dict().items()}
    weights.update({f"ecg_projection.{k}": v for k, v in model.ecg_projection.state_dict().items()})
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    text_projection = {f"text_projection.{k}": v.to(dtype) for k, v in model.text_projection.state_dict().items()}
    description = {
        "format": "ecgtool-bundle",
        "format_version": BUNDLE_FORMAT_VERSION,
        "created_by": f"ecgtool {__version__}",
        "model": metadata["model"],
        "logit_scale": model.clamped_logit_scale().item(),
        "weights_dtype": str(dtype).removeprefix("torch."),
        "registry": {"version": registry.version, "hash": registry.hash},
        "findings": list(registry.ids()),
        "languages": langs,
        "supersets": {test: [c.id for c in classes] for test, classes in registry.supersets.items()},
        "input_contract": metadata["input_contract"],
        "training": {
            "recipe": metadata["recipe"],
            "epochs_done": payload["state"]["epoch"],
            "steps_done": payload["state"]["global_step"],
            "history": payload["state"]["history"],
            "store": metadata.get("store"),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_safetensors(weights, out_dir / MODEL_WEIGHTS)
    _save_safetensors({k: v.contiguous() for k, v in text.items()}, out_dir / TEXT_VECTORS)
    _save_safetensors(text_projection, out_dir / TEXT_PROJECTION)
    # What load_bundle checks the files against: their bytes and every tensor's shape.
    description["files"] = {
        name: {"sha256": file_sha256(out_dir / name), "tensors": {k: list(v.shape) for k, v in tensors.items()}}
        for name, tensors in ((MODEL_WEIGHTS, weights), (TEXT_VECTORS, text), (TEXT_PROJECTION, text_projection))
    }
    write_json_atomic(out_dir / BUNDLE_JSON, description)
    for stale in out_dir.glob("calibration-*.json"):  # fitted for the weights this export replaced
        stale.unlink()
    return out_dir


def _row(cache: TextCache, text: str, lang: str) -> int:
    row = cache.row_of(text, lang)
    if row is None:
        raise BundleError(f"{cache.directory}: no vector for {text!r}; run embed-labels with --lang both")
    return row


def _project(model: EcgTextModel, cache: TextCache, rows: list[int]) -> torch.Tensor:
    return model.encode_text(torch.from_numpy(cache.vectors[rows])).float()


def _save_safetensors(tensors: dict, path: Path) -> None:
    with written_whole(path) as tmp:
        save_file(tensors, str(tmp))


@dataclass
class Bundle:
    """A loaded bundle: the ECG side of the model and the projected prompt vectors."""

    directory: Path
    description: dict
    encoder: ResNet1d
    projection: torch.nn.Linear
    text: dict[str, torch.Tensor]
    # Per-finding probability of presence and operating point (ecgtool.calibration_file);
    # None for a bundle that was never calibrated.
    calibration: BundleCalibration | None = None
    # Language-model vector -> shared space (free-text queries); None for bundles exported before it.
    text_projection: torch.nn.Linear | None = None

    @property
    def contract(self) -> dict:
        return self.description["input_contract"]

    @property
    def logit_scale(self) -> float:
        return self.description["logit_scale"]

    @property
    def findings(self) -> list[str]:
        return self.description["findings"]

    def to(self, device: torch.device) -> "Bundle":
        self.encoder.to(device)
        self.projection.to(device)
        self.text = {k: v.to(device) for k, v in self.text.items()}
        if self.text_projection is not None:
            self.text_projection.to(device)
        return self

    @torch.no_grad()
    def embed(self, signals: torch.Tensor) -> torch.Tensor:
        """``(B, 12, 5000)`` canonical mV → unit vectors ``(B, d)``."""
        return torch.nn.functional.normalize(self.projection(self.encoder(signals)), dim=-1)


def load_bundle(directory: str | Path, registry: Registry | None = None, with_calibration: bool = True) -> Bundle:
    """Load a bundle, refusing one made for another registry or canonical form (and, unless
    ``with_calibration`` is False, one whose calibration cannot be trusted: what ``calibrate``
    loads, since it replaces the calibration)."""
    directory = Path(directory)
    if not (directory / BUNDLE_JSON).is_file():
        raise BundleError(f"{directory}: not an ecgtool model bundle (no {BUNDLE_JSON})")
    description = json.loads((directory / BUNDLE_JSON).read_text(encoding="utf-8"))
    if description.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{directory}: bundle format {description.get('format_version')} is not supported")
    registry = registry or load_registry()
    if description["registry"]["hash"] != registry.hash or description["findings"] != list(registry.ids()):
        raise BundleError(
            f"{directory}: made for registry {description['registry']['hash']} "
            f"(v{description['registry']['version']}), installed registry is {registry.hash} (v{registry.version})"
        )
    if description["input_contract"].get("canonical_form_version") != CANONICAL_FORM_VERSION:
        raise BundleError(f"{directory}: expects canonical form {description['input_contract'].get('canonical_form_version')}, this ecgtool makes {CANONICAL_FORM_VERSION}")
    config = ModelConfig.from_dict(description["model"])
    check_input_contract(directory, description["input_contract"], config)
    encoder = ResNet1d(config)
    projection = torch.nn.Linear(encoder.out_features, config.embed_dim, bias=False)
    weights = _load_checked(directory, MODEL_WEIGHTS, description)
    try:
        encoder.load_state_dict({k.removeprefix("ecg_encoder."): v.float() for k, v in weights.items() if k.startswith("ecg_encoder.")})
        projection.load_state_dict({k.removeprefix("ecg_projection."): v.float() for k, v in weights.items() if k.startswith("ecg_projection.")})
    except RuntimeError as error:
        raise BundleError(f"{directory / MODEL_WEIGHTS}: does not fit the model bundle.json describes "
                          f"({str(error).splitlines()[0][:160]})") from None
    encoder.eval()
    projection.eval()
    text = {k: v.float() for k, v in _load_checked(directory, TEXT_VECTORS, description).items()}
    for key, vectors in text.items():
        expected = len(description["findings"]) if key.startswith("label/") else len(description["supersets"].get(key.split("/")[1], []))
        if vectors.ndim != 2 or vectors.shape != (expected, config.embed_dim) or not torch.isfinite(vectors).all():
            raise BundleError(f"{directory / TEXT_VECTORS}: {key} holds {tuple(vectors.shape)} vectors, "
                              f"expected {expected} finite vectors of {config.embed_dim}")
    entry = description.get("calibration") if with_calibration else None
    calibration = (load_calibration(directory, entry, description["findings"], weight_checksums(directory, description))
                   if entry else None)
    return Bundle(directory, description, encoder, projection, text, calibration=calibration,
                  text_projection=_load_text_projection(directory, description, config))


def resolve_bundle(path: str | Path | None, registry: Registry | None = None) -> Bundle:
    """The bundle at ``path``, or the one shipped with ecgtool when ``path`` is None."""
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    if path == DEFAULT_BUNDLE and not (path / BUNDLE_JSON).exists():
        raise BundleError(f"{path}: this installation ships no default model; pass --model BUNDLE")
    return load_bundle(path, registry)


def check_input_contract(directory: Path, contract: dict, config: ModelConfig) -> None:
    """Refuse a bundle whose declared input contract is not what prepares its input: the canonical
    form this ecgtool makes (rate, length, lead order, units) and the filters its model applies.
    A contract is enforced, not carried: a bundle edited to say 250 Hz, µV or another lead order
    would otherwise read every ECG as if nothing had changed."""
    where = f"{directory / BUNDLE_JSON}: input_contract"
    expected = {"sampling_rate_hz": SAMPLING_RATE, "n_samples": N_SAMPLES, "lead_order": list(LEADS), "units": "mV"}
    for key, value in expected.items():
        if contract.get(key) != value:
            raise BundleError(f"{where}.{key} is {contract.get(key)!r}, but ecgtool prepares every input as {value!r}: "
                              "this bundle's model expects an input ecgtool does not make")
    declared = list(contract.get("filters", []))
    applied = input_filters(config, SAMPLING_RATE)
    if declared != applied:
        shown = lambda filters: ", ".join(f"{f.get('type')} {f.get('cutoff_hz')} Hz" for f in filters) or "none"
        raise BundleError(f"{where}.filters declares {shown(declared)}, but its model applies {shown(applied)} "
                          "(and predict applies nothing else): refused rather than read with filters it does not say")


def canonical_options(bundle: Bundle) -> CanonicalOptions:
    """The canonical transform options the bundle's training data was made with."""
    contract = bundle.contract
    quality = QualityThresholds(**contract["quality"]) if "quality" in contract else QualityThresholds()
    return CanonicalOptions(
        min_seconds=contract.get("min_seconds", 5.0),
        derive_limb_leads=contract.get("derive_limb_leads", False),
        quality=quality,
    )


def check_store_matches(bundle: Bundle, store: Store) -> None:
    """Refuse a store ingested with another registry than the bundle was trained with: its
    finding columns would not be the bundle's."""
    if store.registry_hash != bundle.description["registry"]["hash"]:
        raise BundleError(
            f"{store.directory}: the store was built with registry {store.registry_hash}, "
            f"the bundle {bundle.directory} with {bundle.description['registry']['hash']}: re-ingest or use a matching bundle"
        )


def record_calibration(bundle_dir: Path, file_name: str, sha256: str, entry: dict) -> None:
    """Point ``bundle.json`` at a calibration file written beside it (in one rename), then drop
    the calibration file it named before."""
    description = json.loads((bundle_dir / BUNDLE_JSON).read_text(encoding="utf-8"))
    previous = (description.get("calibration") or {}).get("file")
    description["calibration"] = {"file": file_name, "sha256": sha256, **entry}
    write_json_atomic(bundle_dir / BUNDLE_JSON, description)
    if previous and previous != file_name and (bundle_dir / previous).exists():
        (bundle_dir / previous).unlink()


def _load_text_projection(directory: Path, description: dict, config: ModelConfig) -> torch.nn.Linear | None:
    if TEXT_PROJECTION not in description.get("files", {}):
        return None
    weights = _load_checked(directory, TEXT_PROJECTION, description)
    projection = torch.nn.Linear(config.text_dim, config.embed_dim, bias=False)
    try:
        projection.load_state_dict({k.removeprefix("text_projection."): v.float() for k, v in weights.items()})
    except RuntimeError as error:
        raise BundleError(f"{directory / TEXT_PROJECTION}: does not fit the model bundle.json describes "
                          f"({str(error).splitlines()[0][:160]})") from None
    return projection.eval()


FINGERPRINTED = (MODEL_WEIGHTS, TEXT_VECTORS)


def weight_checksums(directory: str | Path, description: dict) -> dict[str, str]:
    """SHA-256 of the ECG weights and the label vectors, the files whose bytes decide every score
    (what embeddings and calibrations are tied to): as ``bundle.json`` records them, computed from
    the files for bundles exported before that."""
    recorded = description.get("files", {})
    return {name: recorded[name]["sha256"] if name in recorded else file_sha256(Path(directory) / name)
            for name in FINGERPRINTED}


def _load_checked(directory: Path, name: str, description: dict) -> dict:
    """A bundle's safetensors file, checked against the checksum and shapes bundle.json records
    (bundles exported before those were recorded are loaded as they are)."""
    path = directory / name
    recorded = description.get("files", {}).get(name)
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    if recorded is not None and file_sha256(path) != recorded["sha256"]:
        raise BundleError(f"{path}: does not match the checksum in {BUNDLE_JSON} (damaged or replaced)")
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for a cut or foreign file
        raise BundleError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0][:120]})") from None
    if recorded is not None:
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != recorded["tensors"]:
            raise BundleError(f"{path}: its tensors differ from those {BUNDLE_JSON} lists")
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise BundleError(f"{path}: {key} holds NaN or infinite values")
    return tensors


# The reading: what predict ranks, calibrates and calls with, whatever the output language.
READING_SCORE = "mean over the bundle's languages of the cosine similarity of the ECG embedding to the label prompt"


def reading_scores(bundle: Bundle, embeddings: torch.Tensor, superset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The language-independent score of every finding (or superset class): the mean over the
    bundle's languages of the cosine similarity to its prompt in that language, and its softmax
    at the trained temperature, ``(B, n_classes)`` each. One ECG gets one reading; the output
    language changes the words only (docs/predict.md)."""
    keys = [f"label/{lang}" if superset is None else f"superset/{superset}/{lang}" for lang in bundle.description["languages"]]
    missing = [key for key in keys if key not in bundle.text]
    if missing:
        raise BundleError(f"{bundle.directory}: no {missing[0]} prompt vectors")
    similarity = embeddings @ torch.stack([bundle.text[key] for key in keys]).mean(dim=0).T
    probabilities = torch.softmax(bundle.logit_scale * similarity, dim=-1)
    return similarity.cpu().numpy(), probabilities.cpu().numpy()


def bundle_scores(bundle: Bundle, embeddings: torch.Tensor, lang: str, superset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities to the label (or one superset test's class) prompts, and the softmax
    probabilities at the trained temperature: both ``(B, n_classes)``."""
    key = f"label/{lang}" if superset is None else f"superset/{superset}/{lang}"
    if key not in bundle.text:
        raise BundleError(f"{bundle.directory}: no {key} prompt vectors")
    similarity = embeddings @ bundle.text[key].T
    probabilities = torch.softmax(bundle.logit_scale * similarity, dim=-1)
    return similarity.cpu().numpy(), probabilities.cpu().numpy()
