"""Exact search speed of ``ecgtool search`` over synthetic embeddings, beside a plain NumPy loop.

``--records`` random unit vectors of ``--dim`` (float16, as the embedding file holds them) and
random unit queries; both ways score every record and return the top 20, in the same run:

* baseline: for each query, the whole matrix cast to float32, one matrix-vector product and a
  full ``argsort`` (what one writes first in NumPy);
* ecgtool: ``ecgtool.search.similarities`` (chunked float16 products) + ``combine`` (the
  z-scores of the combination rule) + ``top_rows`` (partial sort), one query at a time, then
  ``--batch`` queries in one call, then a two-finding query (two parts combined);

and checks that both return the same top 20 (up to ties within float16 rounding).

Usage: python benchmarks/search.py [--records 1000000] [--dim 512] [--queries 10]
                                   [--baseline-queries 3] [--batch 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ecgtool.search import combine, similarities, top_rows

TOP = 20


def synthetic_vectors(n: int, dim: int, seed: int = 0, block: int = 65536) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, block):
        chunk = rng.standard_normal((min(block, n - start), dim), dtype=np.float32)
        out[start : start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def numpy_loop(vectors: np.ndarray, queries: np.ndarray) -> list[np.ndarray]:
    hits = []
    for query in queries:
        scores = vectors.astype(np.float32) @ query
        hits.append(np.argsort(-scores, kind="stable")[:TOP])
    return hits


def ecgtool_search(vectors: np.ndarray, queries: torch.Tensor, device: torch.device) -> list[np.ndarray]:
    scores = similarities(vectors, queries, device)
    return [top_rows(combine(scores[:, [j]]), None, TOP) for j in range(scores.shape[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--baseline-queries", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    vectors = synthetic_vectors(args.records, args.dim)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((max(args.queries, args.batch, args.baseline_queries), args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"{args.records:,} float16 embeddings of {args.dim} ({vectors.nbytes / 2**30:.2f} GiB) made in "
          f"{time.perf_counter() - started:.1f} s; device {device}, {torch.get_num_threads()} torch threads; top {TOP}")

    started = time.perf_counter()
    baseline_hits = numpy_loop(vectors, queries[: args.baseline_queries])
    baseline = (time.perf_counter() - started) / args.baseline_queries
    print(f"baseline  NumPy loop (cast, matvec, argsort)  : {baseline:7.3f} s/query  {1 / baseline:8.2f} queries/s")

    ecgtool_search(vectors, torch.from_numpy(queries[:1]), device)  # warm-up (allocations, CUDA context)
    started = time.perf_counter()
    ours_hits = [ecgtool_search(vectors, torch.from_numpy(queries[i : i + 1]), device)[0] for i in range(args.queries)]
    single = (time.perf_counter() - started) / args.queries
    print(f"ecgtool   one query at a time                 : {single:7.3f} s/query  {1 / single:8.2f} queries/s "
          f"({baseline / single:.1f}x baseline)")

    started = time.perf_counter()
    ecgtool_search(vectors, torch.from_numpy(queries[: args.batch]), device)
    batched = (time.perf_counter() - started) / args.batch
    print(f"ecgtool   {args.batch} queries in one call              : {batched:7.3f} s/query  {1 / batched:8.2f} queries/s "
          f"({baseline / batched:.1f}x baseline)")

    started = time.perf_counter()
    pair = similarities(vectors, torch.from_numpy(queries[:2]), device)
    top_rows(combine(pair), None, TOP)
    print(f"ecgtool   two-finding query (2 parts combined): {time.perf_counter() - started:7.3f} s/query")

    agree = np.mean([len(set(a) & set(b)) / TOP for a, b in zip(baseline_hits, ours_hits)])
    print(f"same top {TOP} as the baseline: {100 * agree:.1f} % of hits (the rest: ties within float16 rounding)")
    goal = 0.5
    print(f"goal: one query over {args.records:,} records in under {goal} s: {'met' if single < goal else 'NOT met'} "
          f"({single:.3f} s)")


if __name__ == "__main__":
    main()
