"""Search a store's ECGs by findings, by free text or by an example ECG (``ecgtool search``).

Every record of the store has a unit vector in the bundle's shared space (``ecgtool.embeddings``).
A query is one or more *parts*, each a unit vector in that space:

* ``--finding``: the bundle's label vector of the finding (the mean over the bundle's languages),
* ``--text``: free text through the bundle's frozen language model, pooling and text projection,
* ``--like`` / ``--like-id``: the embedding of an example ECG.

Each part scores every record by cosine similarity. Parts are combined by the rule *all must
score high*: a part's cosines are standardised over the whole store (z-score: standard
deviations above the store's mean similarity to that part), and a record's score is its lowest
z-score over the parts. With one part the ranking is the cosine's. Filters (split, source,
findings known present or absent in the store's labels, the query's own patient) only remove
records; they do not change the standardisation.

Search is exact: chunked matrix products over the float16 vectors (CPU or CUDA).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from ecgtool.bundle import Bundle, canonical_options, check_store_matches
from ecgtool.embeddings import default_embeddings_path, read_embeddings
from ecgtool.errors import EcgToolError
from ecgtool.registry import BOTH, Registry, parse_language
from ecgtool.files import write_text_atomic
from ecgtool.io.canonical import load_canonical
from ecgtool.store import Store

CHUNK_ROWS = 65536
# Up to this many query vectors, CPU search runs one float16 matrix-vector product per query
# (memory-bound, ~0.2 s per million records here); beyond, chunks are cast to float32 once and
# multiplied by all queries together (CPU float16 matrix-matrix products are slow).
FEW_QUERIES = 8


class SearchError(EcgToolError):
    """A search that cannot run: an unknown finding, a store not embedded, a foreign LM."""


# --- the searched records ----------------------------------------------------------------------

@dataclass
class SearchSpace:
    """The store's records, aligned row by row with their embeddings."""

    store: Store
    embeddings_path: Path
    record_ids: list[str]
    patient_ids: list[str]
    splits: list[str]
    sources: list[str]
    findings: np.ndarray            # (n, 98) uint8, the store's labels
    locations: list[tuple[Path, int]]  # shard file and row of each record
    vectors: np.ndarray             # (n, d) float16
    _row_of: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.record_ids)

    def row_of(self, record_id: str) -> int | None:
        if not self._row_of:
            self._row_of = {record_id: row for row, record_id in enumerate(self.record_ids)}
        return self._row_of.get(record_id)

    def signal(self, row: int) -> np.ndarray:
        path, index = self.locations[row]
        with h5py.File(path, "r") as shard:
            return shard["signal"][index].astype(np.float32)


def open_search_space(store: Store, bundle: Bundle, embeddings_path: str | Path | None = None) -> SearchSpace:
    """The store's records with their vectors. Every shard is verified against the store's
    manifest (``Store.verify``); a store whose records are not all embedded (with this bundle),
    or whose vectors were computed from other samples than the store now holds (a shard
    re-ingested since), is refused; vectors of records the store does not hold are ignored."""
    check_store_matches(bundle, store)
    path = Path(embeddings_path) if embeddings_path is not None else default_embeddings_path(store.directory, bundle)
    if not path.is_file():
        raise SearchError(f"{path}: no embeddings of this store with bundle {bundle.directory}; "
                          f"run `ecgtool embed --store {store.directory}` with the same --model first")
    embeddings = read_embeddings(path, bundle)
    row_in_file = {record_id: row for row, record_id in enumerate(embeddings.record_ids)}
    record_ids, patient_ids, splits, sources, findings, locations, rows = [], [], [], [], [], [], []
    missing = stale = 0
    for shard, content in zip(store.manifest["shards"], store.shards(with_signal=False)):
        shard_path = store.directory / shard["file"]
        found = [row_in_file.get(record_id) for record_id in content.record_id]
        present = [index for index, row in enumerate(found) if row is not None]
        missing += len(found) - len(present)
        shard_sha256 = store.shard_sha256(shard["file"]).encode("ascii")
        stale += sum(embeddings.shard_sha256[found[index]] != shard_sha256 for index in present)
        rows.extend(found[index] for index in present)
        record_ids.extend(content.record_id[index] for index in present)
        patient_ids.extend(content.patient_id[index] for index in present)
        sources.extend(content.source[index] for index in present)
        splits.extend([shard["split"]] * len(present))
        findings.append(content.findings[present])
        locations.extend((shard_path, index) for index in present)
    if missing:
        raise SearchError(f"{path}: lacks the embeddings of {missing} records of {store.directory}; "
                          f"run `ecgtool embed --store {store.directory}` again (it adds only the new records)")
    if stale:
        raise SearchError(f"{path}: the vectors of {stale} records were not computed from the samples "
                          f"{store.directory} now holds (re-ingested since, or embedded elsewhere); "
                          f"run `ecgtool embed --store {store.directory}` again (it re-embeds them)")
    if not record_ids:
        raise SearchError(f"{store.directory}: the store holds no records")
    return SearchSpace(store, path, record_ids, patient_ids, splits, sources, np.concatenate(findings), locations,
                       embeddings.vectors[np.asarray(rows)])


# --- query parts -------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueryPart:
    """One vector of a query: ``kind`` finding, text, like (a record file) or like-id (a store
    record); ``label`` says which."""

    kind: str
    label: str
    vector: torch.Tensor  # (d,) float32 unit vector
    record_id: str | None = None  # the example record (like)


def resolve_finding(registry: Registry, term: str):
    finding = registry.lookup_term(term)
    if finding is None:
        raise SearchError(f"--finding {term}: not a finding id, name or synonym of the registry "
                          f"(v{registry.version}; `ecgtool labels --lang both` lists them)")
    return finding


def query_languages(bundle: Bundle, lang: str) -> tuple[str, ...]:
    available = tuple(bundle.description.get("languages", ("ja",)))
    if lang == BOTH:
        return available
    if parse_language(lang) not in available:
        raise SearchError(f"--lang {lang}: the bundle {bundle.directory} has label vectors in {', '.join(available)} only")
    return (lang,)


def finding_parts(bundle: Bundle, registry: Registry, terms: Sequence[str], lang: str = "both") -> list[QueryPart]:
    """A part per finding: its label vector, averaged over the languages and re-normalised
    (ranking by the mean of the cosines to each language's vector)."""
    langs = query_languages(bundle, lang)
    parts = []
    for term in terms:
        finding = resolve_finding(registry, term)
        index = bundle.findings.index(finding.id)
        vector = torch.stack([bundle.text[f"label/{l}"][index].float().cpu() for l in langs]).mean(0)
        parts.append(QueryPart("finding", finding.id, torch.nn.functional.normalize(vector, dim=0)))
    return parts


def text_parts(bundle: Bundle, lm_path: str | Path, texts: Sequence[str], device: str = "cpu") -> list[QueryPart]:
    """A part per free text, through the language model, pooling, layer and text projection the
    bundle was trained with; an LM with another fingerprint is refused."""
    from ecgtool.text import embed_texts, load_text_model, model_fingerprint

    if bundle.text_projection is None:
        raise SearchError(f"{bundle.directory}: this bundle predates free-text search (no text_projection.safetensors); "
                          "re-export it with `ecgtool export` to use --text")
    contract = bundle.contract.get("language_model") or {}
    expected = contract.get("model_fingerprint")
    found = model_fingerprint(lm_path)
    if found != expected:
        raise SearchError(f"{lm_path}: language model fingerprint {found}, the bundle was trained with {expected} "
                          f"({Path(str(contract.get('model_path', '?'))).name}); pass that model to --lm")
    model, tokenizer = load_text_model(lm_path, device=device)
    vectors = embed_texts(model, tokenizer, list(texts), pooling=contract.get("pooling", "mean"), layer=contract.get("layer", -1))
    projection = bundle.text_projection
    if vectors.shape[1] != projection.in_features:
        raise SearchError(f"{lm_path}: gives {vectors.shape[1]}-dimensional vectors, the bundle's text projection takes {projection.in_features}")
    weight = projection.weight.detach().float().cpu()
    projected = torch.nn.functional.normalize(torch.from_numpy(vectors) @ weight.T, dim=-1)
    return [QueryPart("text", text, projected[i]) for i, text in enumerate(texts)]


def like_file_parts(bundle: Bundle, paths: Sequence[str | Path], device: torch.device = torch.device("cpu")) -> list[QueryPart]:
    """A part per record file (any format ``ingest`` reads), embedded by the bundle."""
    parts = []
    for path in paths:
        record_id, signal = load_canonical(path, canonical_options(bundle))
        vector = bundle.embed(torch.from_numpy(signal[None]).to(device, torch.float32))[0].float().cpu()
        parts.append(QueryPart("like", str(path), vector, record_id))
    return parts


def like_id_parts(space: SearchSpace, record_ids: Sequence[str]) -> list[QueryPart]:
    parts = []
    for record_id in record_ids:
        row = space.row_of(record_id)
        if row is None:
            raise SearchError(f"--like-id {record_id}: no such record in {space.store.directory}")
        vector = torch.nn.functional.normalize(torch.from_numpy(space.vectors[row].astype(np.float32)), dim=0)
        parts.append(QueryPart("like-id", record_id, vector, record_id))
    return parts


# --- scoring -----------------------------------------------------------------------------------

def similarities(vectors: np.ndarray, queries: torch.Tensor, device: torch.device = torch.device("cpu"),
                 chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Cosine similarities ``(n, p)`` float32 of ``n`` stored unit vectors (float16) to ``p`` unit
    query vectors, by chunked matrix products; exact up to float16 rounding (~5e-4 relative)."""
    n, p = len(vectors), int(queries.shape[0])
    out = np.empty((p, n), dtype=np.float32)
    if n == 0 or p == 0:
        return out.T
    source = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float16))
    if device.type == "cuda":
        q = queries.to(device, torch.float16)
        for start in range(0, n, chunk_rows):
            end = min(n, start + chunk_rows)
            block = source[start:end].to(device, non_blocking=True)
            out[:, start:end] = (q @ block.T).float().cpu().numpy()
    elif p <= FEW_QUERIES:
        q = queries.to("cpu", torch.float16)
        for start in range(0, n, chunk_rows):
            end = min(n, start + chunk_rows)
            for j in range(p):
                out[j, start:end] = torch.mv(source[start:end], q[j]).numpy()
    else:
        q = queries.to("cpu", torch.float32)
        buffer = torch.empty((min(n, chunk_rows), source.shape[1]), dtype=torch.float32)
        for start in range(0, n, chunk_rows):
            end = min(n, start + chunk_rows)
            block = buffer[: end - start]
            block.copy_(source[start:end])
            out[:, start:end] = (q @ block.T).numpy()
    return out.T


def combine(cosines: np.ndarray) -> np.ndarray:
    """The *all must score high* rule: per part (column), the z-score of each record's cosine over
    all rows; a record's score is its lowest z-score. A part on which every row scores alike
    gives z = 0."""
    cosines = np.asarray(cosines, dtype=np.float64)
    if cosines.ndim != 2 or cosines.shape[1] == 0:
        raise SearchError("a query needs at least one part (--finding, --text, --like or --like-id)")
    mean = cosines.mean(axis=0)
    std = cosines.std(axis=0)
    z = np.where(std > 0, (cosines - mean) / np.where(std > 0, std, 1.0), 0.0)
    return z.min(axis=1)


def top_rows(scores: np.ndarray, mask: np.ndarray | None, k: int) -> np.ndarray:
    """Rows of the ``k`` highest scores among ``mask``, best first (ties: store order)."""
    candidates = np.flatnonzero(mask) if mask is not None else np.arange(len(scores))
    if k <= 0:
        return candidates[:0]
    if len(candidates) > k:
        picked = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = candidates[picked]
    return candidates[np.lexsort((candidates, -scores[candidates]))]


# --- filters -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    splits: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()       # substrings of the record's source path (any)
    present: tuple[str, ...] = ()       # finding ids the store's labels must hold (all)
    absent: tuple[str, ...] = ()        # finding ids a labelled record must not hold (all)
    exclude_patient: bool = False       # drop the example records' patients (like parts)


def filter_mask(space: SearchSpace, filters: Filters, registry: Registry, parts: Sequence[QueryPart] = ()) -> np.ndarray:
    """Rows that pass every filter. ``absent`` keeps only labelled records (known absent);
    ``--like-id`` examples themselves are always left out."""
    mask = np.ones(len(space), dtype=bool)
    if filters.splits:
        known = set(space.store.counts())
        for split in filters.splits:
            if split not in known:
                raise SearchError(f"--split {split}: {space.store.directory} has splits {', '.join(sorted(known))}")
        mask &= np.isin(np.asarray(space.splits), list(filters.splits))
    if filters.sources:
        mask &= np.array([any(s in source for s in filters.sources) for source in space.sources], dtype=bool)
    for finding_id in filters.present:
        mask &= space.findings[:, registry.index(finding_id)] > 0
    if filters.absent:
        mask &= space.findings.any(axis=1)
        for finding_id in filters.absent:
            mask &= space.findings[:, registry.index(finding_id)] == 0
    # A record file's patient is the store's when the store holds a record of that id.
    examples = [space.row_of(p.record_id) for p in parts if p.kind in ("like", "like-id")]
    examples = [row for row in examples if row is not None]
    for part in parts:
        if part.kind == "like-id":
            mask[space.row_of(part.record_id)] = False
    if filters.exclude_patient and examples:
        patients = {space.patient_ids[row] for row in examples}
        mask &= ~np.isin(np.asarray(space.patient_ids), list(patients))
    return mask


# --- search ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    rank: int
    record_id: str
    patient_id: str
    split: str
    source: str
    score: float
    cosines: tuple[float, ...]
    findings: tuple[str, ...]
    row: int


@dataclass
class SearchResult:
    parts: list[QueryPart]
    hits: list[Hit]
    searched: int   # records scored
    eligible: int   # records passing the filters


def search(space: SearchSpace, parts: Sequence[QueryPart], registry: Registry, filters: Filters = Filters(),
           top: int = 20, device: torch.device = torch.device("cpu")) -> SearchResult:
    """The ``top`` records of ``space`` for the query ``parts`` under ``filters``."""
    if not parts:
        raise SearchError("a query needs at least one part (--finding, --text, --like or --like-id)")
    queries = torch.stack([p.vector.float().cpu() for p in parts])
    cosines = similarities(space.vectors, queries, device)
    scores = combine(cosines)
    mask = filter_mask(space, filters, registry, parts)
    ids = registry.ids()
    hits = []
    for rank, row in enumerate(top_rows(scores, mask, top), start=1):
        stored = tuple(ids[i] for i in np.flatnonzero(space.findings[row]))
        hits.append(Hit(rank, space.record_ids[row], space.patient_ids[row], space.splits[row], space.sources[row],
                        float(scores[row]), tuple(float(c) for c in cosines[row]), stored, int(row)))
    return SearchResult(list(parts), hits, len(space), int(mask.sum()))


def finding_names(registry: Registry, finding_ids: Sequence[str], lang: str) -> list[str]:
    return [registry.finding(f).en if lang == "en" else registry.finding(f).ja for f in finding_ids]


def result_as_dict(result: SearchResult, registry: Registry, lang: str = "ja") -> dict:
    return {
        "query": [{"kind": p.kind, "what": p.label} for p in result.parts],
        "rule": "cosine per part; several parts: lowest z-score over the parts (all must score high)",
        "searched": result.searched,
        "eligible": result.eligible,
        "hits": [
            {"rank": h.rank, "record_id": h.record_id, "patient_id": h.patient_id, "split": h.split, "source": h.source,
             "score": round(h.score, 6), "cosines": [round(c, 6) for c in h.cosines],
             "findings": list(h.findings), "finding_names": finding_names(registry, h.findings, lang)}
            for h in result.hits
        ],
    }


def write_hits_csv(path: str | Path, result: SearchResult, registry: Registry, lang: str = "ja") -> Path:
    """The hits as CSV, one row per hit, written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    labels = [f"cosine_{p.kind}_{i + 1}" for i, p in enumerate(result.parts)]
    writer.writerow(["rank", "record_id", "patient_id", "split", "source", "score", *labels, "findings", "finding_names"])
    for h in result.hits:
        writer.writerow([h.rank, h.record_id, h.patient_id, h.split, h.source, f"{h.score:.6f}",
                         *(f"{c:.6f}" for c in h.cosines), ";".join(h.findings),
                         ";".join(finding_names(registry, h.findings, lang))])
    path = Path(path)
    write_text_atomic(path, buffer.getvalue())
    return path


def plot_hits(space: SearchSpace, result: SearchResult, directory: str | Path, registry: Registry, lang: str = "ja") -> list[Path]:
    """One PNG per hit (``<rank>-<record id>.png``): the stored canonical ECG and its labels."""
    from ecgtool.plot import plot_ecg

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for hit in result.hits:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in hit.record_id)
        lines = [f"score {hit.score:.3f}"] + finding_names(registry, hit.findings, lang)[:8]
        path = directory / f"{hit.rank:03d}-{name}.png"
        plot_ecg(space.signal(hit.row), path, f"#{hit.rank} {hit.record_id} ({hit.patient_id}) — 25 mm/s, 10 mm/mV", lines)
        written.append(path)
    return written
